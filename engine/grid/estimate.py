"""What a grid will cost before it is submitted: FLOPs, GPU-hours, price and peak GPU memory.

``engine grid plan GRID --estimate [--gpu h100 --mfu 0.4 --price P]`` runs this on every job
of a grid, from shapes alone (the model table, or a parent's ``config.json``; never weights),
so it works offline and on a login node.

Compute (``data.compute``, the planner's cost model):

- post-training: ``6 N D`` with N the parameters the kernels multiply (the pruned dense shape;
  2:4 keeps dense weights under masks, so the parent's N0);
- KD: plus the teacher's forward, ``2 N0 D``;
- pruning calibration (methods in ``engine.pruning.NEEDS_CALIB``): ``2 N0 * calib tokens``;
- evaluation: ``2 N * eval tokens`` over the job's eval points.

Memory per GPU at the job's ZeRO stage and world size W (DeepSpeed's sharding, Rajbhandari
et al. 2020): 16-bit mixed precision keeps 2 bytes of weights, 2 of gradients and 12 of
optimizer state (fp32 master + fp32 Adam moments) per parameter; fp32 keeps 4 + 4 + 8. Stage 1
divides the optimizer state by W, stage 2 also the gradients, stage 3 also the weights
(``zero_stage: auto`` is resolved as on a GPU: ``engine.train.dsconfig.resolve_zero_stage``).
The KD teacher is the parent loaded again in the training precision once the student is
wrapped, replicated on every rank (the placement stated in the table). Activations follow the
layer's saved tensors at the micro-batch and sequence length, with and without activation
checkpointing, plus the logits.

The peak is the largest of three phases (``engine.train.recipe``):

- setup, before ``deepspeed.initialize``: every rank holds the whole parent in fp32 (nothing
  is built under ``zero.Init``; pruning needs the full weights, docs/gpu.md) and evaluates
  L0 on it: its fp32 logits and their log-softmax at the eval batch;
- training: model states + teacher + activations;
- a held-out evaluation: model states + teacher + the student's eval-batch logits (training
  precision, their fp32 upcast and log-softmax); activations are freed by then.

Written by hand because DeepSpeed's own estimators (``estimate_zero2_model_states_mem_needs``
and friends) import torch and count model states only, not the teacher or activations.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.cli import BadInput
from data.compute import FORWARD_FLOPS_PER_PARAM_TOKEN, FLOPS_PER_PARAM_TOKEN, Gpu, flops_cost
from data.models import MODELS, ModelSpec
from data.units import format_count
from engine.train.dsconfig import resolve_zero_stage

GIB = 2.0 ** 30
USABLE_FRACTION = 0.92
"""Share of the card's memory a job may plan for: the CUDA context, NCCL buffers and the
caching allocator's fragmentation take the rest (several GiB on an 80 GiB card)."""
TEACHER_PLACEMENT = "replicated on every rank in the training precision"
PARENT_PLACEMENT = "the whole parent in fp32 on every rank until deepspeed.initialize"
STATE_BYTES = {16: (2, 2, 12), 32: (4, 4, 8)}
"""Bytes per parameter of (weights, gradients, optimizer state) by training precision bits."""


@dataclass(frozen=True)
class Memory:
    """Peak bytes per GPU of one job, by what holds them."""

    weights: float
    grads: float
    optim: float
    teacher: float
    activations: float
    """Saved activations and logits at the micro-batch, without activation checkpointing."""
    activations_ckpt: float
    """The same with activation checkpointing (layer inputs kept, one layer recomputed)."""
    eval_logits: float = 0.0
    """The student's logits at the eval batch during a held-out evaluation (no activations)."""
    setup: float = 0.0
    """Before ``deepspeed.initialize``: the full fp32 parent and its L0 evaluation's logits."""

    def peak(self, checkpointing: bool = False) -> float:
        states = self.weights + self.grads + self.optim + self.teacher
        train = self.activations_ckpt if checkpointing else self.activations
        return max(self.setup, states + max(train, self.eval_logits))


@dataclass(frozen=True)
class JobEstimate:
    """Compute and memory of one job at a GPU type, MFU and world size."""

    run_id: str
    parent: str
    method: str
    ratio: float
    objective: str
    tokens: int
    params_parent: int
    params_trained: int
    """Parameters the job's kernels multiply and its optimizer holds."""
    flops: dict[str, float]
    """FLOPs by part: train, teacher, calibration, eval."""
    gpu_hours: float
    cost_usd: float
    world: int
    zero_stage: int
    precision_bits: int
    memory: Memory
    peak_by_stage: dict[int, float]
    fits: bool
    fits_ckpt: bool

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["memory_gib"] = {k: v / GIB for k, v in out.pop("memory").items()}
        out["peak_gib_by_stage"] = {k: v / GIB for k, v in out.pop("peak_by_stage").items()}
        out["flops_total"] = sum(self.flops.values())
        out["teacher_placement"] = TEACHER_PLACEMENT
        out["parent_placement"] = PARENT_PLACEMENT
        return out


def state_bytes(params: int, bits: int, zero_stage: int, world: int) -> tuple[float, float, float]:
    """(weights, gradients, optimizer state) bytes per GPU, sharded as ZeRO ``zero_stage`` does."""
    w, g, o = (b * params for b in STATE_BYTES[bits])
    shard = lambda stage: world if zero_stage >= stage else 1  # noqa: E731 - three uses below
    return w / shard(3), g / shard(2), o / shard(1)


def layer_activation_bytes(spec: ModelSpec, tokens: int, bits: int) -> float:
    """Bytes one decoder layer saves for backward over ``tokens`` tokens, with SDPA attention
    (the score matrix is recomputed, not stored).

    Per token, in the training precision: the rotated q, k and v and the attention output
    (2 q + 2 kv values), gate, up, SiLU(gate) and the down projection's input (4 ffn); per
    RMSNorm its fp32 input (transformers upcasts inside the norm), 1/rms, and two 16-bit
    copies (the normalised value and the product with the weight, the next linear's input);
    and SDPA's fp32 log-sum-exp per head. ``tests/engine/test_grid_estimate.py`` checks this against
    the tensors transformers' Llama and Qwen2 layers really save.
    """
    a = bits // 8
    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    norms = 2 * ((4 + 2 * a) * spec.hidden + 4)
    per_token = a * (2 * q + 2 * kv + 4 * spec.ffn) + norms + 4 * spec.heads
    return float(per_token * tokens)


def logits_bytes(vocab: int, tokens: int, bits: int, kd: bool) -> float:
    """Logits at the micro-batch: the student's (16-bit, their fp32 upcast for the loss and its
    fp32 gradient) and, under KD, the teacher's (16-bit and its fp32 log-softmax)."""
    a = bits // 8
    student = (a + 4 + 4) * vocab * tokens
    return float(student + ((a + 4) * vocab * tokens if kd else 0))


def eval_logits_bytes(vocab: int, tokens: int, bits: int) -> float:
    """Logits of one held-out batch: ``bits``-wide, their fp32 upcast (none when already fp32)
    and the cross-entropy's fp32 log-softmax (transformers' causal-LM loss)."""
    a = bits // 8
    return float((a + (4 if a != 4 else 0) + 4) * vocab * tokens)


def setup_bytes(parent: ModelSpec, eval_tokens: int) -> float:
    """Per rank before ``deepspeed.initialize``: the parent in fp32 and its L0 evaluation."""
    return float(4 * parent.params_total) + eval_logits_bytes(parent.vocab, eval_tokens, 32)


def activation_bytes(spec: ModelSpec, micro_batch: int, seq_len: int, bits: int, kd: bool) -> tuple[float, float]:
    """(without, with) activation checkpointing: every layer's saved tensors, or every layer's
    input plus one layer recomputed at a time; logits in both."""
    tokens = micro_batch * seq_len
    layer = layer_activation_bytes(spec, tokens, bits)
    logits = logits_bytes(spec.vocab, tokens, bits, kd)
    inputs = spec.layers * (bits // 8) * spec.hidden * tokens
    return spec.layers * layer + logits, inputs + layer + logits


def pruned_spec(spec: ModelSpec, method: str, ratio: float, args: dict[str, Any]) -> ModelSpec:
    """The dense shape the job trains: depth drops layers, width shrinks (hidden, ffn, heads);
    2:4 and unstructured keep the parent's dense tensors (their keep-masks stay on the host),
    so its shape."""
    from engine.pruning.reach import DEPTH_METHODS, WIDTH_METHODS, depth_layers

    if method in DEPTH_METHODS:
        drop = depth_layers(spec.params_total, spec.layer_params, spec.layers, ratio, method)
        return dataclasses.replace(spec, layers=spec.layers - drop, expected_total=None)
    if method in WIDTH_METHODS:
        from engine.pruning.width_shape import Base, WidthArgs, choose_shape

        known = {k: v for k, v in args.items() if k in WidthArgs.__dataclass_fields__}
        base = Base(spec.hidden, spec.heads, spec.kv_heads, spec.head_dim, spec.ffn, spec.layers, spec.vocab,
                    spec.tied, spec.qkv_bias)
        hidden, ffn, kv, heads, _ = choose_shape(base, ratio, WidthArgs.from_dict(known))
        return dataclasses.replace(spec, hidden=int(hidden), ffn=int(ffn), kv_heads=int(kv), heads=int(heads),
                                   expected_total=None)
    return spec


def _table_row(hub_id: str) -> ModelSpec | None:
    repo = hub_id.partition("@")[0].lower()
    return next((m for m in MODELS.values() if m.hf_id and m.hf_id.lower() == repo), None)


def parent_spec(parent: Any, shards: str) -> ModelSpec:
    """A grid parent's shape: a preset's (with the shards' vocabulary when they exist), a
    local directory's ``config.json``, or the model table's row of a hub id.

    Raises:
        BadInput: a parent whose shape is knowable from none of them.
    """
    from engine.pruning.reach import spec_from_config

    if parent.preset:
        spec = MODELS[parent.preset.lower()]
        manifest = Path(shards) / "manifest.json"
        vocab = json.loads(manifest.read_text()).get("vocab_size") if manifest.is_file() else None
        return spec.with_vocab(int(vocab)) if vocab else spec
    config = Path(parent.path).expanduser() / "config.json"
    if config.is_file():
        return spec_from_config(json.loads(config.read_text()), parent.name)
    row = _table_row(parent.path)
    if row is None:
        raise BadInput(f"parent {parent.name!r}: {parent.path!r} has no config.json here and is not in the model "
                       f"table; fetch it first (engine model fetch) to estimate its jobs")
    return row


def _bits(precision: str, zero_stage: int) -> int:
    """Training precision in bits on a GPU (``auto`` takes bf16 where ZeRO >= 1 allows it)."""
    if precision == "fp32" or (precision == "auto" and zero_stage == 0):
        return 32
    return 16


def _flops(job: Any, parent: ModelSpec, trained: int, seq_len: int) -> dict[str, float]:
    from engine.pruning import NEEDS_CALIB

    cfg = job.config
    n0 = parent.params_total
    eval_tokens = cfg.eval.points * cfg.eval.max_sequences * seq_len
    calib = cfg.calib_sequences * seq_len if job.kind == "post" and cfg.method in NEEDS_CALIB else 0
    return {"train": FLOPS_PER_PARAM_TOKEN * trained * cfg.tokens,
            "teacher": FORWARD_FLOPS_PER_PARAM_TOKEN * n0 * cfg.tokens if cfg.objective == "kd" else 0.0,
            "calibration": FORWARD_FLOPS_PER_PARAM_TOKEN * n0 * calib,
            "eval": FORWARD_FLOPS_PER_PARAM_TOKEN * trained * eval_tokens}


def estimate_job(job: Any, parent: ModelSpec, gpu: Gpu, mfu: float, price: float | None, world: int,
                 seq_len: int) -> JobEstimate:
    """Compute and peak memory per GPU of one grid job (see the module docstring)."""
    cfg, ds = job.config, job.config.deepspeed
    trained = pruned_spec(parent, cfg.method, cfg.ratio, cfg.prune_args) if job.kind == "post" else parent
    n = trained.params_total
    flops = _flops(job, parent, n, seq_len)
    cost = flops_cost(sum(flops.values()), gpu, mfu, price)
    zero_stage = resolve_zero_stage(ds, "cuda")[0]
    bits = _bits(ds.precision, zero_stage)
    kd = cfg.objective == "kd"
    teacher = float(parent.params_total * bits // 8) if kd else 0.0
    act, act_ckpt = activation_bytes(trained, ds.micro_batch, seq_len, bits, kd)
    eval_tokens = min(cfg.eval.batch_size, cfg.eval.max_sequences) * seq_len
    evals = eval_logits_bytes(trained.vocab, eval_tokens, bits)
    setup = setup_bytes(parent, eval_tokens)  # a pretraining job's parent is its random init: the same
    by_stage = {}
    for stage in range(4):
        w, g, o = state_bytes(n, bits, stage, world)
        by_stage[stage] = Memory(w, g, o, teacher, act, act_ckpt, evals, setup)
    memory = by_stage[zero_stage]
    budget = gpu.memory_gib * GIB * USABLE_FRACTION
    return JobEstimate(cfg.run_id, job.parent_name or cfg.parent, cfg.method, cfg.ratio, cfg.objective, cfg.tokens,
                       parent.params_total, n, flops, cost.gpu_hours, cost.cost_usd, world, zero_stage, bits,
                       memory, {s: m.peak() for s, m in by_stage.items()},
                       memory.peak() <= budget, memory.peak(checkpointing=True) <= budget)


def estimate_grid(grid: Any, gpu: Gpu, mfu: float, price: float | None, world: int) -> list[JobEstimate]:
    """Every job of ``grid`` (parents first) on ``world`` GPUs of type ``gpu``.

    Raises:
        BadInput: a job whose sequence length is unknown (no ``data.seq_len`` and no shards yet),
            or a parent whose shape cannot be read.
    """
    from engine.train.sources import job_seq_len

    shards = grid.spec.data.get("shards", "")
    shapes = {p.name: parent_spec(p, shards) for p in grid.parents}
    by_id = {j.run_id: j for j in grid.jobs}
    out = []
    for job in grid.jobs:
        seq_len = job_seq_len(job.config)
        if seq_len is None:
            raise BadInput(f"job {job.run_id}: its sequence length is unknown until {shards!r} exists; "
                           "set data.seq_len in the grid to estimate it")
        name = job.parent_name or (by_id[job.depends].parent_name if job.depends else "")
        out.append(estimate_job(job, shapes[name], gpu, mfu, price, world, seq_len))
    return out


def table(estimates: list[JobEstimate], gpu: Gpu) -> list[dict[str, Any]]:
    """Rows for ``engine.grid.status.render`` (its status column says whether each job fits)."""
    rows = []
    for e in estimates:
        m = e.memory
        status = "fits" if e.fits else ("fits with act. ckpt" if e.fits_ckpt else f"DOES NOT FIT {gpu.name}")
        rows.append({"id": e.run_id, "parent": e.parent, "method": e.method, "ratio": e.ratio,
                     "N": format_count(e.params_trained), "FLOPs": f"{sum(e.flops.values()):.3g}",
                     "GPU-h": f"{e.gpu_hours:.1f}", "USD": f"{e.cost_usd:.0f}", "zero": str(e.zero_stage),
                     "W/G/O GiB": f"{m.weights / GIB:.1f}/{m.grads / GIB:.1f}/{m.optim / GIB:.1f}",
                     "teacher": f"{m.teacher / GIB:.1f}",
                     "act/ckpt": f"{m.activations / GIB:.1f}/{m.activations_ckpt / GIB:.1f}",
                     "eval": f"{m.eval_logits / GIB:.1f}", "setup": f"{m.setup / GIB:.1f}",
                     "peak z0/1/2/3": "/".join(f"{e.peak_by_stage[s] / GIB:.0f}" for s in range(4)),
                     "peak": f"{m.peak() / GIB:.1f}", "status": status})
    return rows


def summary(estimates: list[JobEstimate], gpu: Gpu, mfu: float, price: float | None) -> str:
    """The total line, and what the table's assumptions are."""
    hours = sum(e.gpu_hours for e in estimates)
    cost = sum(e.cost_usd for e in estimates)
    flops = sum(sum(e.flops.values()) for e in estimates)
    world = estimates[0].world if estimates else 1
    ckpt_only = sum(e.fits_ckpt and not e.fits for e in estimates)
    never = sum(not e.fits_ckpt for e in estimates)
    lines = [f"total: {flops:.3g} FLOPs, {hours:,.1f} GPU-hours, ${cost:,.0f} on {gpu.name} at MFU {mfu:g} "
             f"(${gpu.price if price is None else price:.2f}/GPU-h); {world} GPU(s) per job, "
             f"wall-clock {hours / world:,.1f} h if run one after another" if estimates else "total: no jobs",
             f"memory per GPU in GiB of {gpu.memory_gib:g} ({USABLE_FRACTION:.0%} usable); KD teacher "
             f"{TEACHER_PLACEMENT}; W/G/O = weights/gradients/optimizer state at the job's ZeRO stage; "
             f"eval = the student's logits at the eval batch; setup = {PARENT_PLACEMENT}, with its L0 "
             f"evaluation; peak = max(setup, W+G+O+teacher+max(act, eval))"]
    if ckpt_only:
        lines.append(f"{ckpt_only} job(s) fit only with activation checkpointing")
    if never:
        lines.append(f"{never} job(s) will not fit: raise the GPU count or ZeRO stage, or lower "
                     "deepspeed.micro_batch (raising grad_accum to keep the batch)")
    return "\n".join(lines)
