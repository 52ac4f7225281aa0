"""``engine train``: run one or more job files through the ``deepspeed`` launcher."""

from __future__ import annotations

import argparse
import os
import sys
import subprocess
from collections.abc import Sequence

from data.cli import BadInput

EPILOG = """examples:
  engine train --config job.yaml
      one job, one process, through the deepspeed launcher
  engine train --config runs/tiny/a/job.yaml runs/tiny/b/job.yaml --procs 2
      two jobs in order in the same 2 processes (imports and setup paid once)
  engine train --config job.yaml --in-process
      no launcher: a world of one in this process (debugging, profiling)
"""


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="engine train", description="Prune and post-train (or pretrain) job files with DeepSpeed.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True, metavar="JOB.yaml",
                        help="job file(s); several run in order in the same processes")
    parser.add_argument("--procs", type=int, default=1, metavar="N",
                        help="processes (GPUs on a GPU node, CPU processes here) per job (default 1)")
    parser.add_argument("--runs", default=None, metavar="DIR", help="override every job's runs_dir")
    parser.add_argument("--in-process", action="store_true",
                        help="run here as a single process instead of spawning the launcher")
    return parser.parse_args(argv)


def validate(paths: Sequence[str], procs: int, runs: str | None) -> None:
    """Every check that needs no torch: keys, values, parent, seq-len, budget (exit 2 early)."""
    from engine.train.sources import check_budget, check_parent, check_seq_len, job_seq_len
    from engine.train.worker import load_jobs

    if procs < 1:
        raise BadInput(f"--procs {procs} must be >= 1")
    earlier: list[str] = []  # a job may load the model an earlier job of the list saves
    for job in load_jobs(paths, runs):
        check_parent(job, known_runs=earlier)
        if job.save_model:
            earlier.append(job.run_id)
        if not os.path.isdir(job.data.shards):
            raise BadInput(f"data.shards={job.data.shards!r} is not a directory (write one with 'data prepare')")
        seq_len = job_seq_len(job)
        check_seq_len(job, seq_len)
        check_budget(job, procs, seq_len)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    validate(args.config, args.procs, args.runs)
    if args.in_process:
        if args.procs != 1:
            raise BadInput(f"--in-process runs one process; got --procs {args.procs} (drop --in-process)")
        from engine.train import worker

        return worker.main(["--config", *args.config] + (["--runs", args.runs] if args.runs else []))
    from engine.grid.spec import job_command

    cmd = job_command(args.config, args.procs)
    if args.runs:
        cmd += ["--runs", args.runs]
    from engine.probe import machine_plan

    plan = machine_plan()  # the user's OMP_NUM_THREADS wins; else the cached probe decides
    threads = plan.single_threads if args.procs == 1 else max(1, plan.cores // args.procs)
    print(f"[engine] {args.procs} process(es) x {threads} thread(s): {plan.describe()}", file=sys.stderr)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.run(cmd, env=env, check=False).returncode
