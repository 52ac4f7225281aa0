"""How long ``reports build`` takes on a large store, against loading that store.

Writes a synthetic run store of 200 runs x 50 evaluation points (5 parents x 4 methods x
5 ratios x pruned/random init) through ``data.runs.RunStore``, fits one P2 card per method
with the fitting package (bootstrap 50), then times in this same process:

- baseline: ``data.runs.load`` of the store (what any reader of the store pays);
- the report with every card (held-out refits included) and without cards.

Goal: the full report in under 30 s on the 2-core CPU machine. Prints the seconds,
the ratio to the baseline, and PASS/FAIL against the goal::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/report_speed.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

GOAL_S = 30.0
PARENTS = (("p-135m", 134_515_008), ("p-360m", 361_821_120), ("p-0.5b", 494_032_768),
           ("p-1.5b", 1_543_714_304), ("p-1.7b", 1_711_376_384))
METHODS = ("depth", "width", "2:4", "unstructured")


def make_store(root: Path, points: int) -> int:
    from reports.synthetic import SyntheticGrid, write_synthetic_store

    grid = SyntheticGrid(parents=PARENTS, methods=METHODS, ratios=(0.1, 0.25, 0.4, 0.55, 0.7),
                         inits=("pruned", "random"), n_points=points - 1, domains=("books", "code"))
    return len(write_synthetic_store(root, grid))


def make_cards(runs: Path, out: Path) -> list[Path]:
    from fitting.card import save_card
    from fitting.fit import FitConfig, fit
    from fitting.table import load_data

    return [save_card(fit(load_data(runs, "p2", method=m), FitConfig(n_bootstrap=50)),
                      out / f"p2_{m.replace(':', '')}.json") for m in METHODS]


def timed(fn) -> tuple[float, float, object]:
    """Wall and CPU seconds of ``fn()``: CPU time stays honest when other jobs share the cores."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - start, time.process_time() - cpu, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50, help="evaluation points per run (default 50)")
    parser.add_argument("--keep", help="write the store, cards and PDFs here instead of a temp dir")
    args = parser.parse_args()
    from data.runs import load
    from reports.build import ReportConfig, build_report

    work = Path(args.keep or tempfile.mkdtemp(prefix="report_speed_"))
    runs = work / "runs"
    n_runs = make_store(runs, args.points)
    cards = make_cards(runs, work)
    t_load, c_load, frame = timed(lambda: load(runs))
    t_bare, c_bare, _ = timed(lambda: build_report(ReportConfig(runs=runs, out=work / "curves.pdf")))
    t_full, c_full, summary = timed(lambda: build_report(ReportConfig(runs=runs, out=work / "full.pdf",
                                                                      cards=tuple(cards))))
    print(f"store: {n_runs} runs x {args.points} points = {len(frame)} rows, {len(cards)} cards ({work})")
    print(f"load average (1 min) during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':34} {'wall s':>8} {'cpu s':>8} {'wall/load':>10}")
    print(f"{'baseline data.runs.load':34} {t_load:8.2f} {c_load:8.2f} {1.0:10.1f}")
    print(f"{'report without cards':34} {t_bare:8.2f} {c_bare:8.2f} {t_bare / t_load:10.1f}")
    print(f"{f'report with {len(cards)} cards, {len(summary.pages)} pages':34} {t_full:8.2f} {c_full:8.2f} "
          f"{t_full / t_load:10.1f}")
    print(f"goal < {GOAL_S:.0f} s wall: {'PASS' if t_full < GOAL_S else 'FAIL'} "
          f"(cpu {c_full:.1f} s: {'PASS' if c_full < GOAL_S else 'FAIL'} on an idle machine)")

if __name__ == "__main__":
    main()
