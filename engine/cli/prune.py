"""``engine prune``: prune a model with one registered method and save it as an HF directory.

The output directory holds the ``save_pretrained`` model (config.json + safetensors), the
source's tokenizer files, ``prune_report.json`` (method, target and achieved ratio, counts,
kept indices, timing, losses) and, for sparse methods, ``masks.safetensors``. It is written to
a temporary sibling and renamed at the end, so a failed run leaves nothing half-written and an
existing directory is never touched without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data.cli import BadInput

EPILOG = """examples:
  engine prune --model work/smollm2-135m --method depth --ratio 0.25 --calib work/text/shakes.txt --out work/pruned/depth25
  engine prune --model work/smollm2-135m --method width --ratio 0.5 --calib SHARDS_DIR --eval SHARDS_DIR --out work/pruned/width50
  engine prune --model tiny-qwen --method depth-last --ratio 0.4 --out /tmp/tiny-depth-last
"""


@dataclass(frozen=True)
class PruneJob:
    """One ``engine prune`` invocation, fully resolved."""

    model: str
    """A save_pretrained directory or a preset name."""
    method: str
    """Registry name (engine.pruning.METHODS)."""
    ratio: float
    """Target fraction of parameters to remove, in (0, 1)."""
    out: Path
    """Output directory."""
    calib: str | None = None
    """Shard directory or text file for calibration (methods in NEEDS_CALIB)."""
    calib_samples: int = 32
    """Number of calibration sequences."""
    calib_seq_len: int = 256
    """Tokens per calibration sequence."""
    eval: str | None = None
    """Shard directory (eval split) or text file to measure loss before/after pruning."""
    eval_samples: int = 16
    """Number of eval sequences (same length as calibration)."""
    tokenizer: str | None = None
    """Tokenizer for text files (default: the model directory's own)."""
    seed: int = 0
    """Seed of the calibration / eval window choice and of preset initialisation."""
    batch_size: int = 4
    """Rows per forward pass during scoring and evaluation."""
    width: dict[str, Any] = field(default_factory=dict)
    """Width options (axes, heads, kv_heads, ffn, hidden), passed to the width method."""
    force: bool = False
    """Replace an existing output directory."""

    def __post_init__(self) -> None:
        from engine.pruning import METHODS

        if self.method not in METHODS:
            raise BadInput(f"unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        if not 0.0 < self.ratio < 1.0:
            raise BadInput(f"--ratio {self.ratio} is outside (0, 1): give the fraction of parameters to remove")
        if min(self.calib_samples, self.calib_seq_len, self.eval_samples, self.batch_size) < 1:
            raise BadInput("--calib-samples, --calib-seq-len, --eval-samples and --batch-size must be >= 1")
        if self.out.exists() and not self.force:
            raise BadInput(f"--out {str(self.out)!r} already exists; pass --force to replace it")
        if self.width and self.method != "width":
            raise BadInput(f"width options {sorted(self.width)} only apply to --method width")


def _tokenizer_source(job: PruneJob) -> str | None:
    if job.tokenizer:
        return job.tokenizer
    path = Path(job.model)
    return str(path) if (path / "tokenizer.json").is_file() else None


def _ids(job: PruneJob, source: str, n: int, split: str, vocab: int, seed: int):
    """LongTensor [n, calib_seq_len] from a shard dir or text file, checked against the vocab."""
    from data.calib import sample_calibration

    ids = sample_calibration(source, n, job.calib_seq_len, split=split, seed=seed,
                             tokenizer=_tokenizer_source(job))
    if int(ids.max()) >= vocab:
        raise BadInput(f"token id {int(ids.max())} in {source!r} is outside the model's vocabulary "
                       f"({vocab}); use data tokenised with the model's tokenizer")
    return ids


def _method_args(job: PruneJob) -> dict[str, Any] | None:
    if job.method == "width":
        return {**job.width, "batch_size": job.batch_size}
    if job.method.startswith("depth"):
        return {"batch_size": job.batch_size}
    return None


def run(job: PruneJob):
    """Load, (evaluate,) prune, (evaluate,) save. Returns the :class:`PruneReport`."""
    from engine.models import load_model, spec_of
    from engine.pruning import NEEDS_CALIB, get_method
    from engine.pruning.common import eval_loss

    model = load_model(job.model, seed=job.seed)
    vocab = model.config.vocab_size
    if job.method in NEEDS_CALIB and job.calib is None:
        raise BadInput(f"method {job.method!r} needs calibration data: pass --calib SHARDS_DIR|TEXT_FILE")
    calib = _ids(job, job.calib, job.calib_samples, "train", vocab, job.seed) if job.calib else None
    evals = _ids(job, job.eval, job.eval_samples, "eval", vocab, job.seed + 1) if job.eval else None
    shape_before = spec_of(model)
    loss_before = eval_loss(model, evals, job.batch_size) if evals is not None else None
    report = get_method(job.method)(model, job.ratio, calib, args=_method_args(job))
    report.loss_before = loss_before
    if evals is not None:
        report.loss_after = eval_loss(report.model, evals, job.batch_size)
    _save(job, report, shape_before)
    return report


def _save(job: PruneJob, report, shape_before: dict) -> None:
    """Write model, tokenizer, report (and masks) to a temp dir, then rename into place."""
    from engine.models import save_model, spec_of

    doc = {**report.to_dict(), "source": job.model, "shape_before": shape_before,
           "shape_after": spec_of(report.model),
           "job": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(job).items()}}
    job.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=job.out.parent, prefix=f".{job.out.name}."))
    try:
        extra: dict[str, Any] = {"prune_report.json": doc}
        save_model(report.model, tmp, extra, tokenizer_from=_tokenizer_source(job))
        if report.masks:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in report.masks.items()}, str(tmp / "masks.safetensors"))
        if job.out.exists():
            shutil.rmtree(job.out)
        tmp.rename(job.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine prune", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="save_pretrained directory or preset name")
    p.add_argument("--method", required=True, help="depth, depth-block, depth-last, width, 2:4, unstructured, ...")
    p.add_argument("--ratio", required=True, type=float, help="fraction of parameters to remove, in (0, 1)")
    p.add_argument("--out", required=True, type=Path, help="output directory (HF layout + prune_report.json)")
    p.add_argument("--calib", help="shard directory or text file for calibration")
    p.add_argument("--calib-samples", type=int, default=32, help="calibration sequences (default 32)")
    p.add_argument("--calib-seq-len", type=int, default=256, help="tokens per sequence (default 256)")
    p.add_argument("--eval", help="shard directory (eval split) or text file: loss before/after")
    p.add_argument("--eval-samples", type=int, default=16, help="eval sequences (default 16)")
    p.add_argument("--tokenizer", help="tokenizer for text files (default: the model directory's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    w = p.add_argument_group("width options")
    w.add_argument("--axes", help="comma list of ffn,heads,hidden,kv to shrink (default ffn,heads,hidden)")
    for name in ("heads", "kv-heads", "ffn", "hidden"):
        w.add_argument(f"--{name}", type=int, help=f"fix the pruned {name.replace('-', ' ')} count")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    return p


def setup(argv: Sequence[str] | None) -> tuple[PruneJob, bool]:
    """Parse the command line into a validated :class:`PruneJob` (and the --json flag)."""
    ns = _parser().parse_args(argv)
    width = {k: v for k, v in (("axes", ns.axes), ("heads", ns.heads), ("kv_heads", ns.kv_heads),
                               ("ffn", ns.ffn), ("hidden", ns.hidden)) if v is not None}
    job = PruneJob(model=ns.model, method=ns.method, ratio=ns.ratio, out=ns.out, calib=ns.calib,
                   calib_samples=ns.calib_samples, calib_seq_len=ns.calib_seq_len, eval=ns.eval,
                   eval_samples=ns.eval_samples, tokenizer=ns.tokenizer, seed=ns.seed,
                   batch_size=ns.batch_size, width=width, force=ns.force)
    return job, ns.json


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``engine prune``."""
    try:
        job, as_json = setup(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2 with one line, --help exits 0
        return int(exc.code or 0)
    report = run(job)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    losses = "" if report.loss_after is None else f", loss {report.loss_before:.4f} -> {report.loss_after:.4f}"
    print(f"{job.method}: ratio {report.ratio:.4f} (target {job.ratio}), params {report.params_before:,} -> "
          f"{report.params_after:,}{losses}, {report.seconds:.1f}s; saved {job.out}")
    return 0
