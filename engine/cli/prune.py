"""``engine prune``: prune a model with one registered method and save it as an HF directory.

The output directory holds the ``save_pretrained`` model (config.json + safetensors), the
source's tokenizer files, ``prune_report.json`` (method, target and achieved ratio, counts,
kept indices, timing, losses) and, for sparse methods, ``masks.safetensors``. It is written to
a temporary sibling and renamed at the end, so a failed run leaves nothing half-written and an
existing directory is never touched without ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data.cli import BadInput
from data.methods import METHODS
from data.paths import check_out_apart, check_swappable
from engine.pruning.recon_args import ReconArgs

EPILOG = """examples:
  engine prune --model work/smollm2-135m --method depth --ratio 0.25 --calib work/text/shakes.txt --out work/pruned/depth25
  engine prune --model work/smollm2-135m --method width --ratio 0.5 --calib SHARDS_DIR --eval SHARDS_DIR --out work/pruned/width50
  engine prune --model tiny-qwen --method depth-last --ratio 0.4 --out /tmp/tiny-depth-last
  engine prune --model Qwen/Qwen2.5-0.5B --method width --ratio 0.25 --calib SHARDS_DIR --out work/pruned/qwen-w25
  engine prune --model work/smollm2-135m --method targeted --target layers=24,heads=6,kv_heads=2,ffn=1024,hidden=384 --prune-tokens 2M --calib SHARDS_DIR --eval SHARDS_DIR --out work/pruned/sheared
  engine prune --model work/smollm2-135m --method width --ratio 0.5 --search 4 --search-tokens 200K --calib SHARDS_DIR --eval SHARDS_DIR --out work/pruned/width50-search
  engine prune --model work/smollm2-135m --method unstructured-magnitude --sparsity 0.5 --calib work/text/shakes.txt --reconstruct block --eval work/text/shakes.txt --out work/pruned/mag50-recon
  engine prune --model work/smollm2-135m --method unstructured-sparsegpt --sparsity 0.5 --option damp=0.05 --calib work/text/shakes.txt --out work/pruned/sgpt50
"""


MAX_COUNT = 1_000_000
"""Bound on every count flag: larger is a typo that would run for hours before failing."""
RECON = ReconArgs()
"""Reconstruction defaults (the flags' defaults are its fields)."""


@dataclass(frozen=True)
class PruneJob:
    """One ``engine prune`` invocation, fully resolved."""

    model: str
    """A save_pretrained directory or a preset name."""
    method: str
    """A row of the method table (data.methods.METHODS)."""
    ratio: float | None
    """Target fraction of parameters to remove, in (0, 1); None when ``sparsity`` is given."""
    out: Path
    """Output directory."""
    calib: str | None = None
    """Shard directory or text file for calibration (methods whose row says ``calib``)."""
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
    sparsity: float | None = None
    """Sparse methods: fraction of each targeted linear to remove (instead of ``ratio``)."""
    reconstruct: str | None = None
    """Granularity of local reconstruction right after pruning (``layer``, ``block``,
    ``blocks:K``; engine.pruning.recon); None: no reconstruction."""
    recon_samples: int | None = None
    """Calibration sequences for reconstruction (None: ``calib_samples``); length ``calib_seq_len``."""
    recon_steps: int = RECON.steps
    """Adam steps per reconstructed submodel."""
    recon_lr: float = RECON.lr
    """Adam learning rate per reconstructed submodel."""
    recon_batch_size: int = RECON.batch_size
    """Calibration sequences per reconstruction step."""
    target: str | None = None
    """``--method targeted``: the target shape (a preset, or ``layers=..,heads=..,kv_heads=..,ffn=..,hidden=..``)."""
    prune_tokens: str | None = None
    """``--method targeted``: pruning tokens (None: engine.pruning.targeted.TargetedArgs.tokens)."""
    mask_lr: float | None = None
    """``--method targeted``: lr of the masks and multipliers (None: TargetedArgs.mask_lr)."""
    prune_lr: float | None = None
    """``--method targeted``: peak lr of the weights while the masks learn (None: TargetedArgs.lr)."""
    search: int | None = None
    """``--method width --search K``: K candidate shapes of the same size, ranked after a short KD."""
    search_tokens: str | None = None
    """KD tokens per candidate of ``--search`` (None: engine.pruning.args.SearchArgs.tokens)."""
    device: str = "auto"
    """Where the model is pruned: ``auto`` (the GPU where torch sees one), ``cpu`` or ``cuda``."""
    dtype: str = "auto"
    """Calibration forwards in ``fp32`` or ``bf16`` (weights and statistics stay fp32); ``auto``:
    bf16 on a GPU, on a CPU whichever the machine probe measures faster at this model's shape."""
    options: dict[str, Any] = field(default_factory=dict)
    """``--option KEY=VALUE``: fields of the method's options dataclass (its row's ``args``),
    over those the dedicated flags above set."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadInput(f"unknown method {self.method!r}; allowed: {', '.join(METHODS)}")
        if sum(v is not None for v in (self.ratio, self.sparsity, self.target)) != 1:
            raise BadInput("give exactly one of --ratio (fraction of all parameters), --sparsity "
                           "(fraction of each targeted linear) and --target (a shape, --method targeted)")
        self._check_targeted()
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise BadInput(f"--ratio {self.ratio} is outside (0, 1): give the fraction of parameters to remove")
        if self.sparsity is not None and not 0.0 < self.sparsity < 1.0:
            raise BadInput(f"--sparsity {self.sparsity} is outside (0, 1): give the fraction of each linear to remove")
        self._check_recon()
        if min(self.calib_samples, self.calib_seq_len, self.eval_samples, self.batch_size) < 1:
            raise BadInput("--calib-samples, --calib-seq-len, --eval-samples and --batch-size must be >= 1")
        if max(self.calib_samples, self.calib_seq_len, self.eval_samples, self.batch_size) > MAX_COUNT:
            raise BadInput(f"--calib-samples, --calib-seq-len, --eval-samples and --batch-size must be "
                           f"<= {MAX_COUNT:,}; got {self.calib_samples}, {self.calib_seq_len}, "
                           f"{self.eval_samples}, {self.batch_size}")
        check_out_apart(self.out, {"--model": self.model, "--calib": self.calib, "--eval": self.eval,
                                   "--tokenizer": self.tokenizer})
        check_swappable(self.out)
        if self.device not in ("auto", "cpu", "cuda") or self.dtype not in ("auto", "fp32", "bf16"):
            bad = f"--device {self.device!r}" if self.device not in ("auto", "cpu", "cuda") else f"--dtype {self.dtype!r}"
            raise BadInput(f"{bad} is not allowed; allowed: --device auto|cpu|cuda, --dtype auto|fp32|bf16")
        if self.out.exists() and not self.force:
            raise BadInput(f"--out {str(self.out)!r} already exists; pass --force to replace it")
        if self.width and self.method not in ("width", "width-search"):
            raise BadInput(f"width options {sorted(self.width)} only apply to --method width")
        from engine.pruning import check_args

        check_args(_method_name(self), _method_args(self))  # a bad option fails before any weight is read

    def _check_recon(self) -> None:
        changed = {"--recon-samples": self.recon_samples is not None, "--recon-steps": self.recon_steps != RECON.steps,
                   "--recon-lr": self.recon_lr != RECON.lr, "--recon-batch-size": self.recon_batch_size != RECON.batch_size}
        given = [flag for flag, on in changed.items() if on]
        if self.reconstruct is None:
            if given:
                raise BadInput(f"{', '.join(given)} only apply with --reconstruct layer|block|blocks:K")
            return
        ReconArgs(granularity=self.reconstruct, steps=self.recon_steps, lr=self.recon_lr,
                  batch_size=self.recon_batch_size)  # raises BadInput naming the bad value
        if self.recon_samples is not None and self.recon_samples < 1:
            raise BadInput(f"--recon-samples {self.recon_samples}: the reconstruction calibration set needs >= 1 "
                           "sequence (size is sequences x --calib-seq-len)")
        if self.calib is None:
            raise BadInput("--reconstruct needs calibration data: pass --calib SHARDS_DIR|TEXT_FILE")

    def _check_targeted(self) -> None:
        if self.target is not None and self.method != "targeted":
            raise BadInput(f"--target only applies to --method targeted (got --method {self.method})")
        for flag, value in (("--prune-tokens", self.prune_tokens), ("--mask-lr", self.mask_lr),
                            ("--prune-lr", self.prune_lr)):
            if value is not None and self.method != "targeted":
                raise BadInput(f"{flag} only applies to --method targeted (got --method {self.method})")
        for flag, value in (("--mask-lr", self.mask_lr), ("--prune-lr", self.prune_lr)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise BadInput(f"{flag} {value!r} must be a positive learning rate (e.g. 0.3 for masks, 1e-4 for weights)")
        if self.search is not None and self.method not in ("width", "width-search"):
            raise BadInput(f"--search K applies to --method width (got --method {self.method})")
        if self.search is not None and self.search < 2:
            raise BadInput(f"--search {self.search}: rank at least 2 candidate shapes (K >= 2)")
        if self.search_tokens is not None and self.search is None:
            raise BadInput("--search-tokens only applies with --search K")
        if self.method == "targeted" and self.calib is None:
            raise BadInput("method 'targeted' trains on data: pass --calib SHARDS_DIR (mixture loader) or TEXT_FILE")

    @property
    def targeted_dir(self) -> Path:
        """Targeted pruning / search checkpoints beside ``out`` (kept after a kill, removed on success)."""
        return self.out.parent / f".{self.out.name}.targeted"

    @property
    def state_dir(self) -> Path:
        """Reconstruction progress beside ``out`` (kept after a kill, removed on success)."""
        return self.out.parent / f".{self.out.name}.recon"


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


def _method_name(job: PruneJob) -> str:
    """The row that prunes: ``--method width --search K`` is ``width-search``."""
    return "width-search" if job.search is not None else job.method


def _method_args(job: PruneJob) -> dict[str, Any] | None:
    """The method's ``args``: what the dedicated flags set, then ``--option`` over them."""
    return {**(_flag_args(job) or {}), **job.options} or None


def _flag_args(job: PruneJob) -> dict[str, Any] | None:
    if job.method == "targeted":
        shards = job.calib if job.calib and Path(job.calib).is_dir() else None
        extra = {k: v for k, v in (("tokens", job.prune_tokens), ("mask_lr", job.mask_lr), ("lr", job.prune_lr))
                 if v is not None}
        return {"target": job.target, "shards": shards, "state_dir": str(job.targeted_dir), "seed": job.seed,
                **extra}
    if job.method == "width-search" or job.search is not None:
        extra = {"tokens": job.search_tokens} if job.search_tokens is not None else {}
        return {**job.width, "candidates": job.search or 4, "batch_size": job.batch_size, "seed": job.seed,
                "state_dir": str(job.targeted_dir), **extra}
    if job.method == "width":
        return {**job.width, "batch_size": job.batch_size}
    if METHODS[job.method].kind == "depth":
        return {"batch_size": job.batch_size}
    return None


def run(job: PruneJob):
    """Load, (evaluate,) prune, (evaluate,) (reconstruct, evaluate,) save.

    Returns the :class:`PruneReport` (its ``loss_after`` is the saved model's loss).
    """
    from engine.models import load_model, resolve_model, spec_of
    from engine.probe import set_torch_threads
    from engine.pruning import NEEDS_CALIB, TRAINED, get_method
    from engine.pruning.common import choose_forward_dtype, eval_loss, forward_precision

    set_torch_threads()  # measured once per machine: 2 threads can be slower than 1 on 2 vCPUs
    resolved = resolve_model(job.model)  # a hub model: fetched, or found in the cache
    # From here on the model is a local directory (tokenizer, parent layers) or a table shape.
    job = dataclasses.replace(job, model=str(resolved.path or resolved.source.preset.name))
    if job.target is not None:  # a bad shape fails before any weight is read
        from engine.pruning.targeted import check_target

        check_target(job.model, job.target)
    device = _device(job.device)
    model = load_model(resolved, seed=job.seed).to(device)
    vocab = model.config.vocab_size
    ratio = job.ratio
    if job.sparsity is not None:
        from engine.pruning.sparse_common import ratio_for_sparsity

        ratio = ratio_for_sparsity(model, job.method, job.sparsity)
    if job.method in NEEDS_CALIB and job.calib is None:
        raise BadInput(f"method {job.method!r} needs calibration data: pass --calib SHARDS_DIR|TEXT_FILE")
    calib = _ids(job, job.calib, job.calib_samples, "train", vocab, job.seed).to(device) if job.calib else None
    evals = _ids(job, job.eval, job.eval_samples, "eval", vocab, job.seed + 1).to(device) if job.eval else None
    shape_before = spec_of(model)
    loss_before = eval_loss(model, evals, job.batch_size) if evals is not None else None
    parent = _parent_layers(job, model) if job.reconstruct else None
    method = _method_name(job)
    dtype, why = choose_forward_dtype(job.dtype, model, job.calib_seq_len if calib is not None else None,
                                      job.batch_size)
    print(f"[engine prune] {device.type}, forwards in {dtype}: {why}", flush=True)
    args = _method_args(job)
    if method in TRAINED:  # its stage trains in the training engine's loop
        from engine.train.stage import StageTrainer

        args = {**(args or {}), "trainer": StageTrainer()}
    with forward_precision(dtype, device.type):  # losses below are measured in fp32, outside it
        report = get_method(method)(model, ratio, calib, args=args)
    report.choices["forward"] = {"device": device.type, "dtype": dtype, "why": why}
    report.loss_before = loss_before
    if evals is not None:
        report.loss_after = eval_loss(report.model, evals, job.batch_size)
    if parent is not None:
        with forward_precision(dtype, device.type):
            report.recon = _reconstruct(job, report, parent, calib, evals)
    if resolved.path is None or resolved.snapshot is not None:  # a random init, or which commit
        print(f"engine prune: {resolved.describe()}", file=sys.stderr)
    _save(job, report, shape_before, resolved.record())
    if parent is not None:
        shutil.rmtree(job.state_dir, ignore_errors=True)
    shutil.rmtree(job.targeted_dir, ignore_errors=True)  # saved: the pruning stage's resume point is spent
    return report


def _device(name: str):
    """The torch device of ``--device`` (``auto``: the GPU where torch sees one)."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: torch sees no CUDA GPU here; use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _parent_layers(job: PruneJob, model):
    """The parent's layers for reconstruction, read lazily: its own directory's safetensors, or
    (a preset) a copy written to the state directory before pruning (never a second model)."""
    from engine.pruning.recon import ParentLayers

    found = ParentLayers.from_dir(Path(job.model), model) if Path(job.model).is_dir() else None
    if found is not None:
        return found
    job.state_dir.mkdir(parents=True, exist_ok=True)
    return ParentLayers.save(model, job.state_dir / "parent.safetensors")


def _reconstruct(job: PruneJob, report, parent, calib, evals) -> dict[str, Any]:
    """Local reconstruction of ``report.model`` (resumable through ``job.state_dir``)."""
    from engine.pruning.common import eval_loss
    from engine.pruning.recon import reconstruct

    n = job.recon_samples or job.calib_samples
    ids = calib if n == job.calib_samples else _ids(job, job.calib, n, "train", report.model.config.vocab_size,
                                                    job.seed)
    args = ReconArgs(granularity=job.reconstruct, steps=job.recon_steps, lr=job.recon_lr,
                     batch_size=job.recon_batch_size, seed=job.seed)
    done = reconstruct(report.model, parent, ids, report.choices, report.masks, args,
                       state_dir=job.state_dir / "progress")
    loss_prune = report.loss_after
    if evals is not None:
        report.loss_after = eval_loss(report.model, evals, job.batch_size)
    return {**done.to_dict(), "loss_after_prune": loss_prune,
            "loss_after_recon": report.loss_after if evals is not None else None}


def _save(job: PruneJob, report, shape_before: dict, source: dict) -> None:
    """Write model, tokenizer, report (and masks) to a temp dir, then rename into place.

    ``source``: where the model came from (a hub model's commit, or a random init's preset).
    """
    from data.runs import replace_dir
    from engine.models import save_model, spec_of

    doc = {**report.to_dict(), "source": source, "shape_before": shape_before,
           "shape_after": spec_of(report.model),
           "job": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(job).items()}}
    job.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=job.out.parent, prefix=f".{job.out.name}."))
    try:
        extra: dict[str, Any] = {"prune_report.json": doc}
        save_model(report.model, tmp, extra, tokenizer_from=_tokenizer_source(job))
        if report.masks:
            from engine.pruning.sparse_common import save_masks

            save_masks(report.masks, tmp / "masks.safetensors")
        replace_dir(tmp, job.out)  # the old output is moved aside, removed only after the swap
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engine prune", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="save_pretrained directory, hub id org/name[@revision], or random:PRESET (untrained)")
    p.add_argument("--method", required=True, metavar="METHOD",
                   help="; ".join(f"{m.name}: {m.label}" for m in METHODS.values()))
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--ratio", type=float, help="fraction of ALL parameters to remove, in (0, 1)")
    size.add_argument("--sparsity", type=float,
                      help="sparse methods: fraction of EACH targeted linear to remove (0.5 = Wanda/SparseGPT's 50%%)")
    size.add_argument("--target", metavar="SHAPE",
                      help="--method targeted: a preset name or layers=..,heads=..,kv_heads=..,ffn=..,hidden=..")
    p.add_argument("--out", required=True, type=Path, help="output directory (HF layout + prune_report.json)")
    p.add_argument("--calib", help="shard directory or text file for calibration")
    p.add_argument("--calib-samples", type=int, default=32, help="calibration sequences (default 32)")
    p.add_argument("--calib-seq-len", type=int, default=256, help="tokens per sequence (default 256)")
    p.add_argument("--eval", help="shard directory (eval split) or text file: loss before/after")
    p.add_argument("--eval-samples", type=int, default=16, help="eval sequences (default 16)")
    p.add_argument("--tokenizer", help="tokenizer for text files (default: the model directory's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", type=_option,
                   help="a field of the method's options (e.g. --option damp=0.05 for the sparsegpt methods); "
                        "repeatable; a key the method does not take exits 2 naming the allowed ones")
    w = p.add_argument_group("width options")
    w.add_argument("--axes", help="comma list of ffn,heads,hidden,kv to shrink (default ffn,heads,hidden)")
    for name in ("heads", "kv-heads", "ffn", "hidden"):
        w.add_argument(f"--{name}", type=int, help=f"fix the pruned {name.replace('-', ' ')} count")
    t = p.add_argument_group("targeted pruning and shape search (train while pruning; resume after a kill)")
    t.add_argument("--prune-tokens", help="targeted: tokens to learn the masks on (e.g. 2M; default 100K)")
    t.add_argument("--mask-lr", type=float, help="targeted: lr of the masks and Lagrange multipliers (default 0.3)")
    t.add_argument("--prune-lr", type=float, help="targeted: peak lr of the weights while the masks learn (default 1e-4)")
    t.add_argument("--search", type=int, metavar="K", help="width: rank K same-size shapes by a short KD, keep the best")
    t.add_argument("--search-tokens", help="KD tokens per --search candidate (e.g. 200K; default 50K)")
    r = p.add_argument_group("reconstruction (after pruning; resumes after a kill)")
    r.add_argument("--reconstruct", metavar="GRANULARITY",
                   help="layer | block | blocks:K: fit each submodel to the parent's activations on --calib")
    r.add_argument("--recon-samples", type=int, help="calibration sequences for it (default: --calib-samples)")
    r.add_argument("--recon-steps", type=int, default=RECON.steps, help=f"Adam steps per submodel (default {RECON.steps})")
    r.add_argument("--recon-lr", type=float, default=RECON.lr, help=f"Adam learning rate per submodel (default {RECON.lr:g})")
    r.add_argument("--recon-batch-size", type=int, default=RECON.batch_size,
                   help=f"sequences per step (default {RECON.batch_size})")
    p.add_argument("--device", default="auto", help="auto (the GPU where present) | cpu | cuda")
    p.add_argument("--dtype", default="auto",
                   help="calibration forwards: auto (bf16 on a GPU; on a CPU the faster, measured) | fp32 | bf16")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    return p


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, int | float | bool | str); the options type checks both."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. damp=0.05)")
    value = value.strip()
    for parse in (int, float):
        try:
            return key.strip(), parse(value)
        except ValueError:
            pass
    return key.strip(), {"true": True, "false": False}.get(value.lower(), value)


def setup(argv: Sequence[str] | None) -> tuple[PruneJob, bool]:
    """Parse the command line into a validated :class:`PruneJob` (and the --json flag)."""
    ns = _parser().parse_args(argv)
    width = {k: v for k, v in (("axes", ns.axes), ("heads", ns.heads), ("kv_heads", ns.kv_heads),
                               ("ffn", ns.ffn), ("hidden", ns.hidden)) if v is not None}
    job = PruneJob(model=ns.model, method=ns.method, ratio=ns.ratio, out=ns.out, calib=ns.calib,
                   calib_samples=ns.calib_samples, calib_seq_len=ns.calib_seq_len, eval=ns.eval,
                   eval_samples=ns.eval_samples, tokenizer=ns.tokenizer, seed=ns.seed,
                   batch_size=ns.batch_size, width=width, force=ns.force, sparsity=ns.sparsity,
                   reconstruct=ns.reconstruct, recon_samples=ns.recon_samples, recon_steps=ns.recon_steps,
                   recon_lr=ns.recon_lr, recon_batch_size=ns.recon_batch_size, target=ns.target,
                   prune_tokens=ns.prune_tokens, mask_lr=ns.mask_lr, prune_lr=ns.prune_lr, search=ns.search, search_tokens=ns.search_tokens,
                   device=ns.device, dtype=ns.dtype, options=dict(ns.option))
    return job, ns.json


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``engine prune``."""
    try:
        job, as_json = setup(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2 with one line, --help exits 0
        return int(exc.code or 0)
    # Libraries print to stdout (DeepSpeed's logger: "Setting accelerator to CPU"); with --json
    # stdout must hold the report alone, so everything else goes to stderr while it runs.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        report = run(job)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    losses = "" if report.loss_after is None else f", loss {report.loss_before:.4f} -> {report.loss_after:.4f}"
    if report.recon is not None and report.recon["loss_after_prune"] is not None:
        losses += f" (after pruning {report.recon['loss_after_prune']:.4f}, reconstructed {job.reconstruct})"
    print(f"{report.method}: ratio {report.ratio:.4f} (target {report.ratio_target:.4f}), params {report.params_before:,} -> "
          f"{report.params_after:,}{losses}, {report.seconds:.1f}s; saved {job.out}")
    return 0
