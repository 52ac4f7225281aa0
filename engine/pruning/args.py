"""Options of the pruning methods: the one dict-to-dataclass reader, and the option types that
have no torch-free home of their own (torch-free, so ``engine grid plan`` checks a job's
``prune_args`` before anything loads).

Each method's row in ``data.methods`` names its options dataclass; :func:`options` builds it
from a plain dict (a job's ``prune_args``, ``engine prune --option KEY=VALUE``), refusing an
unknown key or a value of the wrong type with one line naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from data.cli import BadInput
from data.units import parse_count


def options(cls: type, args: dict[str, Any] | None, what: str) -> Any:
    """``cls(**args)`` for a frozen options dataclass, each value checked against its field.

    Counts named ``tokens`` may be written ``2M``; tuples may be a comma list (``ffn,heads``);
    floats may be strings (YAML reads ``1e-3`` as one).

    Raises:
        BadInput: an unknown key (naming the allowed ones) or a value of the wrong type.
    """
    if args is not None and not isinstance(args, dict):
        raise BadInput(f"{what} options must be a mapping of option: value, got {args!r}")
    args = dict(args or {})
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise BadInput(f"unknown {what} option(s) {', '.join(unknown)}; allowed: {', '.join(known)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: _value(what, key, value, hints[key]) for key, value in args.items()})


def _value(what: str, key: str, value: Any, tp: Any) -> Any:
    """``value`` as field type ``tp`` wants it; BadInput when it is not one."""
    if key == "tokens" and isinstance(value, str):
        try:
            return parse_count(value, what=f"{what} tokens")
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    converted = _as(value, tp)
    if converted is _WRONG:
        raise BadInput(f"{what} option {key}={value!r} must be {_describe(tp)}")
    return converted


_WRONG = object()


def _as(value: Any, tp: Any) -> Any:
    """``value`` converted to ``tp`` (int -> float, str -> float, list/comma str -> tuple), or _WRONG."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(tp):
            converted = _as(value, member)
            if converted is not _WRONG:
                return converted
        return _WRONG
    if tp is type(None):
        return None if value is None else _WRONG
    if tp is bool:
        return value if isinstance(value, bool) else _WRONG
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value) if isinstance(value, str) else _WRONG
        except ValueError:
            return _WRONG
    if tp is str:
        return value if isinstance(value, str) else _WRONG
    if origin is tuple:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return tuple(value) if isinstance(value, (list, tuple)) else _WRONG
    if origin is dict or tp is dict:
        return value if isinstance(value, dict) else _WRONG
    return value  # Any, callables: in-process values the engine sets itself


def _describe(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(m) for m in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list (or comma list)"
    if typing.get_origin(tp) is dict or tp is dict:
        return "a mapping"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


@dataclass(frozen=True)
class DepthArgs:
    """Knobs of the depth methods (``depth``, ``depth-block``, ``depth-last``)."""

    batch_size: int = 4
    """Calibration rows per forward pass (``depth-last`` reads no calibration)."""
    tolerance: float | None = None
    """Not used: depth removes the nearest whole number of layers, whatever the gap. Accepted
    because grid files give it (and it is part of their run ids)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise BadInput(f"depth batch_size={self.batch_size} must be >= 1")

    @classmethod
    def from_dict(cls, args: dict[str, Any] | None) -> "DepthArgs":
        return options(cls, args, "depth")


@dataclass(frozen=True)
class SearchArgs:
    """Knobs of ``width-search`` (Minitron's shape search; ``args`` dict keys)."""

    candidates: int = 4
    """K: shapes ranked."""
    tokens: int = 50_000
    """KD tokens per candidate (all ranks; ``200K`` ok)."""
    micro_batch: int = 4
    lr: float = 1e-4
    """Peak learning rate of the short KD."""
    warmup_frac: float = 0.1
    temperature: float = 1.0
    zero_stage: int = 0
    precision: str = "fp32"
    seed: int = 0
    multiple: int = 8
    """Granularity of hidden / FFN sizes (as in width)."""
    batch_size: int = 4
    """Rows per forward pass when scoring and evaluating."""
    holdout: float = 0.25
    """Fraction of the calibration rows held out for ranking (never trained on)."""
    seq_len: int | None = None
    stream_factory: Any = None
    """In-process only: ``(rows, seed) -> Stream`` (the recipe's mixture loader)."""
    shards: str | None = None
    """A shard directory to train on (its mixture loader)."""
    state_dir: str | None = None
    """Ranked candidates and the best model so far live here (resume after a kill); None: no resume."""
    trainer: Any = None
    """In-process only: the training engine's ``StageTrainer`` (``engine.pruning.stage.Trainer``)
    that runs each candidate's distillation; the recipe and ``engine prune`` pass it."""

    def __post_init__(self) -> None:
        if self.candidates < 2 or self.tokens < 1 or self.micro_batch < 1 or not 0 < self.holdout < 1:
            raise BadInput(f"search candidates={self.candidates} must be >= 2, tokens={self.tokens} and micro_batch="
                           f"{self.micro_batch} >= 1, holdout={self.holdout} in (0, 1)")

    @classmethod
    def from_dict(cls, args: dict[str, Any] | None) -> "SearchArgs":
        return options(cls, args, "search")
