r"""The fitting method, written once for every law: Huber, variable projection, multi-start.

Objective (Hoffmann et al. 2022; Besiroglu et al. 2024, the Epoch replication)::

    F(theta) = sum_i w_i * Huber_delta( log pred_i(theta) - log y_i ),   delta = 1e-3

or, with ``space="linear"`` (Frantar et al.'s ViT fit), ``Huber_delta(pred_i - y_i)``.

SUMMED over points: dividing by n leaves the optimum where it is but shrinks the gradient
below L-BFGS-B's default ``gtol``/``ftol``, so a mean-reduced fit stops early (a known trap).
The polish below therefore also divides F by its value at the start point, which makes the
stopping rule independent of any constant factor: a ``reduction="mean"`` fit lands on the
same optimum (tested).

Positive coefficients are fitted as ``log c``. Once the exponents are fixed, the coefficients
enter linearly in ``pred - offset``, so the search is a grid over the exponents only, with the
coefficients of each grid point solved by non-negative least squares in relative error
(``(pred - y) / y`` ~ ``log pred - log y`` near the optimum), vectorised over the grid; the
best grid points, and the best of a set of random exponent draws in the grid's ranges, are
then polished with L-BFGS-B on the exact objective with its closed-form gradient; the winner
is polished again from where it stopped (a fresh L-BFGS-B memory), until that gains nothing,
so the optimum never rests on a start value. This reaches the optimum of Epoch's 4,500-start L-BFGS-B far faster
(benchmarks/fit_speed.py).

Internally each term's log-features are centred on their mean over the points, so ``log c``
and the exponents are nearly uncorrelated (a raw ``log N ~ 20`` would couple them).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber

from fitting.laws import Law

Array = np.ndarray
LOG_COEF_BOUNDS = (-120.0, 120.0)
"""Bounds on centred ``log c``: wide enough for any real law, finite so L-BFGS-B stays sane."""
GRID_MAX_POINTS = 600
"""Points the exponent-grid search looks at (an evenly spaced subset above this)."""
GRID_CHUNK_ELEMENTS = 2_000_000
"""Grid points x terms x data points held at once (memory cap of the vectorised search)."""


@dataclass(frozen=True)
class Design:
    """A law's structured form evaluated on one data set (what the objective needs).

    ``G[k, j, i]`` is the centred log-feature of free exponent ``j`` in active term ``k`` at
    point ``i``; ``H[k, i]`` collects fixed exponents. ``G_mean``/``H_mean`` undo the centring.
    """

    law: Law
    terms: tuple[int, ...]          # indices of active terms (coefficient not fixed to 0)
    free: tuple[str, ...]           # free exponent names, order of theta
    fixed: Mapping[str, float]
    G: Array                        # [K, J, n]
    H: Array                        # [K, n]
    G_mean: Array                   # [K, J]
    H_mean: Array                   # [K]
    log_offset: Array               # [n], -inf where the law has no offset
    offset: Array                   # [n]
    y: Array                        # [n]
    weights: Array                  # [n]
    space: str = "log"              # residuals in log loss ("log") or in loss ("linear")

    @property
    def n_coef(self) -> int:
        return len(self.terms)


SPACES = ("log", "linear")


def build_design(law: Law, axes: Mapping[str, Array], y: Array, weights: Array,
                 fixed: Mapping[str, float] | None = None, space: str = "log") -> Design:
    """Evaluate the law's log-features on the data; ``fixed`` pins parameters (coef 0 drops it)."""
    fixed = dict(fixed or {})
    terms = tuple(k for k, t in enumerate(law.terms) if fixed.get(t.coef, 1.0) != 0.0)
    free = tuple(e for e in law.exponents if e not in fixed)
    with np.errstate(divide="ignore"):
        logs = {a: np.log(v) for a, v in law.values(axes).items()}
    n = len(y)
    G = np.zeros((len(terms), len(free), n))
    H = np.zeros((len(terms), n))
    for row, k in enumerate(terms):
        for exponent, axis, sign in law.terms[k].factors:
            if exponent in fixed:
                H[row] += sign * fixed[exponent] * logs[axis]
            else:
                G[row, free.index(exponent)] += sign * logs[axis]
    G_mean, H_mean = G.mean(axis=-1), H.mean(axis=-1)
    offset = (np.asarray(axes[law.offset], dtype=float) if law.offset else np.zeros(n))
    with np.errstate(divide="ignore"):
        log_offset = np.log(offset)
    return Design(law, terms, free, fixed, G - G_mean[..., None], H - H_mean[..., None],
                  G_mean, H_mean, log_offset, offset, np.asarray(y, float), np.asarray(weights, float),
                  space)


def _logsumexp_rows(a: Array) -> Array:
    """log(sum(exp(a), axis=0)), stable; rows of -inf (no offset) are fine. Hot path."""
    top = a.max(axis=0)
    return top + np.log(np.exp(a - top).sum(axis=0))


def residuals_and_share(z: Array, d: Design) -> tuple[Array, Array]:
    """Residuals ``r`` (log or linear) and ``dr/du`` per term at ``z`` ([n], [K, n])."""
    K = d.n_coef
    u = z[:K, None] + np.einsum("j,kjn->kn", z[K:], d.G) + d.H                 # [K, n]
    if d.space == "log":
        log_pred = _logsumexp_rows(np.vstack([d.log_offset[None], u]))         # [n]
        return log_pred - np.log(d.y), np.exp(u - log_pred)                    # dlogpred/du
    terms = np.exp(np.minimum(u, 700.0))
    return d.offset + terms.sum(axis=0) - d.y, terms                          # dpred/du


def objective(z: Array, d: Design, delta: float, scale: float = 1.0) -> tuple[float, Array]:
    """Huber objective and its gradient at ``z = [centred log c (K), exponents (J)]``."""
    r, share = residuals_and_share(z, d)
    f = scale * float(np.sum(d.weights * huber(delta, r)))
    dr = scale * d.weights * np.clip(r, -delta, delta)                         # dF/dr
    grad = np.concatenate([share @ dr, np.einsum("kn,kjn,n->j", share, d.G, dr)])
    return f, grad


def jacobian(z: Array, d: Design) -> Array:
    """``dr/dz`` ([n, K + J]): the local geometry of the fit (sloppy directions)."""
    _, share = residuals_and_share(z, d)
    return np.concatenate([share.T, np.einsum("kn,kjn->nj", share, d.G)], axis=1)


def to_params(z: Array, d: Design) -> Array:
    """Law-ordered parameter vector from the solver's ``z`` (undoes centring and log)."""
    K = d.n_coef
    logc, theta = z[:K], z[K:]
    logc_raw = logc - d.G_mean @ theta - d.H_mean
    out = dict(d.fixed)
    for row, k in enumerate(d.terms):
        out[d.law.terms[k].coef] = float(np.exp(logc_raw[row]))
    out.update(zip(d.free, map(float, theta)))
    return np.array([out.get(name, 0.0) for name in d.law.params])


def to_z(params: Array, d: Design) -> Array:
    """Inverse of :func:`to_params` (coefficients must be positive)."""
    p = dict(zip(d.law.params, np.asarray(params, float)))
    theta = np.array([p[name] for name in d.free])
    logc_raw = np.log(np.maximum([p[d.law.terms[k].coef] for k in d.terms], 1e-300))
    return np.concatenate([logc_raw + d.G_mean @ theta + d.H_mean, theta])


# -- variable projection: exponents on a grid, coefficients by NNLS --------------------------


def _nnls_small(A: Array, b: Array) -> Array:
    """Exact NNLS for many tiny problems ``min c'Ac - 2b'c, c >= 0`` ([M, K, K], [M, K]).

    With K <= ~5 coefficients, enumerating the 2^K supports is exact (the optimum is the
    unconstrained optimum on its support) and vectorises over all M grid points at once.
    """
    M, K = b.shape
    best_c, best_val = np.zeros((M, K)), np.zeros(M)
    ridge = 1e-12 * np.einsum("mkk->m", A)[:, None, None]
    for size in range(1, K + 1):
        for support in itertools.combinations(range(K), size):
            idx = np.array(support)
            A_s = A[:, idx[:, None], idx[None, :]] + ridge * np.eye(size)
            try:
                c_s = np.linalg.solve(A_s, b[:, idx, None])[..., 0]
            except np.linalg.LinAlgError:
                continue
            val = np.einsum("mk,mkl,ml->m", c_s, A_s, c_s) - 2 * np.einsum("mk,mk->m", c_s, b[:, idx])
            ok = np.all(c_s >= 0, axis=1) & (val < best_val) & np.isfinite(val)
            best_val = np.where(ok, val, best_val)
            best_c[ok] = 0.0
            best_c[np.ix_(ok, idx)] = c_s[ok]
    return best_c


def _grid_chunk(thetas: Array, d: Design, delta: float) -> tuple[Array, Array]:
    """Centred coefficients and exact objective for a chunk of exponent grid points [M, J]."""
    X = np.exp(np.einsum("mj,kjn->mkn", thetas, d.G) + d.H[None])             # [M, K, n]
    # Least squares in the objective's own scale: relative error for log, absolute for linear.
    target, v = d.y - d.offset, (d.weights / d.y ** 2 if d.space == "log" else d.weights)
    Xv = X * v                                                                  # batched BLAS below
    A = Xv @ X.transpose(0, 2, 1)                                               # [M, K, K]
    b = Xv @ target                                                             # [M, K]
    c = _nnls_small(A, b)
    pred = d.offset[None] + (c[:, None, :] @ X)[:, 0]                           # [M, n]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(pred) - np.log(d.y)[None] if d.space == "log" else pred - d.y[None]
    f = huber(delta, r) @ d.weights
    return c, np.where(np.isfinite(f), f, np.inf)


def grid_search(d: Design, grid: Array, delta: float) -> tuple[Array, Array, Array]:
    """Variable projection over exponent grid points ``[M, J]``; returns (thetas, c, f)."""
    per = max(1, GRID_CHUNK_ELEMENTS // max(1, d.n_coef * len(d.y)))
    cs, fs = [], []
    for start in range(0, len(grid), per):
        c, f = _grid_chunk(grid[start:start + per], d, delta)
        cs.append(c)
        fs.append(f)
    return grid, np.concatenate(cs), np.concatenate(fs)


def search_points(n: int) -> Array:
    """Indices the multi-start search looks at: all, or an evenly spaced subset.

    The search only has to land in the right basin (the final polish uses every point).
    Inputs come grouped by run in token order, so an evenly spaced subset spans every curve.
    """
    return np.unique(np.linspace(0, n - 1, min(n, GRID_MAX_POINTS)).round().astype(int))


def exponent_grid(law: Law, free: tuple[str, ...], density: float = 1.0) -> Array:
    """Cartesian product of the law's per-exponent start grids, ``[M, J]``.

    ``density`` < 1 thins each axis (a cheaper search; the random starts still cover the box).
    """
    axes = []
    for name in free:
        values = np.asarray(law.grid[name], float)
        keep = max(3, int(round(len(values) * density)))
        axes.append(np.linspace(values[0], values[-1], keep) if keep < len(values) else values)
    if not axes:
        return np.zeros((1, 0))
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(free))


def random_exponents(law: Law, free: tuple[str, ...], n: int, rng: np.random.Generator) -> Array:
    """``[n, J]`` exponents drawn uniformly in the start grid's range (off-grid starts)."""
    if not free or n <= 0:
        return np.zeros((0, len(free)))
    lo = np.array([np.min(law.grid[name]) for name in free])
    hi = np.array([np.max(law.grid[name]) for name in free])
    return lo + (hi - lo) * rng.random((n, len(free)))


# -- polish ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Solution:
    """One optimisation: law-ordered ``params``, summed objective, convergence report.

    ``warm_objective`` is the optimum polished from the first warm start (a bootstrap refit's
    point optimum) on the search subset, None without one; ``origin`` says which kind of
    start won.
    """

    params: Array
    objective: float
    success: bool
    message: str
    n_starts: int
    origin: str = "grid"
    warm_objective: float | None = None
    search_objective: float | None = None
    """Best objective on the search subset (where ``warm_objective`` is measured too)."""

    @property
    def changed_basin(self) -> bool:
        """A start other than the warm one found a better optimum (by more than 1e-6)."""
        if self.warm_objective is None or self.search_objective is None:
            return False
        return self.search_objective < self.warm_objective * (1 - 1e-6)


def polish(z0: Array, d: Design, delta: float,
           ftol: float = 1e-15) -> tuple[Array, float, bool, str]:
    """L-BFGS-B from ``z0`` on the exact objective, normalised by its start value (see top)."""
    f0, _ = objective(z0, d, delta)
    scale = 1.0 / f0 if f0 > 0 else 1.0
    bounds = [LOG_COEF_BOUNDS] * d.n_coef + [d.law.bounds[name] for name in d.free]
    z0 = np.clip(z0, [b[0] for b in bounds], [b[1] for b in bounds])
    res = minimize(objective, z0, args=(d, delta, scale), jac=True, method="L-BFGS-B",
                   bounds=bounds, options={"ftol": ftol, "gtol": 1e-11, "maxiter": 10_000,
                                           "maxls": 50})
    # At this tolerance a failed line search means no representable decrease is left.
    ok = bool(res.success) or "ABNORMAL" in str(res.message)
    return res.x, float(res.fun / scale), bool(ok and np.isfinite(res.fun)), str(res.message)


def repolish(z: Array, val: float, d: Design, delta: float, ftol: float,
             rounds: int = 3) -> tuple[Array, float, bool, str]:
    """Restart L-BFGS-B where it stopped until a restart gains nothing.

    A far outlier puts most residuals of one run on Huber's linear branch: the curvature
    L-BFGS-B has learnt is then wrong and it can stop at a start value, reporting success. A
    fresh start from there (new memory, new normalisation) walks on.
    """
    ok, msg = True, "converged"
    for _ in range(rounds):
        z_new, v_new, ok, msg = polish(z, d, delta, ftol)
        if not v_new < val * (1 - 1e-12):
            break
        z, val = z_new, v_new
    return z, val, ok, msg


def _start_points(d: Design, grid: Array, c: Array, f: Array,
                  top_k: int) -> list[tuple[float, Array]]:
    """The ``top_k`` best grid points as (objective, solver vector); zero coefficients get a
    small floor so that their log is finite."""
    order = np.argsort(f)[:top_k]
    floor = 1e-8 * max(float(np.median(np.abs(d.y - d.offset))), 1e-300)
    return [(float(f[m]), np.concatenate([np.log(np.maximum(c[m], floor)), grid[m]])) for m in order]


def _multistart(d: Design, starts: list[tuple[str, Array]], delta: float,
                ftol: float) -> tuple[Array, float, bool, str, str, float | None]:
    """Polish every start, keep the best; the winner is polished again (:func:`repolish`)."""
    best: tuple[Array, float, bool, str, str] | None = None
    warm = None
    for origin, z0 in starts:
        z, val, ok, msg = polish(z0, d, delta, ftol)
        if origin == "warm" and warm is None:
            warm = val
        if best is None or val < best[1]:
            best = (z, val, ok, msg, origin)
    assert best is not None
    z, val, ok, msg = repolish(best[0], best[1], d, delta, ftol)
    return z, val, ok if val < best[1] else best[2], msg if val < best[1] else best[3], best[4], warm


def solve(law: Law, axes: Mapping[str, Array], y: Array, weights: Array | None = None, *,
          delta: float = 1e-3, fixed: Mapping[str, float] | None = None, top_k: int = 3,
          density: float = 1.0, extra_starts: tuple[Array, ...] = (), n_random: int = 64,
          random_polish: int = 1, seed: int = 0, space: str = "log",
          reduction: str = "sum", ftol: float = 1e-15) -> Solution:
    """Fit ``law`` to points ``(axes, y)``: global multi-start, then L-BFGS-B polish.

    Starts: ``extra_starts`` (law-ordered warm starts, e.g. the point optimum for a bootstrap
    refit), the ``top_k`` best points of the exponent grid, and the ``random_polish`` best of
    ``n_random`` random exponent draws (coefficients of grid and random points solved by
    NNLS). Each is polished on the search subset (:func:`search_points`); the best is polished
    on all points. ``reduction="mean"`` divides the objective by n (it exists to show that
    this does not move the optimum).
    """
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    if reduction == "mean":
        w = w / len(y)
    d = build_design(law, axes, y, w, fixed, space)
    pts = search_points(len(y))
    sub = d if len(pts) == len(y) else build_design(
        law, {a: np.asarray(axes[a], float)[pts] for a in law.axes}, y[pts], w[pts], fixed, space)
    grid, c, f = grid_search(sub, exponent_grid(law, sub.free, density), delta)
    starts = [("warm", to_z(p, sub)) for p in extra_starts]
    starts += [("grid", z) for _, z in _start_points(sub, grid, c, f, top_k)]
    rand = random_exponents(law, sub.free, n_random, np.random.default_rng(seed))
    if len(rand) and random_polish > 0:
        rgrid, rc, rf = grid_search(sub, rand, delta)
        starts += [("random", z) for _, z in _start_points(sub, rgrid, rc, rf, random_polish)]
    z, val, ok, msg, origin, warm = _multistart(sub, starts, delta, ftol)
    searched = val
    if sub is not d:
        z, val, ok, msg = polish(to_z(to_params(z, sub), d), d, delta, ftol)
        z, val, _, _ = repolish(z, val, d, delta, ftol)
    return Solution(to_params(z, d), val, ok, msg, len(starts), origin, warm, searched)
