"""``fit(data, config) -> LawCard``: the point fit, the run bootstrap, diagnostics, decisions.

Uncertainty resamples whole runs with replacement (checkpoints of one run share its noise and
are not independent), as run multiplicities in the point weights: no copy of the data. Every
resample is refit by the *same* global multi-start as the point fit (the exponent grid, random
starts) plus the point optimum as one more start, so a resample whose optimum lies in another
basin finds it; the card counts how many did. A resample that cannot identify the same
parameters as the full data is redrawn (and counted); after 50 failed redraws the sample is
left out and the card says how many were. Refits run in parallel over the cores (one
single-threaded process each). The same solver refits the data with each run left out once
(the jackknife). Intervals are the hull of the bootstrap's percentile interval widened for the
number of runs and the jackknife-t interval (``fitting.intervals``: why both).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from data.cli import BadInput
from fitting.card import CARD_VERSION, LawCard
from fitting.intervals import percentile_levels
from fitting.sections import Derived
from fitting.identify import Identifiability, bound_notes, identify, sloppy_directions
from fitting.laws import LAWS, Law, get_law
from fitting.metrics import diagnostics, run_report, scatter, score
from fitting.solve import SPACES, build_design, jacobian, solve, to_z
from fitting.table import COUNT_CONVENTION, FitData

Array = np.ndarray
WEIGHTINGS = ("point", "run")
MAX_BOOTSTRAP = 100_000
"""Upper bound on ``--bootstrap`` (1,000 is plenty for 95% percentiles)."""
BOOTSTRAP_FTOL = 1e-12
"""Refits stop at a 1e-12 relative change of the (start-normalised) objective: far below the
spread of the samples, and about half the iterations of the point fit's 1e-15."""
REDRAWS = 50
"""Resamples drawn per bootstrap sample before it is left out as unidentifiable."""
PARALLEL_MIN = 64
"""Fewer refits than this run in-process (starting worker processes costs about a second)."""
JACKKNIFE_MAX_RUNS = 30
"""The jackknife half of the intervals is computed up to this many runs. Its purpose is the
few-run regime, where a run bootstrap has too few distinct run mixtures (9-16 runs in
``benchmarks/fit_coverage.py``); with many units the expanded percentile interval alone is
right, and a leave-one-out jackknife of a Huber fit, a non-smooth statistic, is not (on
Chinchilla's 240 points it widened alpha's interval to 0.395 against Epoch's 0.373)."""
MIN_MIXTURES = 3
"""Distinct run mixtures a run bootstrap needs before its spread is an interval. Two runs of
two ratios identify a ratio exponent only together, so every kept resample is the data itself
and the percentiles collapse onto the point: a zero-width interval that looks like certainty."""
_DISCOVERED = frozenset(LAWS)
"""Laws a worker process can import by name (laws registered at run time refit in-process)."""


@dataclass(frozen=True)
class FitConfig:
    """How to fit. Every knob is here with its default."""

    delta: float = 1e-3
    """Huber threshold on the residual (Hoffmann et al., Epoch: 1e-3 on log loss)."""
    space: str = "log"
    """Residuals in ``log`` loss (relative error, the default) or in the ``linear`` loss."""
    weighting: str = "point"
    """``point``: every point weighs 1; ``run``: every run weighs the same in total, so a run
    with many checkpoints does not dominate."""
    n_bootstrap: int = 0
    """Run-bootstrap refits for intervals (0: point estimate only)."""
    ci_level: float = 0.95
    """Coverage of the percentile intervals."""
    seed: int = 0
    """Seed of the bootstrap resampling and of the random starts."""
    slope: float = 1e-3
    """Decision quantity D*: tokens where one more 1e9 tokens gains less than this (nats)."""
    top_k: int = 3
    """Best exponent-grid points polished by L-BFGS-B."""
    n_random: int = 64
    """Random exponent starts scored by NNLS; the best is polished too."""
    workers: int | None = None
    """Bootstrap processes (None: ``os.cpu_count()``; 1: in-process)."""

    def __post_init__(self) -> None:
        if not self.delta > 0:
            raise BadInput(f"huber delta {self.delta!r} must be > 0")
        if self.space not in SPACES:
            raise BadInput(f"space {self.space!r}; allowed: {', '.join(SPACES)}")
        if self.weighting not in WEIGHTINGS:
            raise BadInput(f"weighting {self.weighting!r}; allowed: {', '.join(WEIGHTINGS)}")
        if not 0 <= self.n_bootstrap <= MAX_BOOTSTRAP:
            raise BadInput(f"bootstrap {self.n_bootstrap!r} must be in 0..{MAX_BOOTSTRAP}")
        if not 0 < self.ci_level < 1:
            raise BadInput(f"ci level {self.ci_level!r} must be in (0, 1)")
        if not self.slope > 0:
            raise BadInput(f"slope {self.slope!r} must be > 0 nats per 1e9 tokens")
        if self.workers is not None and self.workers < 1:
            raise BadInput(f"workers {self.workers!r} must be >= 1")


def point_weights(data: FitData, weighting: str) -> Array:
    """Per-point weights with mean 1 (the objective stays a sum over points)."""
    if weighting == "point":
        return np.ones(data.n_points)
    _, inverse, counts = np.unique(data.run_ids, return_inverse=True, return_counts=True)
    return data.n_points / (len(counts) * counts[inverse])


def _solve_kwargs(config: FitConfig) -> dict:
    return {"delta": config.delta, "top_k": config.top_k, "n_random": config.n_random,
            "space": config.space}


def fit(data: FitData, config: FitConfig = FitConfig()) -> LawCard:
    """Fit ``data.law`` to ``data``; bootstrap intervals when ``config.n_bootstrap > 0``."""
    from threadpoolctl import threadpool_limits

    # The fit's matrices are small (points x parameters): BLAS threads only contend with each
    # other and with the bootstrap's worker processes. In a fresh shell OpenBLAS takes both
    # vCPUs of the CPU machine and a 20-resample fit took 22.5 s instead of 5.5 s.
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(data, config)


def _fit(data: FitData, config: FitConfig) -> LawCard:
    law = get_law(data.law)
    ident = identify(law, data.axes, data.n_points)
    weights = point_weights(data, config.weighting)
    start = time.perf_counter()
    sol = solve(law, data.axes, data.y, weights, fixed=ident.fixed, seed=config.seed,
                **_solve_kwargs(config))
    seconds = time.perf_counter() - start
    boot = bootstrap(law, data, weights, ident, sol.params, config) if config.n_bootstrap else None
    pred = law.predict(sol.params, **data.axes)
    resid = np.log(pred) - np.log(data.y) if config.space == "log" else pred - data.y
    params = dict(zip(law.params, map(float, sol.params)))
    q = percentile_levels(config.ci_level, data.n_runs)
    spread = scatter(resid, data.run_ids)
    # The card's own interval methods compute the intervals it records (one place for them).
    card = LawCard(
        law=law, params=params, version=CARD_VERSION,
        ci={"level": config.ci_level, "units": data.n_runs, "percentiles": [round(v, 4) for v in q]},
        identifiable={}, fit=_fit_section(data, config, sol.n_starts, seconds, boot),
        metrics=_metrics(law, data, pred), range=data.axis_range(), data=_data_section(data),
        created=None, success=sol.success, message=sol.message, objective=sol.objective,
        notes=data.notes + _boot_notes(boot), runs=tuple(run_report(resid, data.run_ids)),
        scatter={"space": config.space, **spread},
        bootstrap_params=None if boot is None else boot.samples,
        jackknife_params=None if boot is None else boot.jackknife)
    intervals = _param_intervals(card, ident)
    identifiable, diagnosis = _identifiability(law, data, weights, ident, sol.params, resid,
                                               intervals, config)
    ci = {**card.ci, "params": intervals,
          "derived": {k: d.to_dict() for k, d in _derived(card, data, config).items()}}
    return replace(card, ci=ci, identifiable=identifiable, diagnosis=tuple(diagnosis))


def _metrics(law: Law, data: FitData, pred: Array) -> dict[str, float]:
    """Fit quality on the points the fit saw (rmse in the target's units)."""
    tokens = data.axes.get(law.token_axis) if law.token_axis else None
    curves = tokens is not None and data.n_runs < data.n_points
    out = score(pred, data.y, tokens if curves else None, data.run_ids if curves else None)
    out.update(diagnostics(pred, data.y, tokens, data.run_ids))
    return out


def _fit_section(data: FitData, config: FitConfig, n_starts: int, seconds: float,
                 boot: "Bootstrap | None") -> dict:
    residual = "log loss" if config.space == "log" else "loss"
    out = {"objective": f"sum_i w_i * huber_delta({'log pred_i - log y_i' if config.space == 'log' else 'pred_i - y_i'})",
           "loss": "huber", "delta": config.delta, "space": config.space, "residuals": residual,
           "optimizer": (f"global multi-start: exponent grid + {config.n_random} random starts "
                         f"(NNLS coefficients), L-BFGS-B polish of the best {n_starts}, re-polished"),
           "weighting": config.weighting, "n_points": data.n_points, "n_runs": data.n_runs,
           "seed": config.seed, "n_bootstrap": config.n_bootstrap, "bootstrap_unit": "run",
           "ci_level": config.ci_level, "seconds": round(seconds, 4)}
    if boot is not None:
        out |= {"bootstrap_refit": "same multi-start as the point fit, plus the point optimum as a start",
                "bootstrap_basin_changes": boot.basin_changes, "bootstrap_redraws": boot.redraws,
                "bootstrap_left_out": boot.left_out, "bootstrap_workers": boot.workers,
                "jackknife_refits": 0 if boot.jackknife is None else len(boot.jackknife),
                "bootstrap_seconds": round(boot.seconds, 3)}
    return out


def _data_section(data: FitData) -> dict:
    out = {"family": data.family, "method": data.method, "count_convention": COUNT_CONVENTION,
           "source": data.source, "content_hash": data.content_hash()}
    # Written only when known: a card from a store that records objectives names the one it
    # was fitted on, so a check against a store (reports) reads the same runs again.
    out |= {"objective": data.objective} if data.objective is not None else {}
    return out | ({"after_warmup": True} if data.after_warmup else {})  # older cards stay byte-identical


# -- bootstrap ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    """Refit samples and what happened on the way (recorded in the card)."""

    samples: Array
    jackknife: Array | None
    """Leave-one-run-out refits (None when leaving some run out unidentifies the law)."""
    basin_changes: int
    redraws: int
    left_out: int
    workers: int
    seconds: float
    mixtures: int
    """Distinct run multisets among the kept resamples: one means every sample is the data."""


def _boot_notes(boot: Bootstrap | None) -> tuple[str, ...]:
    if boot is None:
        return ()
    notes = []
    if boot.left_out:
        notes.append(f"{boot.left_out} bootstrap resamples could not identify the law after {REDRAWS} "
                     f"redraws each and were left out; intervals use {len(boot.samples)}")
    if boot.mixtures < MIN_MIXTURES:
        notes.append(f"no intervals: of the run resamples only {boot.mixtures} distinct mixture(s) of runs "
                     f"identify the law (each run is needed, e.g. one run per ratio), so the run bootstrap "
                     f"cannot vary; more runs per cell or more cells give it one")
    return tuple(notes)


def resample_weights(law: Law, data: FitData, ident: Identifiability,
                     config: FitConfig) -> tuple[list[Array], int, int]:
    """Run multiplicities per point for every sample (seeded, independent of workers).

    Returns the multiplicity vectors, the number of redraws and of samples left out.
    """
    if data.n_runs < 2:
        raise BadInput(f"bootstrap needs at least 2 runs; the input has {data.n_runs}")
    rng = np.random.default_rng(config.seed)
    runs, inverse = np.unique(data.run_ids, return_inverse=True)
    out, redraws, left_out = [], 0, 0
    for _ in range(config.n_bootstrap):
        for attempt in range(REDRAWS):
            counts = np.bincount(rng.integers(0, len(runs), len(runs)), minlength=len(runs))
            mult = counts[inverse].astype(float)
            if _same_identification(law, data, mult > 0, ident):
                out.append(mult)
                break
            redraws += 1
        else:
            left_out += 1
    return out, redraws, left_out


def _same_identification(law: Law, data: FitData, mask: Array, ident: Identifiability) -> bool:
    """A resample must support the same free parameters as the full fit (else it is redrawn)."""
    try:
        sub = identify(law, {a: v[mask] for a, v in data.axes.items()}, int(mask.sum()))
    except BadInput:
        return False
    return sub.fixed == ident.fixed


_STATE: dict = {}


def _worker_init(state: dict) -> None:
    """One process per core, numpy single-threaded in it (the parent set the env vars)."""
    _STATE.update(state, law=get_law(state["law"]))


def _refit(index: int, mult: Array, state: dict | None = None) -> tuple[Array, bool]:
    s = state or _STATE
    law = s["law"] if isinstance(s["law"], Law) else get_law(s["law"])
    sol = solve(law, s["axes"], s["y"], s["weights"] * mult, fixed=s["fixed"],
                extra_starts=(s["point"],), seed=s["seed"] + 1 + index, ftol=BOOTSTRAP_FTOL,
                **s["kwargs"])
    return sol.params, sol.changed_basin


def _refit_chunk(jobs: list[tuple[int, Array]]) -> list[tuple[Array, bool]]:
    return [_refit(i, m) for i, m in jobs]


def bootstrap(law: Law, data: FitData, weights: Array, ident: Identifiability, point: Array,
              config: FitConfig) -> Bootstrap:
    """``[B, P]`` parameter samples from full multi-start refits on resampled runs."""
    start = time.perf_counter()
    mults, redraws, left_out = resample_weights(law, data, ident, config)
    mixtures = len({m.tobytes() for m in mults})
    refit = mults if mixtures >= MIN_MIXTURES else []  # refits of the data itself would only repeat the point
    jack_mults = leave_one_run_out(law, data, ident)
    state = {"law": law.name, "axes": data.axes, "y": data.y, "weights": weights,
             "fixed": ident.fixed, "point": point, "seed": config.seed,
             "kwargs": _solve_kwargs(config)}
    jobs = list(enumerate(refit + jack_mults))
    workers = min(config.workers or os.cpu_count() or 1, max(1, len(jobs) // 8))
    if workers > 1 and len(jobs) >= PARALLEL_MIN and law.name in _DISCOVERED:
        results = _parallel(jobs, state, workers)
    else:
        workers = 1
        results = [_refit(i, m, {**state, "law": law}) for i, m in jobs]
    boot, jack = results[:len(refit)], results[len(refit):]
    samples = np.array([p for p, _ in boot]) if boot else np.zeros((0, len(law.params)))
    return Bootstrap(samples, np.array([p for p, _ in jack]) if jack else None,
                     sum(c for _, c in boot), redraws, left_out, workers, time.perf_counter() - start, mixtures)


def leave_one_run_out(law: Law, data: FitData, ident: Identifiability) -> list[Array]:
    """Run multiplicities of the n jackknife refits (each run left out once); none at all
    when leaving some run out changes what the data identify (the jackknife needs all n), or
    outside 3..``JACKKNIFE_MAX_RUNS`` runs."""
    runs, inverse = np.unique(data.run_ids, return_inverse=True)
    if not 3 <= len(runs) <= JACKKNIFE_MAX_RUNS:
        return []
    out = []
    for r in range(len(runs)):
        mult = (inverse != r).astype(float)
        if not _same_identification(law, data, mult > 0, ident):
            return []
        out.append(mult)
    return out


def _parallel(jobs: list[tuple[int, Array]], state: dict, workers: int) -> list[tuple[Array, bool]]:
    """Refits over ``workers`` spawned processes, numpy single-threaded in each.

    spawn, not fork: a forked child inherits the parent's BLAS thread pool already started;
    the thread-count variables are read when a fresh interpreter imports numpy.
    """
    import multiprocessing

    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        chunks = [jobs[i::workers * 4] for i in range(workers * 4)]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_init, initargs=(state,)) as pool:
            parts = list(pool.map(_refit_chunk, chunks))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out: list = [None] * len(jobs)
    for chunk, part in zip(chunks, parts):
        for (i, _), res in zip(chunk, part):
            out[i] = res
    return out


def _param_intervals(card: LawCard, ident: Identifiability) -> dict[str, list[float] | None]:
    out: dict[str, list[float] | None] = {}
    for j, name in enumerate(card.law.params):
        iv = None if name in ident.fixed else card.interval(lambda p, _j=j: p[:, _j])
        out[name] = None if iv is None else [iv[0], iv[1]]
    return out


# -- identifiability after the fit ----------------------------------------------------------


WEAK_DECADES = 2.0
"""A coefficient whose interval spans more than this many decades is flagged weak."""
WEAK_EXPONENT_WIDTH = 0.5
"""An exponent whose interval is wider than this is flagged weak."""


def _identifiability(law: Law, data: FitData, weights: Array, ident: Identifiability,
                     point: Array, resid: Array, intervals: dict[str, list[float] | None],
                     config: FitConfig) -> tuple[dict[str, dict], list[str]]:
    """Card ``identifiable`` (pinned, at a bound, weak) and the diagnosis lines."""
    params = dict(zip(law.params, map(float, point)))
    out = ident.to_dict(law)
    values = law.values(data.axes)
    offset = values[law.offset] if law.offset else 0.0
    signal = float(np.median(np.abs(data.y - offset)))
    bounds = bound_notes(law, params, ident.fixed, values, signal)
    for name, note in bounds.items():
        out[name]["bound"] = note
    for name, iv in intervals.items():
        out[name]["weak"] = False
        if iv is None or name in bounds:
            continue
        lo, hi = iv
        if name in law.coefs:
            decades = np.log10(max(hi, 1e-300) / max(lo, 1e-300))
            weak, span = decades > WEAK_DECADES, f"{decades:.1f} decades"
        else:
            weak, span = hi - lo > WEAK_EXPONENT_WIDTH, f"width {hi - lo:.3g}"
        if weak:
            out[name].update(weak=True, reason=f"weakly identified: bootstrap interval "
                             f"[{lo:.4g}, {hi:.4g}] spans {span}; do not read it alone")
    d = build_design(law, data.axes, data.y, weights, ident.fixed, config.space)
    names = [f"log {law.terms[k].coef}" for k in d.terms] + list(d.free)
    jac = jacobian(to_z(point, d), d) * np.sqrt(weights)[:, None]
    free = [n for n in law.params if n not in ident.fixed and n not in bounds]
    sloppy = sloppy_directions(jac, resid * np.sqrt(weights), names, len(free))
    return out, list(bounds.values()) + sloppy


# -- decision quantities --------------------------------------------------------------------


def edge_query(law: Law, data: FitData) -> dict[str, float]:
    """The edge of the data a decision extrapolates from: the largest model size, and there
    the largest value of every other axis (the offset, e.g. L0: its median)."""
    x = data.axes
    rows = np.ones(data.n_points, bool)
    if law.size_axis:
        rows = x[law.size_axis] >= x[law.size_axis].max() * (1 - 1e-9)
    return {a: float(np.median(v[rows]) if a == law.offset else v[rows].max()) for a, v in x.items()}


def decision_queries(law: Law, data: FitData, slope: float
                     ) -> dict[str, tuple[dict[str, float], Callable[[Array], Array], bool]]:
    """name -> (query, f(params), is a loss): the loss at the edge of the data, at 10x the
    largest model, and the slope-criterion budget D* at the edge."""
    q = edge_query(law, data)
    out: dict = {"loss": (q, lambda p: law.predict(p, **q), True)}
    if law.size_axis:
        q10 = {**q, law.size_axis: 10 * q[law.size_axis]}
        out["loss_10x"] = (q10, lambda p: law.predict(p, **q10), True)
    if law.token_axis:
        qd = {a: v for a, v in q.items() if a not in (law.token_axis, law.offset)}
        out["optimal_tokens"] = ({**qd, "slope": slope}, lambda p: law.d_star(p, slope, **qd), False)
    return out


def _derived(card: LawCard, data: FitData, config: FitConfig) -> dict[str, Derived]:
    out = {}
    for name, (query, f, is_loss) in decision_queries(card.law, data, config.slope).items():
        value = float(np.squeeze(f(card.params_array)))
        lo, hi = card.interval(f, floor=card.loss_floor(**query) if is_loss else None) or (None, None)
        plo = phi = None
        pi = card.prediction_band(**query) if is_loss else None
        if pi is not None and np.isfinite(pi[0][0]):
            plo, phi = float(pi[0][0]), float(pi[1][0])
        out[name] = Derived(name, value, lo, hi, query, plo, phi)
    return out
