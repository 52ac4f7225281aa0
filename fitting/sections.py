"""The law card's sections as typed, frozen objects, read from any card version here only.

Each section (``ci``, ``fit``, ``data``, ``scatter``, one ``identifiable`` entry per parameter)
is read once from the card's JSON object into typed fields, and keeps that object as written
(``raw``): a card saved again writes its sections back unchanged, key for key, so a card's
bytes do not depend on which fields this version of prunelaw reads. Sections are mappings too
(``section["key"]``), for the keys no field names yet.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

S = TypeVar("S", bound="Section")


def json_float(x: float | None) -> float | None:
    """JSON-safe float: nan/inf become None (JSON has no nan)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


@dataclass(frozen=True)
class Derived:
    """A decision quantity computed from the parameters, with its intervals.

    ``low``/``high``: confidence interval (mean law); ``pred_low``/``pred_high``: prediction
    interval for a new run (losses only).
    """

    name: str
    value: float
    low: float | None
    high: float | None
    query: dict[str, float]
    pred_low: float | None = None
    pred_high: float | None = None

    def to_dict(self) -> dict:
        out = {"value": json_float(self.value), "low": json_float(self.low), "high": json_float(self.high),
               "query": self.query}
        if self.pred_low is not None:
            out |= {"pred_low": json_float(self.pred_low), "pred_high": json_float(self.pred_high)}
        return out

    @classmethod
    def from_dict(cls, name: str, raw: Mapping) -> "Derived":
        return cls(name, float(raw.get("value") if raw.get("value") is not None else math.nan),
                   raw.get("low"), raw.get("high"), dict(raw.get("query") or {}),
                   raw.get("pred_low"), raw.get("pred_high"))


@dataclass(frozen=True)
class Section(Mapping[str, Any]):
    """A card section: typed fields read from ``raw``, the JSON object as the card holds it."""

    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    DROPPED = ()
    """Keys the writer adds for the reader's eyes and drops on reading (a section's ``kind``)."""

    @classmethod
    def read(cls: type[S], raw: Mapping[str, Any] | None) -> S:
        """The section of a card object (``None`` or ``{}``: an empty section)."""
        if isinstance(raw, cls):
            return raw
        kept = {k: v for k, v in (raw or {}).items() if k not in cls.DROPPED}
        return cls(raw=kept, **cls.fields(kept))

    @classmethod
    def fields(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The typed fields of ``raw`` (every card version read in this one place)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


@dataclass(frozen=True)
class Intervals(Section):
    """``ci``: the confidence level, the runs the bootstrap resampled (what the percentiles
    are widened for), and the interval of every parameter and decision quantity."""

    level: float = 0.95
    units: int | None = None
    params: Mapping[str, tuple[float, float] | None] = field(default_factory=dict)
    derived: Mapping[str, Derived] = field(default_factory=dict)
    DROPPED = ("kind",)

    @classmethod
    def fields(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        params = {name: None if not iv or iv[0] is None else (float(iv[0]), float(iv[1]))
                  for name, iv in (raw.get("params") or {}).items()}
        return {"level": float(raw.get("level", 0.95)), "units": _int(raw.get("units")),
                "params": params,
                "derived": {n: Derived.from_dict(n, d) for n, d in (raw.get("derived") or {}).items()}}


@dataclass(frozen=True)
class FitInfo(Section):
    """``fit``: how the card was fitted (robust loss, space, weights, points, runs, resamples)."""

    n_points: int | None = None
    n_runs: int | None = None
    n_bootstrap: int = 0
    delta: float | None = None
    space: str = "log"
    """``log`` or ``linear`` (version 1 cards wrote a sentence here; their fits were all log)."""
    weighting: str = "point"
    residuals: str = "log loss"
    seed: int = 0

    @classmethod
    def fields(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        space = raw.get("space")
        return {"n_points": _int(raw.get("n_points")), "n_runs": _int(raw.get("n_runs")),
                "n_bootstrap": int(raw.get("n_bootstrap") or 0),
                "delta": None if raw.get("delta") is None else float(raw["delta"]),
                "space": space if space in ("log", "linear") else "log",
                "weighting": str(raw.get("weighting", "point")),
                "residuals": str(raw.get("residuals", "log loss")), "seed": int(raw.get("seed") or 0)}


@dataclass(frozen=True)
class DataInfo(Section):
    """``data``: what the card was fitted on (family, method, source, content hash)."""

    family: str | None = None
    method: str | None = None
    source: str | None = None
    content_hash: str | None = None
    objective: str | None = None
    """Post-training objective of the runs it was fitted on (absent on older cards)."""
    after_warmup: bool = False
    """Fitted without each run's learning-rate warm-up points (``fitting fit --after-warmup``)."""

    @classmethod
    def fields(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        def text(key: str) -> str | None:
            return None if raw.get(key) is None else str(raw[key])
        # version 1 cards named the content hash "hash"
        content = raw.get("content_hash", raw.get("hash"))
        return {"family": text("family"), "method": text("method"), "source": text("source"),
                "content_hash": None if content is None else str(content), "objective": text("objective"),
                "after_warmup": bool(raw.get("after_warmup", False))}


@dataclass(frozen=True)
class Scatter(Section):
    """``scatter``: the run-to-run and point scatter behind prediction intervals (sd in the
    fit's ``space``; empty on cards written before prediction intervals)."""

    space: str = "log"
    sigma_point: float | None = None
    sigma_run: float | None = None
    sigma_new_run: float | None = None
    DROPPED = ("kind",)

    @classmethod
    def fields(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        def sd(key: str) -> float | None:
            return None if raw.get(key) is None else float(raw[key])
        return {"space": str(raw.get("space", "log")), "sigma_point": sd("sigma_point"),
                "sigma_run": sd("sigma_run"), "sigma_new_run": sd("sigma_new_run")}


@dataclass(frozen=True)
class Identified(Section):
    """One parameter's ``identifiable`` entry: pinned (and where, why), at a bound, weak."""

    identified: bool = True
    fixed_at: float | None = None
    reason: str | None = None
    bound: str | None = None
    """What the bound note says (a version 1 card gets it on load: ``fitting.card``)."""
    weak: bool = False

    @classmethod
    def fields(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        return {"identified": bool(raw.get("identified", True)), "fixed_at": raw.get("fixed_at"),
                "reason": None if raw.get("reason") is None else str(raw["reason"]),
                "bound": raw.get("bound") or None, "weak": bool(raw.get("weak", False))}


def read_identifiable(raw: Mapping[str, Mapping] | None) -> dict[str, Identified]:
    """A card's ``identifiable``: one :class:`Identified` per parameter it names."""
    return {name: Identified.read(entry) for name, entry in (raw or {}).items()}
