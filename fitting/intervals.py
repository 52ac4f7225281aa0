"""Every interval a card reports, computed in one place.

A card holds two sets of refits on runs: bootstrap samples (runs drawn with replacement) and
jackknife samples (each run left out once). An interval is the *hull* of two intervals:

- the expanded percentile interval of the bootstrap draws (:func:`percentile_levels`);
- the jackknife-t interval ``f(point) +- t_{n-1} * se_jack`` over the n runs, on the log scale
  for a positive quantity (so it stays positive and follows a skewed one).

Why both (measured with ``benchmarks/fit_coverage.py`` and leave-one-run-out refits of the
same replicates, 40 per design): on 9 runs with correlated per-run offsets the bootstrap's
spread of the loss at the edge of the fit was ~14% too small and its expanded percentile
interval covered 33/40; BCa 30/40, the basic interval 36/40, jackknife-t alone 38/40 (but
33/40 at a 10x larger parent); the hull of the two covered 39/40, 40/40 and 39/40 (loss, loss
at 10x, D*), 1.2-1.4x the percentile interval's median width. Each method misses where the
other does not: the bootstrap has too few distinct run mixtures, the jackknife is linear.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray
JACKKNIFE_MAX_WIDENING = 3.0
"""The jackknife may push each end of an interval at most this many times as far from the
point estimate as the bootstrap's end. The jackknife is linear in each run's influence and
fails for non-smooth statistics (Efron & Tibshirani 1993, ch. 11): where one leave-one-run-out
refit jumps to another basin or onto a bound (degenerate cards), the (n-1)-inflated spread
alone gave the bundled 2:4 card an interval of L - L0 of [-0.22, 0.23] around 0.0004. The
bootstrap, which leaves each run out of ~37% of its resamples, already sees that jump. On the
coverage designs the hull's median widening is 1.2-1.4x; the cap binds only in the tail."""


def percentile_levels(level: float, units: int | None) -> tuple[float, float]:
    """Percentiles (in %) of the bootstrap draws that bound a nominal ``level`` interval.

    A plain percentile interval over a run bootstrap of few runs is too narrow (measured by
    ``benchmarks/fit_coverage.py``: 86-92% for nominal 95% with 9-16 runs): the resamples
    spread like the plug-in estimate, sqrt((n-1)/n) of the unbiased one, and ignore that the
    spread itself is estimated from n runs. Hesterberg's expanded percentile interval
    (Hesterberg 2015, "What teachers should know about the bootstrap", Am. Stat. 69) reads the
    draws at tail probability Phi(-sqrt(n/(n-1)) t_{n-1}((1+level)/2)) instead of (1-level)/2;
    it tends to the plain interval as n grows. ``units=None`` (cards written before it): plain.
    """
    tail = (1 - level) / 2
    if units is not None and units >= 2:
        z = -math.sqrt(units / (units - 1)) * t_quantile(1 - tail, units - 1)
        tail = 0.5 * math.erfc(-z / math.sqrt(2.0))   # the standard normal cdf at z
    return 100 * tail, 100 * (1 - tail)


def t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with an integer ``df``, in closed form.

    Written out, with :func:`t_quantile`, because ``scipy.stats`` (or ``scipy.special``) costs
    the sub-second planner more than the rest of its cold start together, and the standard
    library has no t distribution. For integer df the cdf is a finite trigonometric sum
    (Abramowitz & Stegun 26.7.3-4): with ``theta = atan(|x| / sqrt(df))``,
    ``A = P(|T| <= |x|)`` is ``2/pi (theta + sin(theta) sum_{j<(df-1)/2} c_j cos^{2j+1}(theta))``
    for odd df and ``sin(theta) sum_{j<df/2} c_j cos^{2j}(theta)`` for even df, where
    ``c_0 = 1`` and ``c_j = c_{j-1} (2j - 1 + odd) / (2j + odd)`` (odd: 1 for odd df, else 0).
    Exact to rounding (a test checks it against ``scipy.stats.t``).
    """
    if df < 1 or df != int(df):
        raise ValueError(f"t_cdf needs a positive integer df, got {df!r}")
    theta = math.atan(abs(x) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    odd = df % 2
    term, total = (c if odd else 1.0), 0.0
    for j in range((df - 1) // 2 if odd else df // 2):
        total += term
        term *= c * c * (2 * j + 1 + odd) / (2 * j + 2 + odd)
    a = 2 / math.pi * (theta + s * total) if odd else s * total
    return 0.5 + math.copysign(0.5 * a, x)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with an integer ``df`` (``scipy.stats.t.ppf``): the
    root of :func:`t_cdf` by bisection on ``theta = atan(x / sqrt(df))`` in (-pi/2, pi/2),
    where the cdf is monotone and bounded (64 halvings of pi reach below the float resolution)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1, got {p!r}")
    lo, hi = -math.pi / 2, math.pi / 2
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        if t_cdf(math.sqrt(df) * math.tan(mid), df) < p:
            lo = mid
        else:
            hi = mid
    return math.sqrt(df) * math.tan(0.5 * (lo + hi))


def nan_percentiles(draws: Array, q: tuple[float, ...]) -> Array:
    """``np.nanpercentile(draws, q, axis=0)`` (linear interpolation) for a 2-D ``draws``.

    Written out: ``np.nanpercentile`` imports ``numpy.ma`` on first use (~45 ms of a
    sub-second planner command). Columns without a finite draw give NaN.
    """
    s = np.sort(np.where(np.isfinite(draws), draws, np.nan), axis=0)   # NaNs sort last
    n = np.isfinite(s).sum(axis=0)
    out = np.full((len(q), s.shape[1]), np.nan)
    cols = np.flatnonzero(n > 0)
    for i, p in enumerate(q):
        pos = p / 100.0 * (n[cols] - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n[cols] - 1)
        a, b = s[lo, cols], s[hi, cols]
        out[i, cols] = a + (pos - lo) * (b - a)
    return out


def jackknife_bounds(point: Array, jack: Array, level: float, *, scale: str = "auto",
                     extra_sd: float = 0.0) -> tuple[Array, Array]:
    """Jackknife-t interval per column: ``point +- t_{n-1} sqrt(se_jack^2 + extra_sd^2)``.

    Args:
        point: the full-data value per column ``[m]``.
        jack: leave-one-run-out values ``[n, m]``.
        scale: ``log`` / ``linear`` / ``auto`` (log where the point and every jackknife
            value are positive). ``extra_sd`` is on that scale (a prediction interval's scatter).

    Returns:
        (low, high), NaN where a jackknife value is not finite or n < 3.
    """
    n = jack.shape[0]
    nan = np.full(point.shape, np.nan)
    if n < 3:
        return nan, nan
    with np.errstate(all="ignore"):
        positive = (point > 0) & np.all(jack > 0, axis=0)
        use_log = positive if scale == "auto" else np.full(point.shape, scale == "log") & positive
        x = np.where(use_log, np.log(np.where(positive, jack, 1.0)), jack)
        x0 = np.where(use_log, np.log(np.where(positive, point, 1.0)), point)
        se = np.sqrt((n - 1) / n * np.sum((x - x.mean(axis=0)) ** 2, axis=0) + extra_sd ** 2)
        half = t_quantile((1 + level) / 2, n - 1) * se
        lo, hi = x0 - half, x0 + half
        lo, hi = np.where(use_log, np.exp(lo), lo), np.where(use_log, np.exp(hi), hi)
    ok = np.isfinite(point) & np.all(np.isfinite(jack), axis=0)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def draw_bounds(boot: Array, level: float, units: int | None, *, point: Array | None = None,
                jack: Array | None = None, min_finite: float = 1, scale: str = "auto",
                extra_sd: float = 0.0, floor: float | Array | None = None) -> tuple[Array, Array]:
    """The card's interval per column: hull of the expanded percentile interval of ``boot``
    ``[B, m]`` and, when ``jack`` ``[n, m]`` is given, the jackknife-t interval around ``point``
    (each end at most ``JACKKNIFE_MAX_WIDENING`` times the bootstrap's distance from the point).

    ``floor``: the least value the quantity can take whatever the parameters (a law's offset,
    e.g. L0 under P2): the symmetric jackknife half is cut there. A column with fewer than
    ``min_finite`` finite bootstrap draws has no interval (NaN): when most samples are
    undefined (e.g. a target below their asymptote) no honest one exists.
    """
    boot = np.atleast_2d(boot)
    lo, hi = nan_percentiles(boot, percentile_levels(level, units))
    enough = np.isfinite(boot).sum(axis=0) >= max(1.0, min_finite)
    if jack is not None and point is not None and len(jack):
        p = np.ravel(point)
        jlo, jhi = jackknife_bounds(p, np.atleast_2d(jack), level, scale=scale, extra_sd=extra_sd)
        with np.errstate(invalid="ignore"):
            jlo = np.fmax(jlo, p - JACKKNIFE_MAX_WIDENING * np.maximum(p - lo, 0.0))
            jhi = np.fmin(jhi, p + JACKKNIFE_MAX_WIDENING * np.maximum(hi - p, 0.0))
        if floor is not None:
            jlo = np.fmax(jlo, floor)
        lo, hi = np.fmin(lo, jlo), np.fmax(hi, jhi)
    return np.where(enough, lo, np.nan), np.where(enough, hi, np.nan)


def defined_enough(n_draws: int) -> float:
    """Finite draws a planner interval needs (of ``n_draws``): when most samples are undefined
    (e.g. a target below their asymptote) no honest interval exists."""
    return max(10, 0.5 * n_draws)


def scalar_bounds(boot: Array, level: float, units: int | None, *, point: float | None = None,
                  jack: Array | None = None, min_finite: float = 1,
                  floor: float | None = None) -> tuple[float | None, float | None]:
    """:func:`draw_bounds` of one quantity: ``boot`` ``[B]``, ``jack`` ``[n]``; None when undefined."""
    lo, hi = draw_bounds(np.ravel(boot)[:, None], level, units,
                         point=None if point is None else np.array([point], float),
                         jack=None if jack is None else np.ravel(jack)[:, None], min_finite=min_finite,
                         floor=floor)
    if not (np.isfinite(lo[0]) and np.isfinite(hi[0])):
        return None, None
    return float(lo[0]), float(hi[0])
