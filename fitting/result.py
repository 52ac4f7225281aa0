"""Typed, frozen results of a fit and of a validation (STYLE.md item 7)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fitting.laws import get_law


def _num(x: float | None) -> float | None:
    """JSON-safe float: nan/inf become None (JSON has no nan)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


@dataclass(frozen=True)
class Derived:
    """A decision quantity computed from the parameters, with its bootstrap interval."""

    name: str
    value: float
    low: float | None
    high: float | None
    query: dict[str, float]

    def to_dict(self) -> dict:
        return {"value": _num(self.value), "low": _num(self.low), "high": _num(self.high),
                "query": self.query}


@dataclass(frozen=True)
class FitResult:
    """Outcome of ``fitting.fit``: parameters, intervals, metrics, what is identified.

    ``intervals[name]`` is ``(low, high)`` at ``ci_level`` from the run bootstrap, or None when
    no bootstrap ran or the parameter is pinned (see ``identifiable``).
    """

    law: str
    success: bool
    message: str
    params: dict[str, float]
    objective: float
    intervals: dict[str, tuple[float, float] | None]
    derived: dict[str, Derived]
    metrics: dict[str, float]
    identifiable: dict[str, dict]
    fit: dict
    range: dict[str, dict[str, float]]
    data: dict
    notes: tuple[str, ...] = ()
    bootstrap_params: np.ndarray | None = field(default=None, repr=False)

    @property
    def params_array(self) -> np.ndarray:
        """Parameters in the law's order (``law.predict`` takes this)."""
        return np.array([self.params[name] for name in get_law(self.law).params])

    def predict(self, **axes: np.ndarray) -> np.ndarray:
        """The fitted law at ``axes``."""
        return get_law(self.law).predict(self.params_array, **axes)

    def summary(self) -> str:
        """Human-readable report: parameters with intervals, metrics, what is not identified."""
        law = get_law(self.law)
        level = self.fit.get("ci_level", 0.95)
        lines = [f"law {law.name}: {law.formula}",
                 f"fit: {'converged' if self.success else 'NOT converged'} ({self.message}); "
                 f"{self.fit['n_points']} points, {self.fit['n_runs']} runs, objective "
                 f"{self.objective:.6g} (Huber delta={self.fit['delta']:g} on log loss, summed)",
                 "", f"{'param':<8} {'value':>14}  {int(level * 100)}% interval"]
        for name in law.params:
            ident = self.identifiable.get(name, {})
            interval = self.intervals.get(name)
            if not ident.get("identified", True):
                text = f"not identified, fixed at {ident.get('fixed_at')}"
            elif ident.get("weak"):
                text = f"[{interval[0]:.6g}, {interval[1]:.6g}] WEAK (see below)"
            elif interval is None:
                text = "(no bootstrap)"
            else:
                text = f"[{interval[0]:.6g}, {interval[1]:.6g}]"
            lines.append(f"{name:<8} {self.params[name]:>14.6g}  {text}")
        for d in self.derived.values():
            span = f"[{d.low:.4g}, {d.high:.4g}]" if d.low is not None else "(no bootstrap)"
            lines.append(f"{d.name}: {d.value:.6g} {span} at {d.query}")
        lines.append("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items()))
        lines += [f"identifiability of {name}: {r['reason']}"
                  for name, r in self.identifiable.items() if r.get("reason")]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self, *, with_samples: bool = True) -> dict:
        """JSON-ready dict in the law-card layout (without ``version``/``created``)."""
        ci = {name: (None if iv is None else [_num(iv[0]), _num(iv[1])])
              for name, iv in self.intervals.items()}
        out = {
            "law": self.law, "success": self.success, "message": self.message,
            "params": {k: float(v) for k, v in self.params.items()},
            "objective": float(self.objective),
            "ci": {"level": self.fit.get("ci_level", 0.95), "params": ci,
                   "derived": {k: d.to_dict() for k, d in self.derived.items()}},
            "identifiable": self.identifiable, "fit": self.fit,
            "metrics": {k: _num(v) for k, v in self.metrics.items()},
            "range": self.range, "data": self.data, "notes": list(self.notes),
        }
        if with_samples and self.bootstrap_params is not None:
            out["bootstrap"] = {"params": list(get_law(self.law).params),
                                "samples": self.bootstrap_params.tolist()}
        return out


@dataclass(frozen=True)
class ValidationResult:
    """One held-out extrapolation: fit on ``train``, metrics on ``test``."""

    by: str
    success: bool
    message: str
    split: str
    n_train: int
    n_test: int
    metrics: dict[str, float]
    params: dict[str, float]

    def to_dict(self) -> dict:
        return {"by": self.by, "success": self.success, "message": self.message,
                "split": self.split, "n_train": self.n_train, "n_test": self.n_test,
                "metrics": {k: _num(v) for k, v in self.metrics.items()},
                "params": {k: float(v) for k, v in self.params.items()}}
