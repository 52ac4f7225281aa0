"""Typed job configuration: one YAML file per post-training (or pretraining) job.

Every knob is a dataclass field documented where it is declared, with its default visible
there. :func:`load_job` rejects unknown and missing keys naming the allowed ones, and
``__post_init__`` rejects illegal combinations, so a bad job fails before anything runs.

torch-free: ``engine grid plan`` validates whole grids through this module in well under a
second.

Example job file::

    run_id: my-run
    parent: runs/tiny/parent-run/model      # HF directory, preset name, or run:<run_id>
    method: width
    ratio: 0.25
    tokens: 2M
    data: {shards: shards/tiny}
    deepspeed: {zero_stage: 1, precision: bf16, micro_batch: 8}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.cli import BadInput
from data.methods import METHODS
from data.units import parse_count
from engine.pruning.recon_args import ReconArgs  # torch-free

OBJECTIVES = ("lm", "kd", "recon", "recon+lm", "recon+kd")
"""``recon+lm`` / ``recon+kd``: local reconstruction right after pruning (engine.pruning.recon,
``recon:`` options), then post-training with ``lm`` / ``kd``: the reconstructed start."""
INITS = ("pruned", "random")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "linear", "constant")
ZERO_AUTO = "auto"
NO_PRUNING = "none"
RUN_PREFIX = "run:"
"""``parent: run:<run_id>`` names the saved model of another run in the same store."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise BadInput(message)


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, f"{name}={value!r} is not allowed; allowed: {', '.join(allowed)}")


@dataclass
class DataConfig:
    """Where the tokens come from (a directory written by ``data prepare``)."""

    shards: str
    """Token-shard directory (``data.shards.ShardSet``); its held-out split is the eval set."""
    seq_len: int | None = None
    """Training sequence length; None takes the shards' own length (it may only be shorter)."""
    weights: dict[str, float] | None = None
    """Domain mixture weights (domain -> weight); None keeps the shards' natural mixture."""
    dynamic: bool = False
    """Sheared-LLaMA dynamic batch loading: re-weight domains towards those whose eval loss is
    furthest above the unpruned parent's (``data.loader.DynamicConfig``)."""
    dynamic_every: int = 50
    """Optimizer steps between dynamic re-weightings (each costs one evaluation)."""

    def __post_init__(self) -> None:
        _check(self.seq_len is None or self.seq_len >= 2, f"data.seq_len={self.seq_len} must be >= 2")


@dataclass
class OptimConfig:
    """torch.optim.AdamW plus a warm-up schedule (DeepSpeed's WarmupCosineLR / WarmupDecayLR)."""

    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    schedule: str = "cosine"
    """After warm-up: ``cosine`` or ``linear`` decay to ``min_lr_ratio * lr``, or ``constant``."""
    warmup_frac: float = 0.05
    """Warm-up length as a fraction of all optimizer steps (at least one step)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr`` (cosine only: DeepSpeed's linear decay ends at 0)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # YAML gives a list
        _one_of("optim.schedule", self.schedule, SCHEDULES)
        _check(self.lr > 0, f"optim.lr={self.lr} must be > 0")
        _check(0 <= self.warmup_frac < 1, f"optim.warmup_frac={self.warmup_frac} must be in [0, 1)")
        _check(len(self.betas) == 2, f"optim.betas={list(self.betas)} must hold two numbers")


@dataclass
class DeepSpeedConfig:
    """What goes into the DeepSpeed JSON (built by ``engine.train.dsconfig.build_ds_config``)."""

    zero_stage: int | str = "auto"
    """ZeRO stage 0-3, or ``auto``: resolved when the job starts (``engine.train.dsconfig.
    resolve_zero_stage``): 1 on a GPU (``precision: auto`` trains bf16 there, which needs
    stage >= 1) or with ``precision: bf16``, else 0 (a CPU: fp32 as before ``auto`` existed).
    The stage chosen goes into run.json's config, its reason into ``meta.zero_stage_reason``;
    a resumed run keeps its first attempt's. In the run id ``auto`` counts as 0, the default it
    replaced, so existing jobs keep their ids (stage 0-3 train the same curve in fp32)."""
    precision: str = "auto"
    """``auto``: with zero_stage >= 1, bf16 on a GPU with native bf16, and on a CPU with native
    bf16 (AVX512-BF16 or AMX) where the machine probe measures it faster than fp32 at this job's
    model, sequence and micro-batch (``engine.probe.resolve_precision``; cached per machine);
    else fp32. The choice goes into run.json's config, its reason into ``meta.precision_reason``.
    ``fp32``, ``bf16`` (DeepSpeed's bf16 mode: fp32 master weights and optimizer state; needs
    zero_stage >= 1: stage 0 accumulates bf16 gradients and drifts) or ``fp16``."""
    micro_batch: int = 8
    """Sequences per process per forward pass."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; global batch = micro_batch * grad_accum * world size."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them
    (transformers' ``activation_checkpointing_enable``): activation memory drops from one set per
    layer to about one layer's, for roughly one extra forward pass of compute. The loss curve is
    the same (float tolerance), so it is not part of the run id: switching it on to fit a GPU
    resumes or skips the same run."""

    def __post_init__(self) -> None:
        _check(self.zero_stage in (0, 1, 2, 3, ZERO_AUTO) and not isinstance(self.zero_stage, bool),
               f"deepspeed.zero_stage={self.zero_stage!r} must be 0, 1, 2, 3 or auto")
        _one_of("deepspeed.precision", self.precision, PRECISIONS)
        _check(not (self.precision == "bf16" and self.zero_stage == 0),
               "deepspeed.precision=bf16 needs deepspeed.zero_stage >= 1 (stage 0 drifts in bf16)")
        _check(self.micro_batch >= 1, f"deepspeed.micro_batch={self.micro_batch} must be >= 1")
        _check(self.grad_accum >= 1, f"deepspeed.grad_accum={self.grad_accum} must be >= 1")


@dataclass
class EvalConfig:
    """Held-out evaluation at token checkpoints (schedule: ``engine.train.schedule``)."""

    points: int = 12
    """Evaluation points after step 0: log-spaced early, evenly spaced later, last at the budget."""
    max_sequences: int = 64
    """Held-out sequences per domain per evaluation."""
    batch_size: int = 16
    """Sequences per eval forward pass."""
    divergence_factor: float = 3.0
    """A run whose eval loss exceeds this multiple of its step-0 loss ends as failed."""

    def __post_init__(self) -> None:
        _check(self.points >= 1, f"eval.points={self.points} must be >= 1")
        _check(self.max_sequences >= 1, f"eval.max_sequences={self.max_sequences} must be >= 1")
        _check(self.divergence_factor > 1, f"eval.divergence_factor={self.divergence_factor} must be > 1")


@dataclass
class KDConfig:
    """Knowledge distillation from the unpruned parent (objective ``kd``, Minitron-style)."""

    temperature: float = 1.0
    """Softmax temperature of teacher and student; the KL is scaled by T^2."""
    lm_weight: float = 0.0
    """Weight of the next-token CE mixed into the KD loss (0: pure logit KL)."""

    def __post_init__(self) -> None:
        _check(self.temperature > 0, f"kd.temperature={self.temperature} must be > 0")
        _check(0 <= self.lm_weight <= 1, f"kd.lm_weight={self.lm_weight} must be in [0, 1]")


@dataclass
class ReconConfig:
    """Local reconstruction. Objective ``recon`` trains every kept block to match its parent
    block for the whole token budget; ``recon+lm`` / ``recon+kd`` reconstruct once after
    pruning (one submodel at a time, on ``calib_sequences``), then post-train."""

    calib_sequences: int = 64
    """Size of the calibration set the blocks are fitted on (``recon``: cycled until the token
    budget; ``recon+*``: sequences of the train split at the shards' length)."""
    granularity: str = ReconArgs.granularity
    """``recon+*``: ``layer``, ``block`` or ``blocks:K`` (engine.pruning.recon_args)."""
    steps: int = ReconArgs.steps
    """``recon+*``: Adam steps per submodel."""
    lr: float = ReconArgs.lr
    """``recon+*``: Adam learning rate per submodel."""
    batch_size: int = ReconArgs.batch_size
    """``recon+*``: calibration sequences per step."""

    def __post_init__(self) -> None:
        _check(self.calib_sequences >= 1, f"recon.calib_sequences={self.calib_sequences} must be >= 1")
        ReconArgs(granularity=self.granularity, steps=self.steps, lr=self.lr, batch_size=self.batch_size)


RECON_ADDED_DEFAULTS: dict[str, Any] = {"granularity": "block", "steps": 100, "lr": 1e-4, "batch_size": 8}
"""ReconConfig fields added after run stores existed: at these values they stay out of the
config hash, so earlier jobs keep their run ids. A record of the defaults of that time, written
out on purpose: were ReconArgs' defaults to change, a job that takes the new ones is a new run."""


@dataclass
class StopConfig:
    """Online budget (``engine.train.stop``): end the run once the refitted D* is reached."""

    at: str | None = None
    """``optimum``: stop at D* of the planner's recover criterion (close ``recover`` of the gap)."""
    target_loss: float | None = None
    """Stop once the predicted budget for this eval loss (nats) is reached."""
    recover: float = 0.9
    """Fraction of the recoverable gap (loss right after pruning minus the asymptote) for ``at: optimum``."""
    min_fraction: float = 0.2
    """Never stop before this fraction of ``tokens`` (the early curve is mostly warm-up)."""
    card: str | None = None
    """Optional P2 law card: its beta bootstrap is the prior of each refit (else pilot-only)."""

    def __post_init__(self) -> None:
        _check((self.at is None) != (self.target_loss is None),
               "stop needs exactly one of at: optimum or target_loss: L")
        _check(self.at in (None, "optimum"), f"stop.at={self.at!r} is not allowed; allowed: optimum")
        _check(self.target_loss is None or self.target_loss > 0, f"stop.target_loss={self.target_loss} must be > 0")
        _check(0 < self.recover < 1, f"stop.recover={self.recover} must be in (0, 1)")
        _check(0 < self.min_fraction <= 1, f"stop.min_fraction={self.min_fraction} must be in (0, 1]")


@dataclass
class MonitorConfig:
    """DeepSpeed's own monitor (``deepspeed.monitor``): train/eval loss and lr curves where
    users already look. Off by default; it never changes a run's result (not in its id)."""

    tensorboard: bool = False
    """TensorBoard event files (``tensorboard --logdir runs``)."""
    csv: bool = False
    """One CSV file per curve (DeepSpeed's ``csv_monitor``)."""
    wandb: bool = False
    """Weights & Biases, when the ``wandb`` package is installed (else a warning, and off)."""
    wandb_project: str = "prunelaw"
    """W&B project of the runs."""
    dir: str = ""
    """Empty: ``<run dir>/monitor``; else ``<dir>/<run_id>`` (one log directory for a whole grid)."""

    @property
    def enabled(self) -> bool:
        return self.tensorboard or self.csv or self.wandb


@dataclass
class JobConfig:
    """One job: load the parent, prune it, post-train it, log an eval curve in the run store."""

    parent: str
    """Parent model: a local HF directory, a preset name (random init, for pretraining), or
    ``run:<run_id>`` (the model saved by another run of the same store)."""
    tokens: int
    """Token budget: training tokens consumed by the whole job (all ranks). ``2M``, ``5e6`` ok."""
    data: DataConfig
    run_id: str = ""
    """Run-store id; empty derives ``<parent>_<method>_r<ratio>_..._<hash8>`` from the config."""
    runs_dir: str = "runs"
    """Run-store root; the run lives in ``<runs_dir>/<run_id>``."""
    family: str = ""
    """Family recorded in the metadata; empty takes the parent's (``tiny``, ``llama3``, ...)."""
    method: str = NO_PRUNING
    """Pruning method (a row of ``data.methods.METHODS``) or ``none``."""
    ratio: float = 0.0
    """Target fraction of parameters to remove (``ratio_target``)."""
    prune_args: dict[str, Any] = field(default_factory=dict)
    """Fields of the method's options dataclass (its row's ``args`` in ``data.methods``),
    checked against it when the job is read; kept as written, since it enters the run id."""
    calib_sequences: int = 32
    """Calibration sequences for the pruning scores (train split)."""
    init: str = "pruned"
    """``pruned`` keeps the pruned weights; ``random`` re-initialises the same shape (scratch control)."""
    objective: str = "lm"
    """``lm`` next-token CE, ``kd`` logit KL from the parent, ``recon`` block-output MSE."""
    seed: int = 0
    save_model: bool = False
    """Save the final model with ``save_pretrained`` to ``<run dir>/model`` (parents of a grid)."""
    checkpoint: bool = True
    """Save a DeepSpeed checkpoint at every eval point (only the latest is kept) for resume."""
    checkpoint_every_s: float = 1800.0
    """With ``checkpoint``, also save one at the first step boundary after this many seconds of
    wall time since the last save (eval points are log-spaced: late in a long run they are far
    apart); 0 saves at eval points only. When a run saves does not change its curve, so this
    is not part of the run id."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    stop: StopConfig | None = None
    """Online budget: ``{at: optimum}`` or ``{target_loss: L}`` (see StopConfig); None trains to ``tokens``."""
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """DeepSpeed monitor outputs (TensorBoard, CSV, W&B); all off by default."""

    def __post_init__(self) -> None:
        self.tokens = _count(self.tokens, "tokens")
        _one_of("init", self.init, INITS)
        _one_of("objective", self.objective, OBJECTIVES)
        pruning = self.method != NO_PRUNING
        _check(not pruning or 0 < self.ratio < 1, f"ratio={self.ratio} must be in (0, 1) for method {self.method!r}")
        _check(pruning or self.ratio == 0, f"ratio={self.ratio} needs a pruning method (method is 'none')")
        _check(not (self.objective.startswith("recon+") and self.init == "random"),
               f"objective={self.objective!r} reconstructs the pruned weights; init 'random' would discard them")
        _check(pruning or self.objective == "lm",
               f"objective={self.objective!r} needs a pruned model; with method 'none' use objective 'lm'")
        _check(self.checkpoint_every_s >= 0, f"checkpoint_every_s={self.checkpoint_every_s} must be >= 0")
        _check(self.calib_sequences >= 1, f"calib_sequences={self.calib_sequences} must be >= 1")
        if pruning:
            _one_of("method", self.method, (NO_PRUNING, *METHODS))
            from engine.pruning import check_args  # torch-free: the options type's module only

            check_args(self.method, self.prune_args)
        if self.method == "targeted":  # torch-free: options and a preset parent's target, at plan time
            from engine.pruning.targeted_shape import check_job

            check_job(self.parent, self.prune_args)
        if not self.run_id:
            self.run_id = default_run_id(self)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run_id

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _count(value: Any, name: str) -> int:
    try:
        return parse_count(value, what=name)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


def config_hash(job: JobConfig) -> str:
    """8 hex digits of the resolved config, without the fields that only say where it lives."""
    payload = job.to_dict()
    for key in ("run_id", "runs_dir", "monitor"):  # where it lives and what watches it: same run
        payload.pop(key)
    payload.pop("checkpoint_every_s")  # when it saves, not what it trains: same run
    payload["deepspeed"].pop("activation_checkpointing")  # memory, not result: same run
    if payload["deepspeed"]["zero_stage"] == ZERO_AUTO:  # the default it replaced: ids stay
        payload["deepspeed"]["zero_stage"] = 0
    if payload.get("stop") is None:  # jobs without an online budget keep their ids
        payload.pop("stop", None)
    for key, default in RECON_ADDED_DEFAULTS.items():  # likewise for the recon+* knobs
        if payload["recon"].get(key) == default:
            payload["recon"].pop(key)
    from data.hub import preset_of  # torch-free

    spec = preset_of(job.parent)
    if spec is not None:  # a random init's shape is part of the job: editing the table re-runs it
        payload["parent_shape"] = [spec.hidden, spec.layers, spec.heads, spec.kv_heads, spec.head_dim,
                                   spec.ffn, spec.vocab, spec.tied, spec.qkv_bias]
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]


def parent_label(parent: str) -> str:
    """Short readable name of a parent: preset name, run id, or directory name."""
    if parent.startswith(RUN_PREFIX):
        return parent[len(RUN_PREFIX):].split("_")[0]
    return Path(parent).name or parent


def default_run_id(job: JobConfig, head: str | None = None) -> str:
    """``tiny-llama-s_width_r0.25_lm_pruned_s0_<hash8>``; pretraining: ``<preset>_pretrain_s0_<hash8>``.

    ``head`` replaces the parent's label (a grid names its parents).
    """
    head = head or parent_label(job.parent)
    if job.method == NO_PRUNING:
        body = f"{head}_pretrain" if job.init == "random" else f"{head}_none_{job.objective}"
    else:
        body = f"{head}_{job.method.replace(':', '')}_r{job.ratio:g}_{job.objective}_{job.init}"
    return f"{body}_s{job.seed}_{config_hash(job)}"


# -- strict loading ----------------------------------------------------------------------------

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a YAML scalar against a field type; ints are accepted where floats are expected."""
    if _is_dataclass_type(tp):
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where) if len(inner) == 1 else value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-3 as a string
        except ValueError:
            pass
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        if not (tp is int and where.endswith("tokens")):
            raise BadInput(f"{where}={value!r} must be of type {tp.__name__}")
    return value


def from_dict(cls: type, raw: Any, where: str = "job") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown and missing keys.

    Raises:
        BadInput: one line naming the bad key and the allowed ones.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(raw, dict):
        raise BadInput(f"{where} must be a mapping with keys: {', '.join(fields)}")
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise BadInput(f"unknown key(s) {', '.join(unknown)} in {where}; allowed: {', '.join(fields)}")
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in raw]
    if missing:
        raise BadInput(f"missing key(s) {', '.join(missing)} in {where}; required: {', '.join(required)}; "
                       f"allowed: {', '.join(fields)}")
    types_ = _field_types(cls)
    kwargs = {name: _coerce(value, types_[name], f"{where}.{name}" if where != "job" else name)
              for name, value in raw.items()}
    return cls(**kwargs)


def job_from_dict(raw: Any) -> JobConfig:
    """A validated :class:`JobConfig` from a parsed YAML mapping."""
    return from_dict(JobConfig, raw, "job")


def load_job(path: str | Path) -> JobConfig:
    """Read and validate one job YAML file.

    Raises:
        BadInput: missing/unreadable file, invalid YAML, unknown/missing keys, bad values.
    """
    from engine.yamlfile import load_yaml

    path = Path(path)
    raw = load_yaml(path, "job file")
    try:
        return job_from_dict(raw)
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from exc


def dump_job(job: JobConfig, path: str | Path) -> Path:
    """Write the resolved job as YAML (atomically: a grid may be re-planned while it runs)."""
    import yaml

    from data.runs import write_bytes_atomic

    path = Path(path)
    write_bytes_atomic(path, yaml.safe_dump(job.to_dict(), sort_keys=False).encode())
    return path
