"""The process the ``deepspeed`` launcher starts: run a LIST of jobs in one process group.

One process pays the imports of torch/transformers/deepspeed (~5 s) and the first
``deepspeed.initialize`` (a one-time shm comm-op build) once for the whole list; each job
then gets its own ``deepspeed.initialize``. Jobs run in order, so grid parents listed first
are saved before their children load them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from data.cli import run_cli
from engine.train.config import JobConfig, load_job


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.train",
                                     description="DeepSpeed worker: run job files in order (one process group).")
    parser.add_argument("--config", nargs="+", required=True, metavar="JOB.yaml")
    parser.add_argument("--runs", default=None, help="override every job's runs_dir")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # launcher habit
    return parser.parse_args(argv)


def load_jobs(paths: Sequence[str], runs: str | None = None) -> list[JobConfig]:
    """Validate every job before any runs (a bad file in the list fails the launch at once)."""
    jobs = [load_job(p) for p in paths]
    if runs is not None:
        for job in jobs:
            job.runs_dir = runs
    return jobs


def run_jobs(jobs: Sequence[JobConfig]) -> dict[str, str]:
    """Run ``jobs`` in order in this process; returns run_id -> final status."""
    from engine.train.recipe import run_job
    from engine.train.runtime import init_distributed

    dist = init_distributed()
    results: dict[str, str] = {}
    for job in jobs:
        t0 = time.perf_counter()
        try:
            results[job.run_id] = run_job(job, dist)
        except Exception as exc:
            # One process: a job that cannot run (bad ratio for its method, missing parent)
            # must not take the rest of the list down. Several processes: a failure may be on
            # one rank only, the others would wait in a collective forever: stop them all.
            if dist.world > 1:
                raise
            record_failure(job, exc)
            results[job.run_id] = "failed"
        if dist.is_main:
            print(f"[engine.train] {job.run_id}: {results[job.run_id]} in {time.perf_counter() - t0:.1f} s",
                  flush=True)
    return results


def record_failure(job: JobConfig, exc: Exception) -> None:
    """Mark ``job`` failed with the reason (creating its run.json if it never got one)."""
    from data.runs import RunStore, failure_kind

    store = RunStore(job.runs_dir)
    reason, kind = f"{type(exc).__name__}: {exc}", failure_kind(exc).value
    if store.exists(job.run_id):
        store.update(job.run_id, status="failed", reason=reason, failure=kind)
    else:
        store.write(job.run_id, {"status": "failed", "reason": reason, "failure": kind, "config": job.to_dict()})
    print(f"[engine.train] {job.run_id}: failed: {reason}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    results = run_jobs(load_jobs(args.config, args.runs))
    return 1 if "failed" in results.values() else 0


if __name__ == "__main__":
    sys.exit(run_cli("engine.train", main))
