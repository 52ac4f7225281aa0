"""``engine grid plan|launch|status|cancel``: grids of prune + post-train jobs.

A thin adapter over the executor interface (``engine.grid.executor``): every action builds the
chosen executor from its own options and calls ``check``/``plan``/``submit``/``status``/``cancel``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from data.cli import BadInput

EPILOG = """examples:
  engine grid plan grids/tiny.yaml
      validate every job and print the table (nothing runs)
  engine grid launch grids/tiny.yaml --executor local --procs-per-job 2
      run pending jobs through the deepspeed launcher; a second launch does nothing
  engine grid plan grids/p2-llama3.yaml --estimate --procs-per-job 8 --gpu h100 --mfu 0.4
      FLOPs, GPU-hours, cost and peak memory per GPU of every job (8 GPUs each), before submitting
  engine grid status grids/tiny.yaml --runs runs/tiny --json
      progress of every job (SLURM queue states merged in; killed/corrupt runs marked)
"""
ACTIONS = ("plan", "launch", "status", "cancel")


def _parser() -> argparse.ArgumentParser:
    from engine.grid.executor import executor_class, executor_names

    parser = argparse.ArgumentParser(prog="engine grid", description="Plan, launch, watch and cancel grids.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("grid", metavar="GRID.yaml")
    parser.add_argument("--runs", default=None, metavar="DIR", help="run store (default: the grid's runs, or runs/<name>)")
    names = executor_names()
    parser.add_argument("--executor", choices=names, default="local", help="where jobs run (default local)")
    parser.add_argument("--json", action="store_true", help="plan/status: one JSON document on stdout")
    for name in names:
        executor_class(name).add_arguments(parser)
    _estimate_arguments(parser)
    return parser


def _estimate_arguments(parser: argparse.ArgumentParser) -> None:
    from data.compute import DEFAULT_GPU, DEFAULT_MFU, GPUS

    group = parser.add_argument_group("plan --estimate (GPUs per job: --procs-per-job, or --gpus-per-job under slurm)")
    group.add_argument("--estimate", action="store_true",
                       help="plan: FLOPs, GPU-hours, cost and peak memory per GPU of every job (no shards needed)")
    group.add_argument("--gpu", default=DEFAULT_GPU, help=f"accelerator: {', '.join(GPUS)} (default {DEFAULT_GPU})")
    group.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                       help=f"model FLOPs utilisation (default {DEFAULT_MFU})")
    group.add_argument("--price", type=float, default=None, metavar="USD", help="per GPU-hour (default: the table's)")


def _print_table(table: list[dict], columns: tuple[str, ...], as_json: bool) -> None:
    from engine.grid.status import render

    if as_json:
        print(json.dumps(table, indent=2, default=str))
    else:
        print(render(table, columns))


def _launch(executor, grid, runs: Path) -> int:
    """Validate, then take the store's lock (only now is anything written), plan and submit."""
    from engine.grid.lock import grid_lock

    executor.check(grid, runs, launching=True)
    with grid_lock(runs, grid.name):  # a second launch of this store refuses instead of racing
        result = executor.submit(executor.plan(grid, runs))
    if result.waits:  # a queue owns the jobs now; submit said what it submitted
        return 0 if result.ok else 1
    done = sum(s == "done" for s in result.statuses.values())
    print(f"{len(result.statuses)} jobs, {result.launches} launch(es), {result.seconds:.1f} s; {done} done"
          + (f", {len(result.blocked)} blocked by a failed parent" if result.blocked else "")
          + ("; cancelled" if result.cancelled else "")
          + (f"; FAILED: {len(result.unordered)} parent pair(s) not size-ordered (see above)"
             if result.unordered else ""))
    return 0 if result.ok else 1


def _status(executor, grid, runs: Path, as_json: bool) -> int:
    from engine.grid.lock import owner_state
    from engine.grid.status import STATUS_COLUMNS, rows

    _print_table(rows(grid, runs, executor.status(grid, runs), detail=True), STATUS_COLUMNS, as_json)
    state, owner = owner_state(runs)
    if not as_json and owner is not None:
        print(f"lock: {state}: {owner.describe()}"
              + (" -- that launch is gone; a run it started shows running only while its own "
                 "process still writes it, killed otherwise (the next launch resumes it)"
                 if state == "stale" else ""))
    return 0


def _estimate(executor, grid, runs: Path, args: argparse.Namespace) -> int:
    """Validate every job (the shards may not exist yet), then print its cost and memory."""
    from data.compute import flops_cost, get_gpu
    from engine.grid.estimate import estimate_grid, summary, table
    from engine.grid.spec import validate
    from engine.grid.status import render

    gpu = get_gpu(args.gpu)
    flops_cost(0.0, gpu, args.mfu, args.price)  # a bad --mfu/--price fails before the grid is read
    validate(grid, runs, executor.procs)
    estimates = estimate_grid(grid, gpu, args.mfu, args.price, executor.procs)
    if args.json:
        print(json.dumps([e.to_dict() for e in estimates], indent=2))
    else:
        print(render(table(estimates, gpu)))
        print(summary(estimates, gpu, args.mfu, args.price))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from engine.grid.executor import get_executor, options_from_args, runs_path
    from engine.grid.spec import load_grid
    from engine.grid.status import PLAN_COLUMNS, rows

    parser = _parser()
    args = parser.parse_args(argv)
    if args.estimate and args.action != "plan":
        raise BadInput(f"--estimate goes with 'engine grid plan', not {args.action!r}")
    defaults = {a.dest: parser.get_default(a.dest) for a in parser._actions}  # noqa: SLF001 - argparse has no public list
    grid = load_grid(args.grid)
    runs = runs_path(args.runs or grid.default_runs())
    executor = get_executor(args.executor, **options_from_args(args.executor, args, defaults))
    if args.action == "plan" and args.estimate:
        return _estimate(executor, grid, runs, args)
    if args.action == "plan":
        executor.check(grid, runs)
        _print_table(rows(grid, runs), PLAN_COLUMNS, args.json)
        return 0
    if args.action == "status":
        return _status(executor, grid, runs, args.json)
    if args.action == "cancel":
        executor.cancel(grid, runs)
        return 0
    return _launch(executor, grid, runs)
