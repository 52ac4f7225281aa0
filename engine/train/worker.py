"""The process the ``deepspeed`` launcher starts: run a LIST of jobs in one process group.

One process pays the imports of torch/transformers/deepspeed (~5 s) and the first
``deepspeed.initialize`` (a one-time shm comm-op build) once for the whole list; each job
then gets its own ``deepspeed.initialize``. Jobs run in order, so grid parents listed first
are saved before their children load them.

A run has one writer: rank 0 holds the run's writer lock (``engine.grid.lock``) while it trains
it, and a job whose run another live process writes is not started. Started by a grid launch
(``engine.grid.lock.LAUNCH_ENV`` names it), the process stops when that launch dies.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from data.cli import run_cli
from engine.train.config import JobConfig, load_job

if TYPE_CHECKING:  # torch, on the type checker's time only: --help stays fast
    from engine.grid.lock import Lock
    from engine.train.runtime import Dist

WATCH_EVERY_S = 1.0
"""How often the watchdog looks at the launch: a second of orphaned training at most."""
TERM_GRACE_S = 30.0
"""After SIGTERM, how long before the watchdog sends SIGKILL (a handler that swallowed it)."""


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


def watch_launch(value: str | None = None) -> threading.Thread | None:
    """Stop this process when the grid launch that started it dies (``kill -9`` included).

    Why a watchdog here, and not the launch's process group or ``PR_SET_PDEATHSIG``: ``kill
    -9`` of the launch signals that one process, not its group; PDEATHSIG reaches only the
    launch's direct child (the ``deepspeed`` runner, which forwards only SIGINT/SIGTERM it
    gets itself) and fires when the forking *thread* ends, not the process. The training
    ranks sit two processes below the launch, so each rank watches the launch's pid (with its
    start time, against pid reuse) and ends itself; DeepSpeed's per-node launcher then stops
    the other ranks and exits, and the runner with it. The run keeps its checkpoint and resumes.
    """
    from engine.grid.lock import LAUNCH_ENV, process_alive

    value = os.environ.get(LAUNCH_ENV, "") if value is None else value
    pid, _, start = value.partition(":")
    if not pid.isdigit():
        return None

    def watch() -> None:
        while process_alive(int(pid), start):
            time.sleep(WATCH_EVERY_S)
        try:
            print(f"[engine.train] the launch (pid {pid}) is gone: stopping; the next launch resumes the run",
                  flush=True)
        except OSError:  # its pipe died with it
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(TERM_GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="launch-watchdog", daemon=True)
    thread.start()
    return thread


def hold_run(job: JobConfig, dist: Dist) -> tuple[Lock | None, str]:
    """(the run's writer lock on rank 0, else None; who writes it instead, '' when nobody).

    Every rank gets the same answer (rank 0 decides), so all of them skip a busy run.
    """
    from engine.grid.lock import WRITER_FILE, Lock, try_hold
    from engine.train.runtime import broadcast

    lock, busy = None, ""
    if dist.is_main:
        held = try_hold(job.run_dir / WRITER_FILE, job.run_id)
        lock = held if isinstance(held, Lock) else None
        busy = "" if lock is not None else (held.process() if held is not None else "another process")
    return lock, broadcast(busy, dist)


def run_jobs(jobs: Sequence[JobConfig]) -> dict[str, str]:
    """Run ``jobs`` in order in this process; returns run_id -> final status (``busy``: another
    process writes that run)."""
    from engine.train.runtime import init_distributed

    dist = init_distributed()
    results: dict[str, str] = {}
    for job in jobs:
        t0 = time.perf_counter()
        lock, busy = hold_run(job, dist)
        if busy:
            results[job.run_id] = "busy"
            if dist.is_main:
                print(f"[engine.train] {job.run_id}: not started: {busy} writes this run", flush=True)
            continue
        if dist.is_main:
            print(f"[engine.train] {job.run_id}: started", flush=True)
        try:
            results[job.run_id] = _run_one(job, dist)
        finally:
            if lock is not None:
                lock.release()
        if dist.is_main:
            print(f"[engine.train] {job.run_id}: {results[job.run_id]} in {time.perf_counter() - t0:.1f} s",
                  flush=True)
    return results


def _run_one(job: JobConfig, dist: Dist) -> str:
    from engine.train.recipe import run_job

    try:
        return run_job(job, dist)
    except Exception as exc:
        # One process: a job that cannot run (bad ratio for its method, missing parent)
        # must not take the rest of the list down. Several processes: a failure may be on
        # one rank only, the others would wait in a collective forever: stop them all.
        # run_job has recorded the failure in the run's run.json already.
        if dist.world > 1:
            raise
        print(f"[engine.train] {job.run_id}: failed: {type(exc).__name__}: {exc}", flush=True)
        return "failed"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    watch_launch()
    results = run_jobs(load_jobs(args.config, args.runs))
    return 1 if "failed" in results.values() else 0


if __name__ == "__main__":
    sys.exit(run_cli("engine.train", main))
