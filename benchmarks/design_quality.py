"""Does ``planner design`` keep its promise, and how much narrower is it than the naive grid?

For each setting (a query and a GPU-hour budget): the design is planned and checked as the CLI
does (``--check`` simulated worlds: the promise), then ``--worlds`` *fresh* worlds (truths
drawn from the same prior, other seeds, the runs' curves with point noise and per-run offsets,
refitted by the product's fitter) measure the realised error of log D* at the query for the
chosen design and for the naive grid (every parent x the paper's ratios x equal tokens) at the
same GPU-hours. Goals: the chosen design's error lies inside its promised 95% interval in
>= 90% of worlds; its realised 95% error is at most half the naive grid's (else the table says
by how much it is not). Statistical, not timed. Usage::

    .venv/bin/python benchmarks/design_quality.py                          # 3 settings x 50 worlds
    .venv/bin/python benchmarks/design_quality.py --worlds 8 --check 8 --settings 0
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from fitting.coverage import wilson
from planner.design import DesignQuery, check, plan, resolve_prior
from planner.design.plan import HUBER_DELTA
from planner.design.simulate import simulate
from planner.query import parse_parent

SETTINGS: tuple[tuple[str, str | None, str, float, float], ...] = (
    ("8B", "llama3", "depth", 0.5, 100.0),
    ("qwen2.5-7b", None, "width", 0.35, 200.0),
    ("8B", "llama3", "2:4", 0.4, 200.0),
)
"""(params, family, method, ratio, GPU-hours) per setting."""
COVERAGE_GOAL = 0.90
WIDTH_GOAL = 0.5


def measure(setting: int, worlds: int, n_check: int, workers: int) -> dict:
    params, family, method, ratio, hours = SETTINGS[setting]
    q = DesignQuery(parse_parent(params, family), method, ratio, budget=hours)
    p = check(plan(q, resolve_prior(q)), n_check, workers=workers, seed=0)
    fresh = {name: simulate(p.prior, design, q.axes, q.slope, HUBER_DELTA, worlds=worlds, seed=1000 + k,
                            workers=workers, label=f"fresh worlds, {name}")
             for k, (name, design) in enumerate((("chosen", p.chosen), ("naive", p.naive)))}
    promised = math.log(p.factor("chosen"))
    inside = int((np.abs(fresh["chosen"].errors) <= promised).sum())
    return {"query": f"{params} {family or ''} {method} {ratio:g}".replace("  ", " "), "hours": p.chosen.gpu_hours,
            "shape": f"{len(p.chosen.parents)}x{len(p.chosen.ratios)}x{p.chosen.tokens:.2g}",
            "promised": p.factor("chosen"), "inside": inside, "worlds": worlds,
            "chosen95": math.exp(fresh["chosen"].half_width), "naive95": math.exp(fresh["naive"].half_width),
            "naive_promised": p.factor("naive"), "failed": fresh["chosen"].failed + fresh["naive"].failed,
            "rms_ratio": _rms(fresh["chosen"].errors) / _rms(fresh["naive"].errors)}


def _rms(errors: np.ndarray) -> float:
    """Root-mean-square error of log D* (a steadier comparison than a 95th percentile of 50)."""
    return float(np.sqrt(np.mean(errors ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=50, help="fresh simulated worlds per setting (default 50)")
    ap.add_argument("--check", type=int, default=64, help="worlds of the design's own check (default 64, the CLI's)")
    ap.add_argument("--settings", type=int, nargs="*", default=list(range(len(SETTINGS))))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"{'query':<26} {'GPU-h':>6} {'design':<12} {'promised':>8} {'coverage [95% Wilson]':>24} "
          f"{'chosen 95% err':>14} {'naive 95% err':>13} {'width ratio':>11} {'rms ratio':>9} {'failed':>6}")
    for s in args.settings:
        r = measure(s, args.worlds, args.check, args.workers)
        lo, hi = wilson(r["inside"], r["worlds"])
        ratio = math.log(r["chosen95"]) / math.log(r["naive95"])
        verdict = "ok" if ratio <= WIDTH_GOAL else f"{ratio / WIDTH_GOAL:.2f}x short of half"
        cov = r["inside"] / r["worlds"]
        print(f"{r['query']:<26} {r['hours']:>6.3g} {r['shape']:<12} {'x%.3f' % r['promised']:>8} "
              f"{f'{cov:.0%} [{lo:.0%}, {hi:.0%}]':>24} {'x%.3f' % r['chosen95']:>14} {'x%.3f' % r['naive95']:>13} "
              f"{ratio:>7.2f} ({verdict}) {r['rms_ratio']:>9.2f} {r['failed']:>4}"
              + ("" if cov >= COVERAGE_GOAL else "  COVERAGE BELOW 90%"))


if __name__ == "__main__":
    main()
