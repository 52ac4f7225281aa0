"""``fit(data, config) -> FitResult``: the point fit, the run bootstrap, decision quantities.

Uncertainty resamples whole runs with replacement (checkpoints of one run share its noise
and are not independent), as run multiplicities in the point weights: no copy of the data.
Each refit polishes a warm start from the full-data optimum first, then searches a thinned
exponent grid and polishes its best point too whenever that point (coefficients already
solved) beats the polished warm start: a resample whose optimum moved to another basin is
still found, without paying for a second polish every time. Intervals are percentiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from data.cli import BadInput
from fitting.identify import Identifiability, distinct, identify
from fitting.laws import Law, get_law, optimal_tokens
from fitting.metrics import diagnostics, score
from fitting.result import Derived, FitResult
from fitting.solve import solve
from fitting.table import COUNT_CONVENTION, FitData

Array = np.ndarray
WEIGHTINGS = ("point", "run")
BOOTSTRAP_FTOL = 1e-12
"""Refits stop at a 1e-12 relative change of the (start-normalised) objective: far below the
spread of the samples, and about half the iterations of the point fit's 1e-15."""


@dataclass(frozen=True)
class FitConfig:
    """How to fit. Every knob is here with its default."""

    delta: float = 1e-3
    """Huber threshold on the log-loss residual (Hoffmann et al., Epoch: 1e-3)."""
    weighting: str = "point"
    """``point``: every point weighs 1; ``run``: every run weighs the same in total, so a run
    with many checkpoints does not dominate."""
    n_bootstrap: int = 0
    """Run-bootstrap refits for intervals (0: point estimate only)."""
    ci_level: float = 0.95
    """Coverage of the percentile intervals."""
    seed: int = 0
    """Seed of the bootstrap resampling."""
    slope: float = 1e-3
    """P2 decision quantity: tokens where one more 1e9 tokens gains less than this (nats)."""
    top_k: int = 3
    """Best exponent-grid points polished by L-BFGS-B."""
    bootstrap_density: float = 0.3
    """Thinning of the exponent grid in bootstrap refits (they also warm-start)."""

    def __post_init__(self) -> None:
        if not self.delta > 0:
            raise BadInput(f"huber delta {self.delta!r} must be > 0")
        if self.weighting not in WEIGHTINGS:
            raise BadInput(f"weighting {self.weighting!r}; allowed: {', '.join(WEIGHTINGS)}")
        if self.n_bootstrap < 0:
            raise BadInput(f"bootstrap {self.n_bootstrap!r} must be >= 0")
        if not 0 < self.ci_level < 1:
            raise BadInput(f"ci level {self.ci_level!r} must be in (0, 1)")
        if not self.slope > 0:
            raise BadInput(f"slope {self.slope!r} must be > 0 nats per 1e9 tokens")


def point_weights(data: FitData, weighting: str) -> Array:
    """Per-point weights with mean 1 (the objective stays a sum over points)."""
    if weighting == "point":
        return np.ones(data.n_points)
    _, inverse, counts = np.unique(data.run_ids, return_inverse=True, return_counts=True)
    return data.n_points / (len(counts) * counts[inverse])


def fit(data: FitData, config: FitConfig = FitConfig()) -> FitResult:
    """Fit ``data.law`` to ``data``; bootstrap intervals when ``config.n_bootstrap > 0``."""
    law = get_law(data.law)
    ident = identify(law, data)
    weights = point_weights(data, config.weighting)
    start = time.perf_counter()
    sol = solve(law, data.axes, data.y, weights, delta=config.delta, fixed=ident.fixed,
                top_k=config.top_k)
    seconds = time.perf_counter() - start
    samples = None
    if config.n_bootstrap:
        samples = bootstrap(law, data, weights, ident, sol.params, config)
    pred = law.predict(sol.params, **data.axes)
    curves = "tokens" in data.axes
    metrics = score(pred, data.y, data.axes.get("tokens") if curves else None,
                    data.run_ids if curves else None)
    metrics.update(diagnostics(pred, data.y, data.axes.get("tokens"), data.run_ids))
    intervals = _intervals(law, samples, ident, config.ci_level)
    return FitResult(
        law=law.name, success=sol.success, message=sol.message,
        params=dict(zip(law.params, map(float, sol.params))), objective=sol.objective,
        intervals=intervals, derived=_derived(law, data, sol.params, samples, config),
        metrics=metrics, identifiable=_flag_weak(law, ident.to_dict(law), intervals),
        fit=_fit_section(data, config, sol.n_starts, seconds),
        range=data.axis_range(), data=_data_section(data), notes=data.notes,
        bootstrap_params=samples)


def _fit_section(data: FitData, config: FitConfig, n_starts: int, seconds: float) -> dict:
    return {"objective": "sum_i w_i * huber_delta(log pred_i - log y_i)", "loss": "huber",
            "delta": config.delta, "space": "log loss; positive coefficients in log space",
            "optimizer": f"variable projection (exponent grid + NNLS), L-BFGS-B polish of {n_starts} starts",
            "weighting": config.weighting, "n_points": data.n_points, "n_runs": data.n_runs,
            "seed": config.seed, "n_bootstrap": config.n_bootstrap, "bootstrap_unit": "run",
            "ci_level": config.ci_level, "seconds": round(seconds, 4)}


def _data_section(data: FitData) -> dict:
    return {"family": data.family, "method": data.method, "count_convention": COUNT_CONVENTION,
            "source": data.source, "content_hash": data.content_hash()}


# -- bootstrap ------------------------------------------------------------------------------


def _still_identified(law: Law, data: FitData, mask: Array, ident: Identifiability) -> bool:
    """A resample must support the same free parameters as the full fit (else redraw)."""
    sub = data.subset(mask)
    if law.name == "p2":
        need_sizes = 3 if "alpha" not in ident.fixed else (2 if "delta" not in ident.fixed else 1)
        return (distinct(sub.axes["params_before"]) >= need_sizes
                and ("gamma" in ident.fixed or distinct(sub.axes["ratio"]) >= 2))
    return all(distinct(v) >= 3 for v in sub.axes.values())


def bootstrap(law: Law, data: FitData, weights: Array, ident: Identifiability, point: Array,
              config: FitConfig) -> Array:
    """``[B, P]`` parameter samples from refits on runs resampled with replacement."""
    if data.n_runs < 2:
        raise BadInput(f"bootstrap needs at least 2 runs; the input has {data.n_runs}")
    rng = np.random.default_rng(config.seed)
    runs, inverse = np.unique(data.run_ids, return_inverse=True)
    samples = []
    for _ in range(config.n_bootstrap):
        for _attempt in range(50):
            counts = np.bincount(rng.integers(0, len(runs), len(runs)), minlength=len(runs))
            mult = counts[inverse].astype(float)
            if _still_identified(law, data, mult > 0, ident):
                break
        sol = solve(law, data.axes, data.y, weights * mult, delta=config.delta,
                    fixed=ident.fixed, top_k=1, density=config.bootstrap_density,
                    extra_starts=(point,), lazy=True, ftol=BOOTSTRAP_FTOL)
        samples.append(sol.params)
    return np.array(samples)


def _intervals(law: Law, samples: Array | None, ident: Identifiability,
               level: float) -> dict[str, tuple[float, float] | None]:
    out: dict[str, tuple[float, float] | None] = {}
    for j, name in enumerate(law.params):
        if samples is None or name in ident.fixed:
            out[name] = None
        else:
            lo, hi = np.percentile(samples[:, j], [50 * (1 - level), 50 * (1 + level)])
            out[name] = (float(lo), float(hi))
    return out


WEAK_DECADES = 2.0
"""A coefficient whose interval spans more than this many decades is flagged weak."""
WEAK_EXPONENT_WIDTH = 0.5
"""An exponent whose interval is wider than this is flagged weak."""


def _flag_weak(law: Law, ident: dict[str, dict],
               intervals: dict[str, tuple[float, float] | None]) -> dict[str, dict]:
    """Mark parameters the bootstrap cannot pin down (identified in principle, not by this data)."""
    for name, iv in intervals.items():
        ident[name]["weak"] = False
        if iv is None:
            continue
        lo, hi = iv
        if name in law.coefs:
            decades = np.log10(max(hi, 1e-300) / max(lo, 1e-300))
            weak, span = decades > WEAK_DECADES, f"{decades:.1f} decades"
        else:
            weak, span = hi - lo > WEAK_EXPONENT_WIDTH, f"width {hi - lo:.3g}"
        if weak:
            ident[name].update(weak=True, reason=f"weakly identified: bootstrap interval "
                               f"[{lo:.4g}, {hi:.4g}] spans {span}; do not read it alone")
    return ident


# -- decision quantities --------------------------------------------------------------------


def decision_queries(law: Law, data: FitData,
                     slope: float) -> dict[str, tuple[dict[str, float], Callable[[Array], Array]]]:
    """Quantities a decision rests on, at the edge of the data: name -> (query, f(params)).

    P2: predicted loss of the largest parent at the highest ratio after the most tokens seen,
    and the slope-criterion token budget D* there. Chinchilla: loss at the largest N and D.
    """
    if law.name == "p2":
        x = data.axes
        big = x["params_before"] == x["params_before"].max()
        q = {"params_before": float(x["params_before"].max()), "ratio": float(x["ratio"][big].max()),
             "tokens": float(x["tokens"].max()), "loss_before": float(np.median(x["loss_before"][big]))}
        loss = lambda p: law.predict(p, **q)  # noqa: E731
        dstar = lambda p: optimal_tokens(p, q["params_before"], q["ratio"], slope)  # noqa: E731
        return {"loss": (q, loss), "optimal_tokens": (
            {"params_before": q["params_before"], "ratio": q["ratio"], "slope": slope}, dstar)}
    q = {a: float(v.max()) for a, v in data.axes.items()}
    return {"loss": (q, lambda p: law.predict(p, **q))}


def _derived(law: Law, data: FitData, point: Array, samples: Array | None,
             config: FitConfig) -> dict[str, Derived]:
    out = {}
    level = config.ci_level
    for name, (query, f) in decision_queries(law, data, config.slope).items():
        value = float(np.squeeze(f(point)))
        lo = hi = None
        if samples is not None:
            vals = np.ravel(f(samples))
            lo, hi = (float(v) for v in np.percentile(vals, [50 * (1 - level), 50 * (1 + level)]))
        out[name] = Derived(name, value, lo, hi, query)
    return out
