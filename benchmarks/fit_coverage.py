"""Coverage of nominal 95% intervals on synthetic P2 grids, with Wilson intervals.

For each design of ``fitting.coverage.DESIGNS`` (parent span, ratios, checkpoints, point noise,
correlated per-run offsets): ``--replicates`` data sets, each fitted with ``--bootstrap``
run-bootstrap refits (every refit the full multi-start), and the share of confidence
intervals that contain the truth, for every identified parameter, D* and the loss at the
largest parent and at 10x. Goal: >= 93% wherever the quantity is identified.

Replicates run in parallel over ``--workers`` processes (each refits its bootstrap
in-process, numpy single-threaded). Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fit_coverage.py                  # 40 x 100, long
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fit_coverage.py --replicates 8 --bootstrap 40 --designs 0
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor

from fitting.coverage import DESIGNS, run_design, wilson
from fitting.fit import FitConfig

GOAL = 0.93


def _one(args: tuple[int, int, int, int]) -> dict[str, list[bool]]:
    design, replicate, n_boot, seed = args
    # One replicate per task: seed offsets keep replicates distinct and the run reproducible.
    return run_design(DESIGNS[design], 1, n_boot, seed=seed * 1000 + replicate,
                      config=FitConfig(workers=1))


def measure(design: int, replicates: int, n_boot: int, seed: int, workers: int) -> dict[str, list[bool]]:
    jobs = [(design, r, n_boot, seed) for r in range(replicates)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_one, jobs))
    else:
        parts = [_one(j) for j in jobs]
    hits: dict[str, list[bool]] = {}
    for part in parts:
        for name, h in part.items():
            hits.setdefault(name, []).extend(h)
    return hits


def _cpu() -> float:
    """User + system CPU seconds of this process and its finished workers."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=40)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--designs", default="all", help="comma-separated design indices (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    chosen = range(len(DESIGNS)) if args.designs == "all" else [int(i) for i in args.designs.split(",")]
    print(f"{args.replicates} replicates x {args.bootstrap} bootstrap refits per design, "
          f"{args.workers} workers, load {os.getloadavg()[0]:.1f}")
    print(f"{'design':<52} {'quantity':<15} {'coverage':>8}  {'Wilson 95%':<15} goal")
    for d in chosen:
        t0, c0 = time.perf_counter(), _cpu()
        hits = measure(d, args.replicates, args.bootstrap, args.seed, args.workers)
        for name, h in hits.items():
            k, n = sum(h), len(h)
            lo, hi = wilson(k, n)
            verdict = "ok" if k / n >= GOAL else ("consistent" if hi >= GOAL else "BELOW")
            print(f"{DESIGNS[d].name:<52} {name:<15} {k:>3}/{n:<4} [{lo:.2f}, {hi:.2f}]    {verdict}")
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        # CPU seconds size a full run on a quiet machine; wall time moves with the load.
        print(f"  ({wall:.0f} s wall, {cpu:.0f} s CPU: {cpu / args.replicates:.0f} CPU s per replicate "
              f"at {args.bootstrap} bootstrap refits)")


if __name__ == "__main__":
    main()
