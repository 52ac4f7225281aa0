"""The optimal design by the delta method: Fisher information of candidate runs at the prior.

For a design (runs ``r``, each a curve of ``m`` checkpoints), the fitter's estimate of the
law's coordinates ``u`` (``Law.coordinate``) has, to first order, covariance ``I^-1`` with

    I = sum_r J_r' S_r^-1 J_r / kappa,    S_r = s_p^2 1 + s_r^2 11'

where ``J_r = d log L / d u`` at the run's checkpoints (``Law.log_jacobian``), ``s_p`` the
point noise and ``s_r`` the run's shared offset (both in log loss), and ``kappa`` the variance
inflation of the fitter's Huber loss over least squares for normal residuals. The decision's
variance is ``var(log D*) = g' I^-1 g`` with ``g = d log D* / d u`` (``Law.d_star_log_gradient``),
averaged over a few of the prior's laws (``PRIOR_POINTS``).

The search is exhaustive over what a grid expresses (``engine.grid.spec``: parents x ratios at
one token budget): every subset of >= 3 candidate parents, every 2..3 candidate ratios, every
budget of the ladder, vectorised over designs (tens of thousands, well under a second). The
Pareto front is the cheapest design at each precision.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from data.models import ModelSpec
from planner.design.candidates import MAX_RATIOS, MIN_SIZES, Run, make_run
from planner.design.prior import Prior
from data.compute import Gpu

Array = np.ndarray
LEVEL = 0.95
Z = NormalDist().inv_cdf(0.5 + LEVEL / 2)


def huber_inflation(delta: float, sigma: float) -> float:
    """``E[psi^2] / E[psi']^2`` of Huber's psi at threshold ``delta`` for N(0, sigma^2)
    residuals: how much wider a Huber fit's estimates are than least squares' (1 for a wide
    threshold, pi/2 as it tends to the median's L1)."""
    k = delta / sigma
    phi, cdf = math.exp(-k * k / 2) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(k / math.sqrt(2)))
    slope = 2 * cdf - 1
    return ((2 * cdf - 1) - 2 * k * phi + 2 * k * k * (1 - cdf)) / slope ** 2


def run_axes(prior: Prior, runs: list[Run]) -> tuple[dict[str, Array], Array]:
    """The law's axes at every checkpoint of ``runs`` and the run index of each point."""
    tokens = [r.checkpoints() for r in runs]
    m = np.array([len(t) for t in tokens])
    axes = {"params_before": np.repeat([r.params_before for r in runs], m),
            "ratio": np.repeat([r.ratio for r in runs], m),
            "tokens": np.concatenate(tokens),
            "loss_before": np.repeat([prior.loss_before(r.spec) for r in runs], m)}
    return axes, np.repeat(np.arange(len(runs)), m)


def information(prior: Prior, axes: dict[str, Array], index: Array, delta: float) -> Array:
    """``[R, P, P]``: Fisher information of each run (rows of ``index``) at the prior's centre."""
    J = prior.law.log_jacobian(prior.center, **axes)                          # [n, P]
    sp2, sr2 = prior.noise ** 2, prior.run_noise ** 2
    kappa = huber_inflation(delta, math.sqrt(sp2 + sr2))
    R = int(index.max()) + 1
    out = np.zeros((R, J.shape[1], J.shape[1]))
    for r in range(R):
        Jr = J[index == r]
        s = Jr.sum(axis=0)
        shrink = sr2 / (sp2 + len(Jr) * sr2)                                   # Sherman-Morrison
        out[r] = (Jr.T @ Jr - shrink * np.outer(s, s)) / (sp2 * kappa)
    return out


def free_mask(prior: Prior, axes: dict[str, Array]) -> Array:
    """Parameters the data inform at the centre: a coefficient whose term vanished (a card's
    collapsed ``N_C -> 0``) has no sensitivity anywhere and is held at its value."""
    J = prior.law.log_jacobian(prior.center, **axes)
    return np.abs(J).max(axis=0) > 1e-9


def decision_sd(info: Array, grad: Array, free: Array) -> Array:
    """``sqrt(g' I^-1 g)`` over a batch of information matrices ``[..., P, P]`` (inf where the
    design cannot identify the free parameters)."""
    I = info[..., free][..., free, :]
    g = grad[free]
    scale = np.sqrt(np.maximum(np.einsum("...ii->...i", I), 1e-300))       # equilibrate
    Is = I / (scale[..., :, None] * scale[..., None, :])
    gs = g / scale
    with np.errstate(all="ignore"):
        cond = np.linalg.cond(Is)
        x = np.linalg.solve(Is + 1e-14 * np.eye(len(g)), np.broadcast_to(gs, Is.shape[:-1])[..., None])[..., 0]
        var = np.einsum("...i,...i->...", gs, x)
    return np.where((cond < 1e12) & (var > 0), np.sqrt(np.abs(var)), np.inf)


@dataclass(frozen=True)
class Design:
    """A set of runs and the precision the delta method promises for log D* at the query."""

    runs: tuple[Run, ...]
    gpu_hours: float
    sd: float
    """Predicted sd of log D* at the query (delta method, variance averaged over the prior)."""

    @property
    def factor(self) -> float:
        """The 95% interval of D* is [D*/factor, D* x factor]."""
        return math.exp(Z * self.sd)

    @property
    def parents(self) -> list[ModelSpec]:
        return sorted({r.spec for r in self.runs}, key=lambda s: s.params_total)

    @property
    def ratios(self) -> list[float]:
        return sorted({r.ratio_target for r in self.runs})

    @property
    def tokens(self) -> float:
        return max(r.tokens for r in self.runs)


@dataclass(frozen=True)
class Space:
    """Every candidate run's information and cost, for the exhaustive search."""

    specs: list[ModelSpec]
    ratios: list[float]
    tokens: Array
    info: Array          # [S, Q, T, P, P]
    hours: Array         # [S, Q, T]
    grad: Array          # [P]
    free: Array          # [P] bool
    existing: Array      # [P, P] information of runs already done (sequential mode)


def build_space(prior: Prior, specs: list[ModelSpec], ratios: list[float], tokens: Array, method: str,
                gpu: Gpu, mfu: float, query: dict[str, float], slope: float, delta: float,
                existing: Array | None = None) -> Space:
    """Information and GPU-hours of every (parent, ratio, budget) candidate run."""
    runs = [make_run(s, method, q, float(t), gpu, mfu) for s in specs for q in ratios for t in tokens]
    axes, index = run_axes(prior, runs)
    info = information(prior, axes, index, delta)
    P = info.shape[-1]
    shape = (len(specs), len(ratios), len(tokens))
    grad = prior.law.d_star_log_gradient(prior.center, slope, **query)
    return Space(specs, ratios, np.asarray(tokens, float), info.reshape(shape + (P, P)),
                 np.array([r.gpu_hours for r in runs]).reshape(shape), grad, free_mask(prior, axes),
                 np.zeros((P, P)) if existing is None else existing)


@dataclass(frozen=True)
class Candidates:
    """Every design of the space, flattened: which parents, ratios, budget; cost and sd."""

    size_sets: list[tuple[int, ...]]
    ratio_sets: list[tuple[int, ...]]
    size_index: Array
    ratio_index: Array
    token_index: Array
    hours: Array
    sd: Array


def enumerate_designs(space: Space, min_sizes: int = MIN_SIZES) -> Candidates:
    """All grid-shaped designs (>= ``min_sizes`` parents, 2..``MAX_RATIOS`` ratios, one budget)."""
    S, Q = len(space.specs), len(space.ratios)
    size_sets = [c for k in range(min(min_sizes, S), S + 1) for c in itertools.combinations(range(S), k)]
    ratio_sets = [c for k in range(2, min(MAX_RATIOS, Q) + 1) for c in itertools.combinations(range(Q), k)]
    M = np.zeros((len(ratio_sets), Q))
    for i, c in enumerate(ratio_sets):
        M[i, list(c)] = 1.0
    parts = []
    for si, sizes in enumerate(size_sets):
        A = space.info[list(sizes)].sum(axis=0)                               # [Q, T, P, P]
        info = np.einsum("nq,qtab->ntab", M, A) + space.existing
        hours = M @ space.hours[list(sizes)].sum(axis=0)                       # [N, T]
        sd = decision_sd(info, space.grad, space.free)
        ri, ti = np.meshgrid(np.arange(len(ratio_sets)), np.arange(len(space.tokens)), indexing="ij")
        parts.append((np.full(ri.size, si), ri.ravel(), ti.ravel(), hours.ravel(), sd.ravel()))
    cols = [np.concatenate(c) for c in zip(*parts)]
    return Candidates(size_sets, ratio_sets, *cols)


def materialise(space: Space, cands: Candidates, i: int, method: str, gpu: Gpu, mfu: float) -> Design:
    """Design ``i`` of the enumeration as runs."""
    sizes = cands.size_sets[int(cands.size_index[i])]
    ratios = cands.ratio_sets[int(cands.ratio_index[i])]
    tokens = float(space.tokens[int(cands.token_index[i])])
    runs = tuple(make_run(space.specs[s], method, space.ratios[q], tokens, gpu, mfu) for s in sizes for q in ratios)
    return Design(runs, float(cands.hours[i]), float(cands.sd[i]))


def pareto(cands: Candidates) -> Array:
    """Indices of the Pareto front (cheapest first; each one strictly more precise)."""
    order = np.lexsort((cands.sd, cands.hours))
    best, keep = np.inf, []
    for i in order:
        if cands.sd[i] < best * (1 - 1e-9):
            best = cands.sd[i]
            keep.append(i)
    return np.array(keep, dtype=int)


def choose(cands: Candidates, budget: float | None, target_sd: float | None) -> int | None:
    """The most precise design within ``budget`` GPU-hours, or the cheapest reaching
    ``target_sd``; None when none does."""
    ok = np.isfinite(cands.sd)
    if budget is not None:
        ok &= cands.hours <= budget * (1 + 1e-9)
        if not ok.any():
            return None
        return int(np.flatnonzero(ok)[np.lexsort((cands.hours[ok], cands.sd[ok]))[0]])
    assert target_sd is not None
    ok &= cands.sd <= target_sd
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.lexsort((cands.sd[ok], cands.hours[ok]))[0]])


def naive_design(prior: Prior, specs: list[ModelSpec], ratios: list[float], hours: float, method: str,
                 gpu: Gpu, mfu: float, query: dict[str, float], slope: float, delta: float,
                 existing: Array | None = None) -> Design:
    """Every parent x ``ratios`` at the one budget that spends ``hours`` GPU-hours."""
    unit = [make_run(s, method, q, 1.0, gpu, mfu) for s in specs for q in ratios]
    tokens = hours / sum(r.gpu_hours for r in unit)
    runs = [make_run(s, method, q, tokens, gpu, mfu) for s in specs for q in ratios]
    axes, index = run_axes(prior, runs)
    info = information(prior, axes, index, delta).sum(axis=0) + (0 if existing is None else existing)
    grad = prior.law.d_star_log_gradient(prior.center, slope, **query)
    sd = float(decision_sd(info, grad, free_mask(prior, axes)))
    return Design(tuple(runs), sum(r.gpu_hours for r in runs), sd)


PRIOR_POINTS = 8
"""Laws the criterion is averaged over: the prior's centre and 7 drawn from it. The delta
method is right world by world (its z-scores have sd 1.0 on simulated worlds), but a design's
error in a world far from the centre can be several times its error at the centre; averaging
the variance over the prior (a Bayesian c-optimal design) scores designs by their error over the
prior's worlds, the quantity the simulation check measures. (On the three settings of
``benchmarks/design_quality.py`` it picks the same designs as the centre alone.)"""


def prior_points(prior: Prior, points: int = PRIOR_POINTS, seed: int = 0) -> list[Array]:
    """The prior's centre and ``points - 1`` of its drawn laws (seeded: designs reproduce)."""
    rng = np.random.default_rng(seed)
    drawn = prior.samples[rng.choice(len(prior.samples), min(points - 1, len(prior.samples)), replace=False)]
    return [prior.center] + list(drawn) if points > 1 else [prior.center]


def averaged_sd(sds: list[Array], cap: float) -> Array:
    """``sqrt(mean(var))`` over the prior's laws, each variance capped at the prior's own
    ``cap**2`` (runs never leave D* less known than the prior did)."""
    var = np.mean([np.minimum(np.asarray(s, float) ** 2, cap ** 2) for s in sds], axis=0)
    return np.sqrt(var)


def prior_sd(prior: Prior, slope: float, query: dict[str, float]) -> float:
    """The prior's own sd of log D* at the query (inf for a prior of one law)."""
    logs = np.log(np.ravel(prior.law.d_star(prior.samples, slope, **query)))
    logs = logs[np.isfinite(logs)]
    return float(np.std(logs)) if len(logs) > 1 and np.std(logs) > 0 else math.inf
