"""``planner design``'s library: the query, the plan (delta method), its check, its summary.

``plan(query, prior)`` is cheap (the exhaustive delta-method search, no fitting): it is what
``design_summary`` reports on ``planner recommend``'s not-credible screen. ``check(plan)``
adds the simulation (``planner.design.simulate``) and widens the promise where it must.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from data.cli import BadInput
from data.models import ModelSpec
from data.units import format_count
from fitting.laws import P2
from planner.design.candidates import (CHECKPOINTS, MAX_TOKEN_EXTRAPOLATION, PAPER_RATIOS, TOKEN_LADDER,
                                       achieved_ratio, candidate_parents, candidate_ratios, check_query_ratio,
                                       make_run)
from planner.design.optimal import (PRIOR_POINTS, Z, Design, averaged_sd, build_space, choose, decision_sd,
                                    enumerate_designs, free_mask, information, materialise, naive_design, pareto,
                                    prior_points, prior_sd)
from planner.design.prior import Prior, prior_for
from planner.design.simulate import Check, promised_factor, simulate_designs
from data.compute import DEFAULT_MFU, Gpu, get_gpu
from planner.query import Parent

DEFAULT_SLOPE = 1e-3
"""D* by the slope criterion (``Law.d_star``): where one more 1e9 tokens gains 1e-3 nats."""
DEFAULT_TARGET = 0.25
"""Without a budget, the cheapest design whose 95% interval of D* is within x1.25."""
HUBER_DELTA = 1e-3
"""The fitter's Huber threshold (``fitting.fit.FitConfig.delta``; a test keeps them equal:
importing the fitter here would put scipy on ``planner recommend``'s path)."""
FRONT_ROWS = 8


@dataclass(frozen=True)
class DesignQuery:
    """What to design for and how to pay for it."""

    parent: Parent
    method: str
    ratio: float
    gpu: Gpu = field(default_factory=lambda: get_gpu("h100"))
    mfu: float = DEFAULT_MFU
    slope: float = DEFAULT_SLOPE
    budget: float | None = None
    """GPU-hours to spend (the most precise design within them)..."""
    target: float | None = None
    """...or the precision to reach: the 95% interval of D* within x(1 + target)."""

    def __post_init__(self) -> None:
        if self.budget is not None and self.target is not None:
            raise BadInput("give --budget-gpu-hours or --target-precision, not both")
        if self.budget is not None and not 0 < self.budget < math.inf:
            raise BadInput(f"bad --budget-gpu-hours {self.budget!r}: expected a positive number of GPU-hours, e.g. 100")
        if self.target is not None and not 0 < self.target < math.inf:
            raise BadInput(f"bad --target-precision {self.target!r}: expected a positive fraction, e.g. 0.25 "
                           "(95% interval of D* within x1.25)")

    @property
    def axes(self) -> dict[str, float]:
        return {"params_before": float(self.parent.params_before), "ratio": self.ratio}

    @property
    def target_sd(self) -> float:
        return math.log(1 + (self.target if self.target is not None else DEFAULT_TARGET)) / Z

    def command(self) -> str:
        size = self.parent.name or format_count(self.parent.params_before)
        return (f"planner design --params {size} --ratio {self.ratio:g} --method {self.method} "
                f"--family {self.parent.family}")


@dataclass(frozen=True)
class DesignPlan:
    """The answer: the chosen design, the naive one at equal GPU-hours, the Pareto fronts."""

    query: DesignQuery
    prior: Prior
    d_star: float
    """D* at the query under the prior's centre (where the promised interval is centred)."""
    chosen: Design
    naive: Design
    front: tuple[Design, ...]
    naive_front: tuple[Design, ...]
    reached: bool
    """False: no design reaches the target precision (``chosen`` is the most precise)."""
    token_floor: float = 0.0
    """The least budget a design may pick (the prior's D* / ``MAX_TOKEN_EXTRAPOLATION``)."""
    existing_sd: float | None = None
    """Sequential mode: sd of log D* that the runs already done give (None otherwise)."""
    checks: dict[str, Check] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        """Sequential mode: the runs already done are as precise as asked."""
        return self.existing_sd is not None and self.existing_sd <= self.query.target_sd and self.query.budget is None

    def factor(self, name: str) -> float:
        design = self.chosen if name == "chosen" else self.naive
        return promised_factor(design, self.checks.get(name))

    def interval(self, name: str) -> tuple[float, float]:
        f = self.factor(name)
        return self.d_star / f, self.d_star * f


def smallest_run(prior: Prior, specs: list[ModelSpec], ratios: list[float], method: str,
                 tokens: float) -> dict[str, float]:
    """The P2 axes at the first checkpoint of the design's smallest run (smallest parent, lowest
    ratio, least budget): where a law fitted on much smaller models first stops making sense."""
    spec = specs[0]
    ratio = achieved_ratio(spec, method, min(ratios))
    return {"params_before": float(spec.params_total), "ratio": ratio, "tokens": tokens * float(CHECKPOINTS[0]),
            "loss_before": prior.loss_before(spec)}


def resolve_prior(query: DesignQuery, prior_path: str | None = None) -> Prior:
    """``--prior``, else the family's bundled card for the method, else the weak prior."""
    from planner.cards import select_card
    from planner.design.prior import weak_prior

    specs = candidate_parents(query.parent)
    ratios = candidate_ratios(specs, query.method, query.ratio)
    try:
        sel = select_card("p2", query.parent.family, query.method, query.parent.params_before)
        exact = sel.card.family == query.parent.family and sel.card.method == query.method
        bundled = sel.card if exact else None
    except BadInput:
        bundled = None
    return prior_for(prior_path, bundled, query.parent.family,
                     smallest_run(weak_prior(), specs, ratios, query.method, float(TOKEN_LADDER[0])))


def plan(query: DesignQuery, prior: Prior, existing: np.ndarray | None = None,
         points: int = PRIOR_POINTS) -> DesignPlan:
    """The delta-method design for ``query`` at ``prior``, its variance averaged over
    ``points`` of the prior's laws (``existing``: information of runs already done, sequential
    mode).

    Raises:
        BadInput: an unreachable ratio, a budget too small for one run or for any design.
    """
    check_query_ratio(query.parent, query.method, query.ratio)
    specs = candidate_parents(query.parent)
    ratios = candidate_ratios(specs, query.method, query.ratio)
    d_star = float(np.squeeze(prior.law.d_star(prior.center, query.slope, **query.axes)))
    tokens = TOKEN_LADDER[TOKEN_LADDER >= d_star / MAX_TOKEN_EXTRAPOLATION] if math.isfinite(d_star) else TOKEN_LADDER
    tokens = tokens if len(tokens) else TOKEN_LADDER[-1:]
    _check_budget(query, specs, ratios, float(tokens[0]))
    laws = prior_points(prior, points)
    cap = prior_sd(prior, query.slope, query.axes)
    spaces = [build_space(replace(prior, center=law), specs, ratios, tokens, query.method, query.gpu, query.mfu,
                          query.axes, query.slope, HUBER_DELTA, existing) for law in laws]
    every = [enumerate_designs(s) for s in spaces]
    space, cands = spaces[0], replace(every[0], sd=averaged_sd([c.sd for c in every], cap))
    i = choose(cands, query.budget, None if query.budget is not None else query.target_sd)
    reached = i is not None
    if i is None and query.budget is not None:
        cheapest = int(np.argmin(np.where(np.isfinite(cands.sd), cands.hours, np.inf)))
        d = materialise(space, cands, cheapest, query.method, query.gpu, query.mfu)
        raise BadInput(f"bad --budget-gpu-hours {query.budget:g}: no design that identifies D* fits; the "
                       f"cheapest ({_shape(d)}) costs {d.gpu_hours:.3g} {query.gpu.name.upper()} GPU-hours")
    if i is None:
        i = int(np.argmin(cands.sd))
    chosen = materialise(space, cands, i, query.method, query.gpu, query.mfu)
    front = [materialise(space, cands, int(j), query.method, query.gpu, query.mfu) for j in pareto(cands)]
    paper = [r for r in PAPER_RATIOS if r in ratios] or ratios[:3]

    def naive(hours: float) -> Design:
        at = [naive_design(replace(prior, center=law), specs, paper, hours, query.method, query.gpu, query.mfu,
                           query.axes, query.slope, HUBER_DELTA, existing) for law in laws]
        return replace(at[0], sd=float(averaged_sd([d.sd for d in at], cap)))

    naive_front = [naive(f.gpu_hours) for f in front]
    existing_sd = None
    if existing is not None:
        existing_sd = float(decision_sd(existing, space.grad, space.free))
    return DesignPlan(query, prior, d_star, chosen, naive(chosen.gpu_hours), _thin(front), _thin(naive_front),
                      reached, float(tokens[0]), existing_sd)


def _check_budget(query: DesignQuery, specs: list[ModelSpec], ratios: list[float], tokens: float) -> None:
    if query.budget is None:
        return
    runs = [make_run(s, query.method, r, tokens, query.gpu, query.mfu) for s in specs for r in ratios]
    cheapest = min(runs, key=lambda r: r.gpu_hours)
    if cheapest.gpu_hours > query.budget:
        raise BadInput(f"bad --budget-gpu-hours {query.budget:g}: too small for even one run; the cheapest "
                       f"({cheapest.spec.name} at ratio {cheapest.ratio_target:g} for {format_count(tokens)} tokens) "
                       f"costs {cheapest.gpu_hours:.3g} {query.gpu.name.upper()} GPU-hours")


def _shape(d: Design) -> str:
    return (f"{len(d.parents)} parents x {len(d.ratios)} ratios x {format_count(d.tokens)} tokens")


def _thin(front: list[Design]) -> tuple[Design, ...]:
    """At most ``FRONT_ROWS`` designs of a front, evenly spaced in log cost."""
    if len(front) <= FRONT_ROWS:
        return tuple(front)
    idx = np.unique(np.linspace(0, len(front) - 1, FRONT_ROWS).round().astype(int))
    return tuple(front[i] for i in idx)


def check(p: DesignPlan, worlds: int, *, workers: int = 2, seed: int = 0) -> DesignPlan:
    """Simulate the chosen and the naive design (``worlds`` each); the promise widens to the
    simulation's 95th percentile error where the delta method was optimistic."""
    q = p.query
    checks = simulate_designs(p.prior, {"chosen": p.chosen, "naive": p.naive}, q.axes, q.slope, HUBER_DELTA,
                              worlds=worlds, seed=seed, workers=workers, label="checking the chosen and naive designs")
    return replace(p, checks=checks)


def design_summary(query: DesignQuery, prior: Prior | None = None) -> str:
    """One line for ``planner recommend``'s not-credible screen: the design command for this
    query and what it costs (the delta method only: no simulation, well under a second)."""
    prior = prior or resolve_prior(query)
    p = plan(query, prior, points=1)  # the centre alone: a few times cheaper, same design here
    shape = _shape(p.chosen)
    return (f"a grid on the family's real models that pins D* down: {shape}, "
            f"{p.chosen.gpu_hours:.3g} {query.gpu.name.upper()} GPU-hours for D* within x{p.factor('chosen'):.2f} "
            f"(95%, delta method at its prior; the command checks it by simulation)")


# -- sequential mode ------------------------------------------------------------------------


def runs_prior(store: str, query: DesignQuery, bootstrap: int = 50) -> tuple[Prior, np.ndarray]:
    """Fit the runs already done (``--runs STORE``) and use the fit as the prior; also the
    information those runs hold at it (added to every candidate design)."""
    from fitting.fit import FitConfig, fit
    from fitting.table import load_data
    from planner.design.prior import misfit, weak_prior

    data = load_data(store, P2.name, method=query.method, family=query.parent.family)
    if data.family is not None and data.family != query.parent.family:
        raise BadInput(f"--runs {store!r} holds family {data.family!r} runs; the query is family "
                       f"{query.parent.family!r}")
    card = fit(data, FitConfig(n_bootstrap=bootstrap, delta=HUBER_DELTA, slope=query.slope))
    specs_list = candidate_parents(query.parent)
    smallest = smallest_run(weak_prior(), specs_list, candidate_ratios(specs_list, query.method, query.ratio),
                            query.method, float(TOKEN_LADDER[0]))
    why = misfit(card.params_array, query.parent.family, smallest, f"the fit of the runs in {store}")
    if why is not None:
        raise BadInput(f"--runs {store!r}: {why}")
    specs = {s.params_total: s for s in candidate_parents(query.parent)}
    losses = {}
    for n0 in np.unique(data.axes["params_before"]):
        spec = specs.get(int(n0))
        if spec is not None:
            losses[spec.name] = float(np.median(data.axes["loss_before"][data.axes["params_before"] == n0]))
    boot = card.bootstrap_params if card.bootstrap_params is not None and len(card.bootstrap_params) else card.params_array[None]
    prior = Prior(P2, card.params_array, boot, card.scatter.sigma_point or 3e-3,
                  card.scatter.sigma_run or 3e-3, "runs",
                  f"fit of {data.n_runs} runs in {store} ({len(boot)} bootstrap laws)", losses)
    _, index = np.unique(data.run_ids, return_inverse=True)
    info = information(prior, data.axes, index, HUBER_DELTA).sum(axis=0)
    keep = free_mask(prior, data.axes)
    info[~keep] = 0.0
    info[:, ~keep] = 0.0
    return prior, info
