"""The design's check: draw laws from the prior, simulate the runs' curves, refit, measure.

Each simulated world is one law drawn from the prior's samples; its curves are the design's
checkpoints under that law with point noise and a per-run offset (``Law.simulate``); the
product's own fitter (``fitting.fit.fit``) refits them, and the error is ``log D*_fit -
log D*_true`` at the query. Worlds are fitted in parallel (spawned processes, numpy
single-threaded in each), with a progress bar on stderr.

Simulation refits use a lighter multi-start than a card's fit (``SIM_FIT``): one polished
exponent-grid point instead of three and 16 random starts instead of 64. The curves are the
law itself plus noise, so the global search only has to find the basin: on simulated worlds
the two settings give the same D* within 1% (``tests/planner/test_planner_design.py``).
"""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from planner.design.candidates import Run
from planner.design.optimal import Z, Design, run_axes
from planner.design.prior import Prior

Array = np.ndarray
SIM_FIT = {"top_k": 1, "n_random": 16}
"""``FitConfig`` overrides of the simulation refits (see the module docstring)."""
CHUNK = 4
"""Worlds per task sent to a worker (fewer round trips, a progress bar that still moves)."""


@dataclass(frozen=True)
class Check:
    """What the simulation found for one design."""

    errors: Array
    """``log D*_fit - log D*_true`` per world (inf where the refit failed)."""
    promised_sd: float

    @property
    def worlds(self) -> int:
        return len(self.errors)

    @property
    def failed(self) -> int:
        return int((~np.isfinite(self.errors)).sum())

    @property
    def coverage(self) -> float:
        """Share of worlds whose error lies inside the delta method's 95% interval."""
        return float(np.mean(np.abs(self.errors) <= Z * self.promised_sd))

    @property
    def half_width(self) -> float:
        """The 95th percentile of |error| over the worlds (inf past 5% failures)."""
        return float(np.quantile(np.abs(self.errors), 0.95)) if len(self.errors) else math.inf

    @property
    def bias(self) -> float:
        finite = self.errors[np.isfinite(self.errors)]
        return float(np.median(finite)) if len(finite) else math.nan

    def to_dict(self) -> dict:
        hw = self.half_width
        return {"worlds": self.worlds, "failed": self.failed, "coverage_of_delta_interval": self.coverage,
                "error_95_factor": math.exp(hw) if math.isfinite(hw) else None,
                "median_error_factor": math.exp(self.bias) if math.isfinite(self.bias) else None}


def promised_factor(design: Design, check: Check | None) -> float:
    """The 95% interval factor a design promises: the wider of the delta method's and the
    simulation's (the check can only widen a promise, never narrow it)."""
    hw = Z * design.sd if check is None else max(Z * design.sd, check.half_width)
    return math.exp(hw)


def _worlds(prior: Prior, runs: tuple[Run, ...], worlds: int, seed: int
            ) -> tuple[dict[str, Array], Array, Array, Array]:
    """Axes, run ids, true laws ``[W, P]`` and simulated losses ``[W, n]``."""
    axes, index = run_axes(prior, list(runs))
    rng = np.random.default_rng(seed)
    truth = prior.samples[rng.integers(0, len(prior.samples), worlds)]
    y = prior.law.simulate(truth, index, rng, noise=prior.noise, run_noise=prior.run_noise, **axes)
    return axes, index.astype(str), truth, y


def _refit(job: tuple) -> list[float]:
    """log D* of the product's fit of each world in the job (nan where it fails)."""
    from data.cli import BadInput
    from fitting.fit import FitConfig, fit
    from fitting.table import FitData

    law, axes, runs, ys, query, slope, delta = job
    out = []
    for y in ys:
        data = FitData(law=law, axes=axes, y=y, run_ids=runs, source="simulated design")
        try:
            card = fit(data, FitConfig(delta=delta, workers=1, slope=slope, **SIM_FIT))
            out.append(float(np.log(np.squeeze(card.d_star(slope, **query)))))
        except (BadInput, ValueError, FloatingPointError, np.linalg.LinAlgError):
            out.append(math.nan)
    return out


def simulate_designs(prior: Prior, designs: dict[str, Design], query: dict[str, float], slope: float,
                     delta: float, *, worlds: int, seed: int = 0, workers: int = 2,
                     label: str = "simulating") -> dict[str, Check]:
    """Refit ``worlds`` simulated worlds of each design (one pool, one progress bar: starting
    worker processes costs seconds); errors of log D* at ``query`` by design name."""
    from tqdm.auto import tqdm

    truths, jobs = {}, []
    for k, (name, design) in enumerate(designs.items()):
        axes, runs, truth, y = _worlds(prior, design.runs, worlds, seed + k)
        truths[name] = np.log(np.ravel(prior.law.d_star(truth, slope, **query)))
        jobs += [(name, (prior.law.name, axes, runs, y[i:i + CHUNK], query, slope, delta))
                 for i in range(0, worlds, CHUNK)]
    fitted: list[list[float]] = [[] for _ in jobs]
    bar = tqdm(total=worlds * len(designs), desc=label, unit="world", file=sys.stderr, leave=False)
    try:
        if workers <= 1:
            for k, (_, job) in enumerate(jobs):
                fitted[k] = _refit(job)
                bar.update(len(fitted[k]))
        else:
            with _single_threaded(), ProcessPoolExecutor(workers, mp_context=_spawn()) as pool:
                futures = {pool.submit(_refit, job): k for k, (_, job) in enumerate(jobs)}
                for future in as_completed(futures):
                    fitted[futures[future]] = future.result()
                    bar.update(len(fitted[futures[future]]))
    finally:
        bar.close()
    out = {}
    for name, design in designs.items():
        got = [np.asarray(f, float) for (n, _), f in zip(jobs, fitted) if n == name]
        err = np.concatenate(got) - truths[name]
        out[name] = Check(np.where(np.isfinite(err), err, np.inf), design.sd)
    return out


def simulate(prior: Prior, design: Design, query: dict[str, float], slope: float, delta: float, *,
             worlds: int, seed: int = 0, workers: int = 2, label: str = "simulating") -> Check:
    """:func:`simulate_designs` of one design."""
    return simulate_designs(prior, {"design": design}, query, slope, delta, worlds=worlds, seed=seed,
                            workers=workers, label=label)["design"]


def _spawn():
    """spawn, not fork: a forked child inherits the parent's BLAS thread pool already started."""
    import multiprocessing

    return multiprocessing.get_context("spawn")


class _single_threaded:
    """BLAS thread-count variables set to 1 while workers start (a fresh interpreter reads them
    when it imports numpy): one process per core, not two threads fighting over each."""

    KEYS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.KEYS}
        os.environ.update({k: "1" for k in self.KEYS})

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
