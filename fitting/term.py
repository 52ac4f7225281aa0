"""The token term at one (N0, rho): ``L(D) = a + k * D**-beta``, and the budget decisions on it.

At a fixed parent and ratio every card of a law with a token axis, and every pilot fit,
reduces to three numbers: the asymptote ``a`` (the loss no budget beats), the recovery scale
``k`` and the token exponent ``beta``. A card gives them through its law
(``LawCard.token_term``); a pilot run gives them through ``fitting.pilot``. The decisions (D*
under a criterion, the loss at a budget, their intervals) are written once here against that
form, so the planner's card-only, pilot-only and pilot + card prior answers and the engine's
online stop (``fitting.online``) are computed by the same code.

``relative`` terms measure losses as dL above the parent's L0 (a card queried without a
known L0: the planner never invents one); absolute terms are eval losses in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data.cli import BadInput
from fitting.intervals import defined_enough, nan_percentiles, scalar_bounds

CRITERIA = ("recover", "slope", "target_loss")
DEFAULT_RECOVER = 0.9
"""Close 90 % of the recoverable gap (README: why a fraction, and why 0.9)."""


@dataclass(frozen=True)
class Estimate:
    """A value with its interval (None without samples or when too few are finite)."""

    value: float
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": _num(self.value), "low": _num(self.low), "high": _num(self.high)}


def _num(x: float | None) -> float | None:
    """JSON-safe: NaN/inf become None."""
    return None if x is None or not np.isfinite(x) else float(x)


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` of finite ``values`` (``fitting.intervals.nan_percentiles``:
    ``np.percentile`` imports ``numpy.ma`` on first use, ~45 ms of a sub-second command)."""
    return float(nan_percentiles(np.ravel(values)[:, None], (q,))[0, 0])


def sample_interval(values: np.ndarray, level: float, units: int | None = None, *,
                    point: float | None = None, jack: np.ndarray | None = None,
                    floor: float | None = None) -> tuple[float | None, float | None]:
    """The card's interval of sampled ``values`` (``fitting.intervals``: the expanded
    percentile, hulled with the jackknife-t interval when ``jack`` values are given); None when
    most samples are undefined (no honest interval then)."""
    values = np.ravel(values)
    return scalar_bounds(values, level, units, point=point, jack=jack,
                         min_finite=defined_enough(len(values)), floor=floor)


@dataclass(frozen=True)
class Criterion:
    """How D is chosen: ``kind`` in CRITERIA and its value (F, S or L)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in CRITERIA:
            raise BadInput(f"unknown criterion {self.kind!r}; allowed: {', '.join(CRITERIA)}")
        if self.kind == "recover" and not 0.0 < self.value < 1.0:
            raise BadInput(f"bad --recover {self.value!r}: the fraction of the recoverable gap to close "
                           "must be in (0, 1), e.g. 0.9")
        if not self.value > 0:
            raise BadInput(f"bad --{self.kind.replace('_', '-')} {self.value!r}: must be positive")

    def describe(self) -> str:
        if self.kind == "slope":
            return (f"slope: D* where the next 1e9 post-training tokens lower the predicted eval loss "
                    f"by {self.value:g} nats (absolute nats per extra 1B tokens)")
        if self.kind == "target_loss":
            return f"target loss: smallest budget with predicted eval loss <= {self.value:g} nats"
        return (f"recover: close {self.value:.0%} of the recoverable gap (loss right after pruning "
                "minus the law's asymptote)")


@dataclass(frozen=True)
class TokenTerm:
    """``L(D) = a + k * D**-beta`` with posterior/bootstrap samples ``[B, 3]`` of (a, k, beta)."""

    a: float
    k: float
    beta: float
    samples: np.ndarray | None
    level: float = 0.95
    relative: bool = False
    """True: losses are dL above L0 (L0 unknown), not eval losses."""
    median_point: bool = False
    """True (posterior samples): a value is the median of its samples, not f(a, k, beta)."""
    units: int | None = None
    """Runs a run bootstrap resampled (its intervals are widened for them); None: posterior samples."""
    jackknife: np.ndarray | None = None
    """Leave-one-run-out (a, k, beta) ``[n, 3]`` of a card (None: posterior samples, old cards)."""
    floor: float | None = None
    """The least loss the law can give (L0, or 0 for dL): an interval's jackknife half stops there."""
    card_weight: float | None = None
    """Pilot + card fits: the posterior probability of the card's component of the prior on
    beta (near 1: the pilot agrees with the card and borrows it; near 0: the pilot overrode it)."""

    def _cols(self, samples: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if samples is not None:
            return samples[:, 0], samples[:, 1], samples[:, 2]
        return np.array([self.a]), np.array([self.k]), np.array([self.beta])

    def _estimate(self, f, floor: float | None = None) -> Estimate:
        with np.errstate(all="ignore"):
            value = float(f(*self._cols(None))[0])
            if self.samples is None or len(self.samples) == 0:
                return Estimate(value)
            values = np.ravel(f(*self._cols(self.samples)))
            jack = None if self.jackknife is None else np.ravel(f(*self._cols(self.jackknife)))
        if self.median_point:
            finite = values[np.isfinite(values)]
            value = percentile(finite, 50.0) if len(finite) else math.nan
        return Estimate(value, *sample_interval(values, self.level, self.units,
                                                point=None if jack is None else value, jack=jack,
                                                floor=floor))

    def loss(self, tokens: float) -> Estimate:
        """Predicted loss (or dL) after ``tokens`` post-training tokens."""
        with np.errstate(all="ignore"):
            return self._estimate(lambda a, k, b: a + k * float(tokens) ** -b, self.floor)

    def asymptote(self) -> Estimate:
        return self._estimate(lambda a, k, b: a, self.floor)

    def tokens(self, criterion: Criterion, start: "Reference") -> Estimate:
        """D under ``criterion`` (closed forms), with its interval; BadInput when unreachable."""
        if criterion.kind == "target_loss" and self.relative:
            raise BadInput(f"--target-loss {criterion.value:g} is an eval loss but the parent's L0 is unknown "
                           "(the law only gives dL above L0): pass --loss-before L0 or --pilot")
        target = self._target(criterion, start)

        def solve(a: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
            with np.errstate(all="ignore"):
                if criterion.kind == "slope":
                    d = (b * k * 1e9 / criterion.value) ** (1.0 / (b + 1.0))
                else:
                    t = target if target is not None else start.target(a, k, b, criterion.value)
                    d = (k / (t - a)) ** (1.0 / b)
                    d = np.where(t > a, d, np.nan)
            return np.where(np.isfinite(d) & (d > 0) & (k > 0), d, np.nan)

        est = self._estimate(solve)
        if not np.isfinite(est.value):
            raise BadInput("the law predicts no gain from more tokens here (k * beta <= 0): "
                           "no budget to recommend")
        return est

    def _target(self, criterion: Criterion, start: "Reference") -> float | None:
        """A fixed target loss (target_loss), None when each sample derives its own (recover)."""
        if criterion.kind != "target_loss":
            return None
        if criterion.value <= self.a:
            raise BadInput(f"--target-loss {criterion.value:g} is at or below the law's asymptote "
                           f"{self.a:.4f}: no budget reaches it; ask for a loss above the asymptote")
        return criterion.value

    def unreachable_fraction(self, criterion: Criterion) -> float:
        """Share of samples whose asymptote is at or above a fixed target (left out of intervals)."""
        if criterion.kind != "target_loss" or self.samples is None or len(self.samples) == 0:
            return 0.0
        return float(np.mean(self.samples[:, 0] >= criterion.value))


@dataclass(frozen=True)
class Reference:
    """Where the recoverable gap starts: a measured loss right after pruning, or a budget.

    ``loss`` (same scale as the term: absolute, or dL when relative) is the eval loss at
    tokens == 0 of a pilot; without one, ``tokens`` is a reference budget D_ref and the gap
    starts at the law's own L(D_ref) (P2 diverges at D = 0).
    """

    loss: float | None = None
    tokens: float | None = None
    source: str = ""

    def target(self, a: np.ndarray, k: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
        """Loss after closing ``fraction`` of ``start - a``: ``a + (1 - F) * (start - a)``."""
        start = self.loss if self.loss is not None else a + k * float(self.tokens) ** -b
        return a + (1.0 - fraction) * (np.asarray(start) - a)
