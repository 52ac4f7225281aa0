"""The token term at one (N0, rho): ``L(D) = a + k * D**-beta``, and the budget decisions on it.

At a fixed parent and ratio every card of a law with a token axis, and every pilot fit,
reduces to three numbers: the asymptote ``a`` (the loss no budget beats), the recovery scale
``k`` and the token exponent ``beta``. A card gives them through its law
(``LawCard.token_term``); a pilot run gives them through ``fitting.pilot``. The decisions (D*
under a criterion (``fitting.criteria``), the loss at a budget, their intervals) are written once
here against that form, so the planner's card-only, pilot-only and pilot + card prior answers and the engine's
online stop (``fitting.online``) are computed by the same code.

``relative`` terms measure losses as dL above the parent's L0 (a card queried without a
known L0: the planner never invents one); absolute terms are eval losses in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from data.cli import BadInput
from fitting.criteria import Criterion, Reference
from fitting.intervals import defined_enough, nan_percentiles, scalar_bounds


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

    def tokens(self, criterion: Criterion, start: Reference) -> Estimate:
        """D under ``criterion`` (its closed form per sample), with its interval; BadInput when
        unreachable."""
        solve = criterion.solver(start, self.a, self.relative)

        def defined(a: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
            with np.errstate(all="ignore"):
                d = solve(a, k, b)
            return np.where(np.isfinite(d) & (d > 0) & (k > 0), d, np.nan)

        est = self._estimate(defined)
        if not np.isfinite(est.value):
            raise BadInput("the law predicts no gain from more tokens here (k * beta <= 0): "
                           "no budget to recommend")
        return est

    def unreachable_fraction(self, criterion: Criterion) -> float:
        """Share of samples that never meet ``criterion`` (left out of intervals)."""
        return criterion.unreachable_fraction(None if self.samples is None else self.samples[:, 0])
