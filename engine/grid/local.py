"""The local executor: run a grid's pending jobs through the ``deepspeed`` launcher.

Jobs are batched: ONE launcher invocation runs a list of jobs in the same processes, so the
~5 s of imports and the first ``deepspeed.initialize`` are paid once per launch, not per job.
Stage 1 pretrains the grid's preset parents, stage 2 runs every post-training job whose
parent is done. Done runs are skipped (by this executor and again by the worker), killed
runs resume from their checkpoint, failed ones are retried up to ``max_retries`` times.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data.runs import RunStore
from engine.grid.spec import Grid, Job, job_command, write_job_files

LOG_DIR = "_logs"


@dataclass
class LaunchResult:
    """What a ``launch`` did: per-job final status and the launcher invocations it made."""

    statuses: dict[str, str] = field(default_factory=dict)
    launches: int = 0
    seconds: float = 0.0
    blocked: list[str] = field(default_factory=list)
    """Post-training jobs not run because their parent never finished."""

    @property
    def ok(self) -> bool:
        return all(s == "done" for s in self.statuses.values()) and not self.blocked


def threads_per_process(procs: int) -> str:
    """OMP threads per training process: the user's setting, else the cores shared evenly.

    torch's default (every core per process) oversubscribes when several ranks share a CPU;
    a flat 1 leaves cores idle when one process runs alone.
    """
    return os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // max(1, procs)))


def _stream(cmd: list[str], log: Path, echo: Callable[[str], None], procs: int = 1) -> int:
    """Run ``cmd``, teeing its output to ``log``; only the per-job summary lines are echoed."""
    env = {**os.environ, "OMP_NUM_THREADS": threads_per_process(procs), "PYTHONUNBUFFERED": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               text=True, env=env) as proc:
        fh.write("$ " + " ".join(cmd) + "\n")
        for line in proc.stdout:  # type: ignore[union-attr]
            fh.write(line)
            if "[engine.train]" in line:
                echo(line.rstrip().split("[engine.train] ", 1)[-1])
        return proc.wait()


def _deterministic_failure(store: RunStore, run_id: str) -> bool:
    """Bad input and divergence fail the same way again: retrying them only burns time."""
    if store.status(run_id) != "failed":
        return False
    reason = store.read(run_id).get("reason") or ""
    return reason.startswith(("BadInput:", "diverged:"))


def _run_stage(jobs: list[Job], files: dict[str, Path], store: RunStore, procs: int, max_retries: int,
               logs: Path, result: LaunchResult, echo: Callable[[str], None]) -> None:
    for attempt in range(1 + max_retries):
        pending = [j for j in jobs if store.status(j.run_id) != "done"
                   and not (attempt and _deterministic_failure(store, j.run_id))]
        if not pending:
            return
        if attempt:
            echo(f"retry {attempt}/{max_retries}: {len(pending)} job(s) not done")
        cmd = job_command([files[j.run_id] for j in pending], procs)
        result.launches += 1
        t0 = time.perf_counter()
        code = _stream(cmd, logs / f"launch-{time.strftime('%Y%m%d-%H%M%S')}-{result.launches}.log", echo, procs)
        echo(f"launch {result.launches}: {len(pending)} job(s) in {time.perf_counter() - t0:.1f} s")
        if code:
            echo(f"launcher exited with {code}; log in {logs}")


def launch(grid: Grid, runs_dir: str | os.PathLike[str], *, procs: int = 1, max_retries: int = 1,
           echo: Callable[[str], None] = print) -> LaunchResult:
    """Run every pending job of ``grid`` into ``runs_dir``; returns what happened.

    A second call on a finished grid starts no process at all.
    """
    t0 = time.perf_counter()
    runs = Path(runs_dir)
    files = dict(zip([j.run_id for j in grid.jobs], write_job_files(grid, runs)))
    store, logs = RunStore(runs), runs / LOG_DIR
    result = LaunchResult()
    parents = [j for j in grid.jobs if j.kind == "parent"]
    _run_stage(parents, files, store, procs, max_retries, logs, result, echo)
    ready = [j for j in grid.jobs if j.kind == "post" and (j.depends is None or store.status(j.depends) == "done")]
    result.blocked = [j.run_id for j in grid.jobs if j.kind == "post" and j not in ready]
    _run_stage(ready, files, store, procs, max_retries, logs, result, echo)
    result.statuses = {j.run_id: store.status(j.run_id) for j in grid.jobs}
    result.seconds = time.perf_counter() - t0
    return result
