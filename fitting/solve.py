r"""The fitting method, written once for every law: Huber on log-loss, variable projection.

Objective (Hoffmann et al. 2022; Besiroglu et al. 2024, the Epoch replication)::

    F(theta) = sum_i w_i * Huber_delta( log pred_i(theta) - log y_i ),   delta = 1e-3

SUMMED over points: dividing by n leaves the optimum where it is but shrinks the gradient
below L-BFGS-B's default ``gtol``/``ftol``, so a mean-reduced fit stops early (a known trap).
The polish below therefore also divides F by its value at the start point, which makes the
stopping rule independent of any constant factor: a ``reduction="mean"`` fit lands on the
same optimum (tested).

Positive coefficients are fitted as ``log c``. Once the exponents are fixed, the coefficients
enter linearly in ``pred - offset``, so the search is a grid over the exponents only, with the
coefficients of each grid point solved by non-negative least squares in relative error
(``(pred - y) / y`` ~ ``log pred - log y`` near the optimum), vectorised over the grid; the
best grid points are then polished with L-BFGS-B on the exact objective with its closed-form
gradient. This reaches the optimum of Epoch's 4,500-start L-BFGS-B far faster
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

    @property
    def n_coef(self) -> int:
        return len(self.terms)


def build_design(law: Law, axes: Mapping[str, Array], y: Array, weights: Array,
                 fixed: Mapping[str, float] | None = None) -> Design:
    """Evaluate the law's log-features on the data; ``fixed`` pins parameters (coef 0 drops it)."""
    fixed = dict(fixed or {})
    terms = tuple(k for k, t in enumerate(law.terms) if fixed.get(t.coef, 1.0) != 0.0)
    free = tuple(e for e in law.exponents if e not in fixed)
    logs = {a: np.log(np.asarray(axes[a], dtype=float)) for a in law.axes}
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
                  G_mean, H_mean, log_offset, offset, np.asarray(y, float), np.asarray(weights, float))


def _logsumexp_rows(a: Array) -> Array:
    """log(sum(exp(a), axis=0)), stable; rows of -inf (no offset) are fine. Hot path."""
    top = a.max(axis=0)
    return top + np.log(np.exp(a - top).sum(axis=0))


def objective(z: Array, d: Design, delta: float, scale: float = 1.0) -> tuple[float, Array]:
    """Huber-in-log objective and its gradient at ``z = [centred log c (K), exponents (J)]``."""
    K = d.n_coef
    logc, theta = z[:K], z[K:]
    u = logc[:, None] + np.einsum("j,kjn->kn", theta, d.G) + d.H              # [K, n]
    log_pred = _logsumexp_rows(np.vstack([d.log_offset[None], u]))             # [n]
    r = log_pred - np.log(d.y)
    f = scale * float(np.sum(d.weights * huber(delta, r)))
    dr = scale * d.weights * np.clip(r, -delta, delta)                         # dF/dr
    share = np.exp(u - log_pred)                                               # dlogpred/du
    grad = np.concatenate([share @ dr, np.einsum("kn,kjn,n->j", share, d.G, dr)])
    return f, grad


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
    target, v = d.y - d.offset, d.weights / d.y ** 2                            # relative LS
    Xv = X * v                                                                  # batched BLAS below
    A = Xv @ X.transpose(0, 2, 1)                                               # [M, K, K]
    b = Xv @ target                                                             # [M, K]
    c = _nnls_small(A, b)
    pred = d.offset[None] + (c[:, None, :] @ X)[:, 0]                           # [M, n]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(pred) - np.log(d.y)[None]
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

    ``density`` < 1 thins each axis (bootstrap refits start next to the full-data optimum
    as well, so they can afford a coarser search).
    """
    axes = []
    for name in free:
        values = np.asarray(law.grid[name], float)
        keep = max(3, int(round(len(values) * density)))
        axes.append(np.linspace(values[0], values[-1], keep) if keep < len(values) else values)
    if not axes:
        return np.zeros((1, 0))
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(free))


# -- polish ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Solution:
    """One optimisation: law-ordered ``params``, summed objective, convergence report."""

    params: Array
    objective: float
    success: bool
    message: str
    n_starts: int


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


def _start_points(d: Design, grid: Array, c: Array, f: Array,
                  top_k: int) -> list[tuple[float, Array]]:
    """The ``top_k`` best grid points as (objective, solver vector); zero coefficients get a
    small floor so that their log is finite."""
    order = np.argsort(f)[:top_k]
    floor = 1e-8 * max(float(np.median(np.abs(d.y - d.offset))), 1e-300)
    return [(float(f[m]), np.concatenate([np.log(np.maximum(c[m], floor)), grid[m]])) for m in order]


def _multistart(d: Design, starts: list[tuple[float, Array]], delta: float, ftol: float,
                lazy: bool) -> tuple[Array, float, bool, str]:
    """Polish every start, keep the best; ``lazy`` skips a start whose value at the start is
    already worse than a polished optimum (bootstrap refits: the warm start goes first)."""
    best: tuple[Array, float, bool, str] | None = None
    for f_start, z0 in starts:
        if lazy and best is not None and f_start >= best[1]:
            continue
        z, val, ok, msg = polish(z0, d, delta, ftol)
        if best is None or val < best[1]:
            best = (z, val, ok, msg)
    assert best is not None
    return best


def solve(law: Law, axes: Mapping[str, Array], y: Array, weights: Array | None = None, *,
          delta: float = 1e-3, fixed: Mapping[str, float] | None = None, top_k: int = 3,
          density: float = 1.0, extra_starts: tuple[Array, ...] = (),
          reduction: str = "sum", lazy: bool = False, ftol: float = 1e-15) -> Solution:
    """Fit ``law`` to points ``(axes, y)``: grid over exponents + NNLS, then L-BFGS-B polish.

    The ``top_k`` best grid points (and ``extra_starts``, law-ordered warm starts, tried
    first) are polished on the search subset (:func:`search_points`); the best is polished
    again on all points. ``reduction="mean"`` divides the objective by n (it exists to show
    that this does not move the optimum here); ``lazy`` and a looser ``ftol`` are for
    bootstrap refits.
    """
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    if reduction == "mean":
        w = w / len(y)
    d = build_design(law, axes, y, w, fixed)
    pts = search_points(len(y))
    sub = d if len(pts) == len(y) else build_design(
        law, {a: np.asarray(axes[a], float)[pts] for a in law.axes}, y[pts], w[pts], fixed)
    grid, c, f = grid_search(sub, exponent_grid(law, sub.free, density), delta)
    warm = [to_z(p, sub) for p in extra_starts]
    starts = [(objective(z, sub, delta)[0], z) for z in warm] + _start_points(sub, grid, c, f, top_k)
    z, val, ok, msg = _multistart(sub, starts, delta, ftol, lazy)
    if sub is not d:
        z, val, ok, msg = polish(to_z(to_params(z, sub), d), d, delta, ftol)
    return Solution(to_params(z, d), val, ok, msg, len(starts))
