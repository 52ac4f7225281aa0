"""``engine grid plan|launch|status|cancel``: grids of prune + post-train jobs."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from data.cli import BadInput

EPILOG = """examples:
  engine grid plan grids/tiny.yaml
      validate every job and print the table (nothing runs)
  engine grid launch grids/tiny.yaml --executor local --procs-per-job 2
      run pending jobs through the deepspeed launcher; a second launch does nothing
  engine grid status grids/tiny.yaml --runs runs/tiny --json
      progress of every job (SLURM queue states merged in)
"""
ACTIONS = ("plan", "launch", "status", "cancel")
MAX_PROCS = 1024
"""Processes per job on one machine: more is a typo (the local executor starts them all)."""
MAX_RETRIES = 20
"""Relaunches of unfinished jobs: more only repeats a failure that is not going away."""


def _slurm():
    try:
        from engine.grid import slurm
    except ImportError:
        return None
    return slurm


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="engine grid", description="Plan, launch, watch and cancel grids.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("grid", metavar="GRID.yaml")
    parser.add_argument("--runs", default=None, metavar="DIR", help="run store (default: the grid's runs, or runs/<name>)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    parser.add_argument("--procs-per-job", type=int, default=1, metavar="N", help="processes per job (local)")
    parser.add_argument("--max-retries", type=int, default=1, metavar="K", help="relaunches of jobs not done (local)")
    parser.add_argument("--json", action="store_true", help="plan/status: one JSON document on stdout")
    slurm = _slurm()
    if slurm is not None:
        slurm.add_arguments(parser)
    return parser.parse_args(argv)


def _print_table(table: list[dict], columns: tuple[str, ...], as_json: bool) -> None:
    from engine.grid.status import render

    if as_json:
        print(json.dumps(table, indent=2, default=str))
    else:
        print(render(table, columns))


def _launch_local(grid, runs: Path, args: argparse.Namespace) -> int:
    from engine.grid.local import launch
    from engine.grid.lock import grid_lock
    from engine.grid.spec import find_launcher

    if not 1 <= args.procs_per_job <= MAX_PROCS:
        raise BadInput(f"--procs-per-job {args.procs_per_job} must be between 1 and {MAX_PROCS}")
    if not 0 <= args.max_retries <= MAX_RETRIES:
        raise BadInput(f"--max-retries {args.max_retries} must be between 0 and {MAX_RETRIES}")
    find_launcher()  # exit 2 before anything is written when deepspeed is missing
    from engine.grid.spec import check_shards

    check_shards(grid)
    with grid_lock(runs, grid.name):  # a second launch of this store refuses instead of racing
        result = launch(grid, runs, procs=args.procs_per_job, max_retries=args.max_retries)
    print(f"{len(result.statuses)} jobs, {result.launches} launch(es), {result.seconds:.1f} s; "
          f"{sum(s == 'done' for s in result.statuses.values())} done"
          + (f", {len(result.blocked)} blocked by a failed parent" if result.blocked else "")
          + (f"; FAILED: {len(result.unordered)} parent pair(s) not size-ordered (see above)"
             if result.unordered else ""))
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    from engine.grid.spec import load_grid
    from engine.grid.status import PLAN_COLUMNS, STATUS_COLUMNS, rows

    args = parse(argv)
    grid = load_grid(args.grid)
    runs = Path(args.runs) if args.runs else grid.default_runs()
    slurm = _slurm()
    if args.executor == "slurm" and slurm is None:
        raise BadInput("--executor slurm is not available in this installation; allowed: local")
    if args.action in ("plan", "launch"):
        from engine.grid.spec import check_shards, validate

        if args.action == "plan" and args.executor == "local":
            check_shards(grid)  # a SLURM grid's shards live on the cluster's filesystem
        validate(grid, runs, args.procs_per_job)
    if args.action == "plan":
        _print_table(rows(grid, runs), PLAN_COLUMNS, args.json)
        return 0
    if args.action == "status":
        from engine.grid.lock import owner_state

        queue = slurm.queue_states(runs) if slurm is not None and runs.is_dir() else {}
        state, owner = owner_state(runs)
        _print_table(rows(grid, runs, queue, detail=True, lock=state), STATUS_COLUMNS, args.json)
        if not args.json and owner is not None:
            print(f"lock: {state}: {owner.describe()}"
                  + (" -- that launch is gone; 'running' runs were killed and resume on the next launch"
                     if state == "stale" else ""))
        return 0
    if args.action == "cancel":
        if slurm is None or args.executor != "slurm":
            raise BadInput("cancel needs --executor slurm (local launches stop with Ctrl-C)")
        return int(slurm.cancel(grid, runs, args) or 0)
    if args.executor == "slurm":
        from engine.grid.lock import grid_lock

        if not getattr(args, "dry_run", False):
            slurm._require("sbatch", "use --dry-run to write the scripts only")  # before the lock writes runs/
        with grid_lock(runs, grid.name):  # held while submitting; SLURM owns the jobs after
            return int(slurm.launch(grid, runs, args) or 0)
    return _launch_local(grid, runs, args)
