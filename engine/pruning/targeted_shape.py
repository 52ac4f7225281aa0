"""Target shapes and options of targeted pruning: parse ``--target``, validate it (torch-free).

A target is a model-table preset (``data.models``) or explicit fields
``layers=..,heads=..,kv_heads=..,ffn=..,hidden=..`` (fields left out keep the parent's value).
Validation happens before anything is trained or written, and every failure is one
:class:`~data.cli.BadInput` line naming the field and the values it may take: a field above
the parent's, query heads that break GQA (the same number of query heads per kept KV group,
at most the parent's per group), a hidden size transformers refuses (not a multiple of the
query heads), or a preset of another family (architecture, ``head_dim`` or vocabulary differ:
targeted pruning never changes those).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from data.cli import BadInput
from data.models import MODELS, ModelSpec
from engine.pruning.args import options

FIELDS = ("layers", "heads", "kv_heads", "ffn", "hidden")


@dataclass(frozen=True)
class Shape:
    """The prunable part of a Llama / Qwen2 shape."""

    layers: int
    heads: int
    kv_heads: int
    ffn: int
    hidden: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Parent:
    """What a target is checked against: the parent's shape and the fields pruning keeps."""

    shape: Shape
    arch: str
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, model: Any) -> "Parent":
        return cls.of_config(model.config)

    @classmethod
    def of_config(cls, cfg: Any) -> "Parent":
        """From a transformers config (``engine prune`` checks a target before loading weights)."""
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(Shape(cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
                         cfg.intermediate_size, cfg.hidden_size), cfg.model_type, int(head_dim), cfg.vocab_size)


def _int_field(name: str, raw: Any, parent: Shape) -> int:
    full = getattr(parent, name)
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise BadInput(f"target field {name}={raw!r} must be an integer; allowed: 1..{full}")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise BadInput(f"target field {name}={raw!r} must be an integer; allowed: 1..{full}") from None
    return value


def _explicit(text: str, parent: Shape) -> dict[str, int]:
    values: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in FIELDS:
            raise BadInput(f"target field {part!r} is not KEY=INT; allowed keys: {', '.join(FIELDS)} "
                           f"or a preset name ({', '.join(sorted(MODELS))})")
        values[key] = _int_field(key, raw, parent)
    return values


def _preset(spec: ModelSpec, parent: Parent) -> dict[str, int]:
    """Fields of a preset target; refuses a preset whose fixed fields differ from the parent's."""
    problems = []
    if spec.arch != parent.arch:  # data.models' arch names are transformers' model_type
        problems.append(f"arch {spec.arch} (parent: {parent.arch})")
    if spec.head_dim != parent.head_dim:
        problems.append(f"head_dim {spec.head_dim} (parent: {parent.head_dim})")
    if spec.family != "tiny" and spec.vocab != parent.vocab:  # tiny presets take the tokenizer's vocab
        problems.append(f"vocab {spec.vocab} (parent: {parent.vocab})")
    if problems:
        allowed = [m.name for m in MODELS.values() if _compatible(m, parent)]
        raise BadInput(f"target {spec.name!r} is of another family: {', '.join(problems)}; allowed presets: "
                       f"{', '.join(allowed) or 'none (give layers=..,heads=..,kv_heads=..,ffn=..,hidden=..)'}")
    return {"layers": spec.layers, "heads": spec.heads, "kv_heads": spec.kv_heads, "ffn": spec.ffn,
            "hidden": spec.hidden}


def _compatible(spec: ModelSpec, parent: Parent) -> bool:
    dims = (spec.layers, spec.heads, spec.kv_heads, spec.ffn, spec.hidden)
    return (spec.arch == parent.arch and spec.head_dim == parent.head_dim
            and (spec.family == "tiny" or spec.vocab == parent.vocab)
            and all(v <= getattr(parent.shape, k) for k, v in zip(FIELDS, dims, strict=True))
            and dims != tuple(asdict(parent.shape).values()))


def _check(shape: Shape, parent: Shape) -> None:
    for name in FIELDS:
        value, full = getattr(shape, name), getattr(parent, name)
        if not 1 <= value <= full:
            what = "exceeds the parent's" if value > full else "is below 1; the parent has"
            raise BadInput(f"target field {name}={value} {what} {full}; allowed: 1..{full}")
    q0 = parent.heads // parent.kv_heads
    valid = [shape.kv_heads * q for q in range(1, q0 + 1)]
    if shape.heads not in valid:
        raise BadInput(f"target field heads={shape.heads} breaks GQA with kv_heads={shape.kv_heads} (the same "
                       f"query heads per KV group, at most the parent's {q0}); allowed: {', '.join(map(str, valid))}")
    if shape.hidden % shape.heads:
        near = [m for m in range(shape.heads, parent.hidden + 1, shape.heads)]
        shown = ", ".join(map(str, near[-4:]))
        raise BadInput(f"target field hidden={shape.hidden} is not a multiple of heads={shape.heads} "
                       f"(transformers refuses it); allowed: multiples of {shape.heads} up to {parent.hidden}, "
                       f"e.g. {shown}")
    if shape == parent:
        raise BadInput(f"target {shape.to_dict()} equals the parent's shape: nothing to prune; "
                       "allowed: any smaller shape")


def parse_target(target: str | dict[str, Any], parent: Parent) -> Shape:
    """The validated target shape.

    Args:
        target: a preset name, ``layers=..,heads=..`` text, or a mapping of those fields.
        parent: the parent's shape (``Parent.of(model)``).

    Raises:
        BadInput: one line naming the bad field and its allowed values (see module docstring).
    """
    if isinstance(target, dict):
        unknown = sorted(set(target) - set(FIELDS))
        if unknown:
            raise BadInput(f"target field(s) {unknown} unknown; allowed keys: {', '.join(FIELDS)}")
        values = {k: _int_field(k, v, parent.shape) for k, v in target.items()}
    elif not isinstance(target, str) or not target.strip():
        raise BadInput(f"target {target!r} is empty; give a preset name or layers=..,heads=..,kv_heads=..,"
                       "ffn=..,hidden=..")
    elif "=" in target:
        values = _explicit(target, parent.shape)
    elif target.strip().lower() in MODELS:
        values = _preset(MODELS[target.strip().lower()], parent)
    else:
        raise BadInput(f"target {target!r} is neither a preset nor KEY=INT fields; allowed: "
                       f"{', '.join(sorted(MODELS))} or layers=..,heads=..,kv_heads=..,ffn=..,hidden=..")
    shape = Shape(**{**parent.shape.to_dict(), **values})
    _check(shape, parent.shape)
    return shape


@dataclass(frozen=True)
class TargetedArgs:
    """Knobs of targeted pruning (``args`` dict keys; ``prune_args`` in a job)."""

    target: str | dict[str, Any] | None = None
    """Preset name or ``layers=..,heads=..,kv_heads=..,ffn=..,hidden=..``; None: width's shape for ``ratio``."""
    tokens: int = 100_000
    """Pruning tokens (all ranks; ``2M`` ok): steps = tokens // (micro_batch x world x seq_len)."""
    micro_batch: int = 4
    """Sequences per rank per step."""
    lr: float = 1e-4
    """Peak learning rate of the model's weights (Sheared-LLaMA: 1e-4)."""
    mask_lr: float = 0.3
    """Learning rate of the masks' log_alpha and of the multipliers (Sheared-LLaMA's lag_lr is 1.0
    over 3200 steps; at the few hundred steps of a CPU run 1.0 overshoots and oscillates, 0.3
    reaches the target within ~40 steps on the tiny models)."""
    weight_decay: float = 0.0
    """AdamW weight decay of the model's matrices during pruning."""
    warmup_frac: float = 0.2
    """Fraction of steps over which the target sparsity ramps from 0 (and the lr warms up)."""
    zero_stage: int = 0
    precision: str = "fp32"
    seed: int = 0
    """Seeds the mask noise (per step, so a resumed run draws what an uninterrupted one would)."""
    state_dir: str | None = None
    """Checkpoints and the finished cut model live here; None: no resume."""
    checkpoint_every: int = 50
    """Steps between checkpoints (with ``state_dir``)."""
    log_points: int = 50
    """Trajectory entries recorded (evenly spaced steps, the last included)."""
    axes: tuple[str, ...] = ("ffn", "heads", "hidden")
    """Axes of the width rule used when no ``target`` is given."""
    seq_len: int | None = None
    """Sequence length of ``stream_factory`` batches (in-process, set by the recipe)."""
    stream_factory: Callable[[int, int], Any] | None = None
    """In-process only: ``(rows, seed) -> Stream`` of global batches (the recipe's mixture loader;
    with ``data.dynamic`` its weights stay at their start during pruning: no per-domain evals here)."""
    shards: str | None = None
    """A ``data prepare`` shard directory: train on its mixture loader (``engine prune --calib DIR``)."""
    trainer: Any = None
    """In-process only: the training engine's ``StageTrainer`` (``engine.pruning.stage.Trainer``)
    that runs the mask training; the recipe and ``engine prune`` pass it."""

    def __post_init__(self) -> None:
        checks = {"tokens": self.tokens, "micro_batch": self.micro_batch, "checkpoint_every": self.checkpoint_every,
                  "log_points": self.log_points}
        bad = [k for k, v in checks.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise BadInput(f"targeted {bad[0]}={checks[bad[0]]!r} must be an integer >= 1")
        if not (self.lr > 0 and self.mask_lr > 0 and 0 <= self.warmup_frac < 1):
            raise BadInput(f"targeted lr={self.lr}, mask_lr={self.mask_lr} must be > 0 and warmup_frac="
                           f"{self.warmup_frac} in [0, 1)")

    @classmethod
    def from_dict(cls, args: dict[str, Any] | None) -> "TargetedArgs":
        return options(cls, args, "targeted")


def check_job(parent: str, prune_args: dict[str, Any]) -> None:
    """Plan-time check of a ``method: targeted`` job (torch-free): its options, and its target
    against the parent when the parent is a preset (other parents are checked when loaded).

    Raises:
        BadInput: an unknown option, a bad value, or a target the preset parent cannot reach.
    """
    a = TargetedArgs.from_dict(prune_args)
    spec = MODELS.get(parent.strip().lower())
    if a.target is None or spec is None:
        return
    parse_target(a.target, Parent(Shape(spec.layers, spec.heads, spec.kv_heads, spec.ffn, spec.hidden), spec.arch,
                                  spec.head_dim, spec.vocab))
