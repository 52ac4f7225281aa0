"""``engine recon``: reconstruct an already pruned model (an ``engine prune`` output) locally.

Each submodel (one linear, one block, or K blocks) is fitted to the parent's activations on a
calibration set, one at a time; the parent is read one layer at a time from its directory.
The pruned directory must say what was pruned: ``masks.safetensors`` (sparse methods) or the
index map in ``prune_report.json`` (kept layers, hidden channels, heads, neurons). The output
is a new directory in the same layout with a ``recon`` section in its report; a killed run
resumes from the finished submodels (kept in ``.<out>.recon`` beside it).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.cli import BadInput
from data.paths import check_out_apart, check_swappable
from engine.pruning.recon_args import ReconArgs

RECON = ReconArgs()
"""Reconstruction defaults (the flags' defaults are its fields)."""

EPILOG = """examples:
  engine recon --model work/pruned/mag50 --parent work/smollm2-135m --calib work/text/shakes.txt --granularity block --out work/pruned/mag50-block
  engine recon --model work/pruned/width25 --parent work/smollm2-135m --calib SHARDS_DIR --granularity blocks:4 --samples 64 --eval SHARDS_DIR --out work/pruned/width25-b4
"""


@dataclass(frozen=True)
class ReconJob:
    """One ``engine recon`` invocation, validated."""

    model: Path
    """The pruned directory (``engine prune --out``)."""
    parent: str
    """The unpruned parent: its HF directory (or the preset it was built from)."""
    calib: str
    """Shard directory or text file for calibration."""
    out: Path
    granularity: str = RECON.granularity
    samples: int = 32
    """Calibration sequences (the calibration size is samples x seq_len)."""
    seq_len: int = 256
    steps: int = RECON.steps
    lr: float = RECON.lr
    batch_size: int = RECON.batch_size
    eval: str | None = None
    eval_samples: int = 16
    seed: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        ReconArgs(granularity=self.granularity, steps=self.steps, lr=self.lr, batch_size=self.batch_size)
        if self.samples < 1 or self.seq_len < 1:
            raise BadInput(f"calibration size {self.samples} x {self.seq_len}: need --samples >= 1 and --seq-len >= 1")
        if self.eval_samples < 1:
            raise BadInput(f"--eval-samples {self.eval_samples} must be >= 1")
        if not (self.model / "config.json").is_file():
            raise BadInput(f"--model {str(self.model)!r} is not a pruned model directory (no config.json)")
        check_out_apart(self.out, {"--model": self.model, "--parent": self.parent, "--calib": self.calib,
                                   "--eval": self.eval})
        check_swappable(self.out)
        if self.out.exists() and not self.force:
            raise BadInput(f"--out {str(self.out)!r} already exists; pass --force to replace it")

    @property
    def state_dir(self) -> Path:
        return self.out.parent / f".{self.out.name}.recon"


def _pruning_record(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(prune_report.json or {}, masks or {}) of a pruned directory."""
    report_path = folder / "prune_report.json"
    doc = json.loads(report_path.read_text()) if report_path.is_file() else {}
    masks_path = folder / "masks.safetensors"
    if masks_path.is_file():
        from engine.pruning.sparse_common import load_masks

        return doc, load_masks(masks_path)
    return doc, {}


def run(job: ReconJob) -> dict[str, Any]:
    """Load, (evaluate,) reconstruct, (evaluate,) save; returns the report document."""
    from data.calib import sample_calibration
    from data.runs import replace_dir
    from engine.models import load_model, save_model
    from engine.probe import set_torch_threads
    from engine.pruning.common import eval_loss
    from engine.pruning.recon import reconstruct

    set_torch_threads()
    doc, masks = _pruning_record(job.model)
    model = load_model(job.model)
    parent = _parent(job, model)
    tok = str(job.model) if (job.model / "tokenizer.json").is_file() else None
    calib = sample_calibration(job.calib, job.samples, job.seq_len, split="train", seed=job.seed, tokenizer=tok)
    evals = (sample_calibration(job.eval, job.eval_samples, job.seq_len, split="eval", seed=job.seed + 1,
                                tokenizer=tok) if job.eval else None)
    before = eval_loss(model, evals) if evals is not None else None
    args = ReconArgs(granularity=job.granularity, steps=job.steps, lr=job.lr, batch_size=job.batch_size,
                     seed=job.seed)
    done = reconstruct(model, parent, calib, doc.get("choices", {}), masks, args, state_dir=job.state_dir / "progress")
    after = eval_loss(model, evals) if evals is not None else None
    recon = {**done.to_dict(), "loss_after_prune": before, "loss_after_recon": after, "parent": job.parent,
             "source": str(job.model)}
    out_doc = {**doc, "recon": recon, "loss_after_prune": before, "loss_after_recon": after}
    if after is not None:
        out_doc["loss_after"] = after
    job.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = job.out.with_name(f".{job.out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model(model, tmp, {"prune_report.json": out_doc}, tokenizer_from=job.model)
        if (job.model / "masks.safetensors").is_file():
            shutil.copy2(job.model / "masks.safetensors", tmp / "masks.safetensors")
        replace_dir(tmp, job.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(job.state_dir, ignore_errors=True)
    return out_doc


def _parent(job: ReconJob, model):
    """The parent's layers, read lazily from its directory (a preset is built and written once
    to the state directory, then freed before reconstruction starts)."""
    from engine.models import load_model, resolve_model
    from engine.pruning.recon import ParentLayers

    path = Path(job.parent)
    if not path.is_dir():  # a hub id: its cached snapshot is read lazily, like a directory
        path = resolve_model(job.parent).path or path
    if path.is_dir():
        from transformers import AutoConfig

        if not (path / "config.json").is_file():
            raise BadInput(f"--parent {job.parent!r} has no config.json")
        found = ParentLayers.from_dir(path, model, AutoConfig.from_pretrained(str(path)))
        if found is None:
            raise BadInput(f"--parent {job.parent!r} holds no safetensors weights to read layers from")
        return found
    built = load_model(job.parent, seed=job.seed, vocab=model.config.vocab_size)
    job.state_dir.mkdir(parents=True, exist_ok=True)
    layers = ParentLayers.save(built, job.state_dir / "parent.safetensors")
    del built
    return layers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine recon", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="pruned directory (engine prune --out)")
    p.add_argument("--parent", required=True, help="the unpruned parent: HF directory, hub id org/name[@revision], or random:PRESET")
    p.add_argument("--calib", required=True, help="shard directory or text file for calibration")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--granularity", default=RECON.granularity, help=f"layer | block | blocks:K (default {RECON.granularity})")
    p.add_argument("--samples", type=int, default=32, help="calibration sequences (default 32)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default 256)")
    p.add_argument("--steps", type=int, default=RECON.steps, help=f"Adam steps per submodel (default {RECON.steps})")
    p.add_argument("--lr", type=float, default=RECON.lr, help=f"Adam learning rate per submodel (default {RECON.lr:g})")
    p.add_argument("--batch-size", type=int, default=RECON.batch_size, help=f"sequences per step (default {RECON.batch_size})")
    p.add_argument("--eval", help="shard directory (eval split) or text file: loss before/after")
    p.add_argument("--eval-samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``engine recon``."""
    try:
        ns = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    job = ReconJob(model=ns.model, parent=ns.parent, calib=ns.calib, out=ns.out, granularity=ns.granularity,
                   samples=ns.samples, seq_len=ns.seq_len, steps=ns.steps, lr=ns.lr, batch_size=ns.batch_size,
                   eval=ns.eval, eval_samples=ns.eval_samples, seed=ns.seed, force=ns.force)
    doc = run(job)
    if ns.json:
        print(json.dumps(doc, indent=2))
        return 0
    rec = doc["recon"]
    losses = ("" if rec["loss_after_recon"] is None
              else f", loss {rec['loss_after_prune']:.4f} -> {rec['loss_after_recon']:.4f}")
    print(f"reconstructed ({rec['granularity']}, {rec['calib_sequences']} x {rec['calib_seq_len']} tokens, "
          f"{rec['steps']} steps x {len(rec['units'])} submodels){losses}, {rec['seconds']:.1f}s; saved {job.out}")
    return 0
