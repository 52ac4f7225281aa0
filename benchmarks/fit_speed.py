"""Fit speed: variable projection vs Epoch's 4,500-start L-BFGS-B, P2 at 5,000 points, bootstrap.

Measured in one run, on this machine, against a baseline measured in the same run:

1. Chinchilla data (Epoch's 240 rows): the naive baseline is scipy L-BFGS-B from every point
   of Epoch's start grid (alpha, beta in arange(0, 2.5, 0.5), e in arange(-1, 1.5, 0.5),
   a, b in arange(0, 30, 5): 4,500 starts), Epoch's objective and settings (finite-difference
   gradient, default tolerances); also the same starts with the exact gradient (a stricter
   baseline). Ours: ``fitting.solve.solve``. Goal: same optimum (relative objective
   difference <= 1e-8, ours may be lower) and >= 100x faster.
2. A P2 fit (``fitting.fit.fit``) on 5,000 synthetic curve points: goal <= 1 s.
3. 1,000 run-bootstrap refits on the Chinchilla data, every refit the full multi-start of the
   point fit (grid + random starts + the point optimum), in parallel over the cores: goal
   <= 60 s on 2 cores. Baseline: the naive loop, the same refits one after another in one
   process (``--naive`` of them, time extrapolated to the same count).

``--starts N`` runs an evenly spaced subset of the 4,500 starts and extrapolates the baseline
time linearly (said so in the output). Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fit_speed.py            # full, minutes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fit_speed.py --starts 450 --bootstrap 200
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fit_speed.py --quick   # smoke: 20 starts, 500 points, 32 refits
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from fitting.fit import FitConfig, fit
from fitting.laws import CHINCHILLA
from fitting.solve import solve
from fitting.synthetic import p2_curves
from fitting.table import from_arrays

CSV = Path(__file__).resolve().parents[2] / "shared/datasets/svg_extracted_data.csv"


def load_epoch(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N, D = C/(6N), loss; the 5 highest-loss rows dropped (Epoch's filter, 240 rows)."""
    import pandas as pd

    df = pd.read_csv(path)
    n, c, loss = (df[k].to_numpy(float) for k in ("Model Size", "Training FLOP", "loss"))
    keep = loss < np.sort(loss)[-5]
    return n[keep], (c / (6 * n))[keep], loss[keep]


def epoch_objective(x: np.ndarray, logn: np.ndarray, logd: np.ndarray, logl: np.ndarray) -> float:
    """Epoch's notebook objective: Huber(1e-3) of LSE(a - alpha log N, b - beta log D, e) - log L."""
    a, b, e, alpha, beta = x
    pred = logsumexp([a - alpha * logn, b - beta * logd, np.full_like(logn, e)], axis=0)
    return float(np.sum(huber(1e-3, pred - logl)))


def epoch_objective_grad(x, logn, logd, logl):
    """The same objective with its exact gradient (the stricter baseline)."""
    a, b, e, alpha, beta = x
    u = np.stack([a - alpha * logn, b - beta * logd, np.full_like(logn, e)])
    pred = logsumexp(u, axis=0)
    r = pred - logl
    dr = np.clip(r, -1e-3, 1e-3)
    s = np.exp(u - pred) * dr
    grad = np.array([s[0].sum(), s[1].sum(), s[2].sum(), -(s[0] * logn).sum(), -(s[1] * logd).sum()])
    return float(np.sum(huber(1e-3, r))), grad


def epoch_starts() -> np.ndarray:
    grid = itertools.product(np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5), np.arange(-1, 1.5, 0.5),
                             np.arange(0, 30, 5), np.arange(0, 30, 5))
    return np.array([[a, b, e, alpha, beta] for alpha, beta, e, a, b in grid])


def baseline(starts: np.ndarray, args: tuple, exact: bool) -> tuple[float, np.ndarray, float]:
    """Best of L-BFGS-B from every start; returns (objective, x, seconds)."""
    t0 = time.perf_counter()
    best_f, best_x = np.inf, None
    for x0 in starts:
        if exact:
            res = minimize(epoch_objective_grad, x0, args=args, jac=True, method="L-BFGS-B")
        else:
            res = minimize(epoch_objective, x0, args=args, method="L-BFGS-B")
        if res.fun < best_f:
            best_f, best_x = float(res.fun), res.x
    return best_f, best_x, time.perf_counter() - t0


def timed(f, repeats: int = 5) -> tuple[object, float]:
    """Result and best-of-``repeats`` wall time (after one warm-up call)."""
    out = f()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t0)
    return out, best


def bench_chinchilla(n_starts: int) -> None:
    n, d, loss = load_epoch(CSV)
    args = (np.log(n), np.log(d), np.log(loss))
    sol, ours_s = timed(lambda: solve(CHINCHILLA, {"N": n, "D": d}, loss))
    p = dict(zip(CHINCHILLA.params, sol.params))
    ours_f = epoch_objective(np.log([p["A"], p["B"], p["E"]]).tolist() + [p["alpha"], p["beta"]], *args)
    starts = epoch_starts()
    idx = np.linspace(0, len(starts) - 1, min(n_starts, len(starts))).round().astype(int)
    scale = len(starts) / len(idx)
    note = "" if len(idx) == len(starts) else f" (ran {len(idx)} of {len(starts)} starts, time x{scale:.3g} extrapolated)"
    print(f"chinchilla: {len(loss)} rows; ours {ours_s * 1e3:.1f} ms, objective {ours_f:.12g}, "
          f"alpha={p['alpha']:.4f} beta={p['beta']:.4f} E={p['E']:.4f} A={p['A']:.1f} B={p['B']:.1f}")
    for exact, label in ((False, "Epoch baseline (finite-difference gradient)"),
                         (True, "baseline with exact gradient")):
        f, x, secs = baseline(starts[idx], args, exact)
        secs *= scale
        print(f"  {label}: {secs:.1f} s{note}, objective {f:.12g}; "
              f"relative objective difference (ours - base)/base = {(ours_f - f) / f:+.2e}; "
              f"speedup {secs / ours_s:.0f}x")


def bench_p2(points: int) -> None:
    per_curve = points // 25
    data = p2_curves(sizes=(0.5e9, 1e9, 3e9, 7e9, 14e9), ratios=(0.15, 0.25, 0.35, 0.5, 0.6),
                     points=per_curve, tokens=(1e6, 1e10), noise=0.003, seed=0)
    result, secs = timed(lambda: fit(data), repeats=3)
    print(f"p2: fit on {data.n_points} points ({data.n_runs} curves) in {secs:.3f} s "
          f"(goal < 1 s: {1 / secs:.1f}x margin); success={result.success}, r2={result.metrics['r2']:.5f}")


def bench_bootstrap(n_boot: int, n_naive: int) -> None:
    from fitting.fit import _refit, point_weights, resample_weights
    from fitting.identify import identify

    n, d, loss = load_epoch(CSV)
    data = from_arrays("chinchilla", {"N": n, "D": d}, loss)
    config = FitConfig(n_bootstrap=n_boot, seed=0)
    point = fit(data)
    t0 = time.perf_counter()
    result = fit(data, config)
    secs = time.perf_counter() - t0
    # The naive loop: the same refits (same resamples, same solver), one after another.
    ident = identify(CHINCHILLA, data.axes, data.n_points)
    mults, _, _ = resample_weights(CHINCHILLA, data, ident, config)
    state = {"law": CHINCHILLA, "axes": data.axes, "y": data.y, "weights": point_weights(data, "point"),
             "fixed": ident.fixed, "point": point.params_array, "seed": 0,
             "kwargs": {"delta": config.delta, "top_k": config.top_k, "n_random": config.n_random,
                        "space": config.space}}
    t0 = time.perf_counter()
    for i, m in enumerate(mults[:n_naive]):
        _refit(i, m, state)
    naive = (time.perf_counter() - t0) / max(1, min(n_naive, len(mults))) * n_boot
    iv = result.intervals
    print(f"bootstrap: {n_boot} full multi-start refits in {secs:.1f} s on {result.fit['bootstrap_workers']} "
          f"workers ({secs / n_boot * 1e3:.1f} ms each; 1000 would take {secs / n_boot * 1000:.1f} s, goal <= 60 s); "
          f"naive loop {naive:.1f} s (from {min(n_naive, len(mults))} refits), ratio {naive / secs:.2f}x; "
          f"{result.fit['bootstrap_basin_changes']} resamples changed basin; 95% alpha "
          f"[{iv['alpha'][0]:.3f}, {iv['alpha'][1]:.3f}] beta [{iv['beta'][0]:.3f}, {iv['beta'][1]:.3f}] "
          f"E [{iv['E'][0]:.3f}, {iv['E'][1]:.3f}] (Epoch: (0.317, 0.373), (0.331, 0.415), (1.769, 1.871))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=4500, help="baseline starts to run (default all 4,500)")
    parser.add_argument("--points", type=int, default=5000, help="P2 curve points (default 5,000)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap refits (default 1,000)")
    parser.add_argument("--naive", type=int, default=100, help="refits of the naive loop, extrapolated (default 100)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke settings: 20 starts, 500 points, 32 refits, naive 4 (proves it runs; no goals)")
    args = parser.parse_args()
    if args.quick:
        args.starts, args.points, args.bootstrap, args.naive = 20, 500, 32, 4
    # The machine is shared: absolute times move with its load, ratios measured here do not.
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    bench_p2(args.points)
    if not CSV.is_file():
        print(f"skipping the Chinchilla parts: {CSV} not found")
        return
    bench_bootstrap(args.bootstrap, args.naive)
    bench_chinchilla(args.starts)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
