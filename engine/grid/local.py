"""The local executor: run a grid's pending jobs through the ``deepspeed`` launcher.

Jobs are batched: one launcher invocation runs a short list of jobs in the same processes, so
the ~5 s of imports and the first ``deepspeed.initialize`` are paid once per batch, not per
job. Several batches run side by side when the machine probe (``engine.probe``) says that
pays: on small CPUs one single-thread job per core beats one job on every core by far. A
post-training job starts as soon as its own parent is done, not when every parent is, and the
longest jobs go first so that no core idles at the end. Done runs are skipped (by this
executor and again by the worker), killed runs resume from their checkpoint, failed ones are
retried up to ``max_retries`` times.
"""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from data.models import MODELS
from data.runs import RunStore
from engine.grid.spec import Grid, Job, job_command, write_job_files
from engine.probe import MachinePlan, machine_plan

LOG_DIR = "_logs"
BATCH = 4
"""Jobs per launcher invocation: amortises start-up, small enough to keep the slots balanced."""


@dataclass
class LaunchResult:
    """What a ``launch`` did: per-job final status and the launcher invocations it made."""

    statuses: dict[str, str] = field(default_factory=dict)
    launches: int = 0
    seconds: float = 0.0
    blocked: list[str] = field(default_factory=list)
    """Post-training jobs not run because their parent never finished."""
    slots: int = 1
    threads: int = 1
    unordered: list[str] = field(default_factory=list)
    """Parents whose pretrained loss does not fall with size (``data.runs.size_order_violations``)."""

    @property
    def ok(self) -> bool:
        return all(s == "done" for s in self.statuses.values()) and not self.blocked and not self.unordered


def slots_and_threads(plan: MachinePlan, procs: int) -> tuple[int, int]:
    """(jobs at once, OMP threads per rank) for jobs of ``procs`` ranks each under ``plan``."""
    threads = plan.grid_threads
    budget = plan.grid_parallel * plan.grid_threads  # cores the plan keeps busy
    return max(1, budget // (max(1, procs) * threads)), threads


def _stream(cmd: list[str], log: Path, echo: Callable[[str], None], threads: int) -> int:
    """Run ``cmd``, teeing its output to ``log``; only the per-job summary lines are echoed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
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


def job_costs(grid: Grid) -> dict[str, float]:
    """Relative cost of each job (tokens x parent parameters) for longest-first ordering."""
    size: dict[str, float] = {}
    for job in grid.jobs:
        key = job.config.parent.strip().lower()
        if key in MODELS:
            size[job.run_id] = float(MODELS[key].params_total)
    return {j.run_id: float(j.config.tokens) * size.get(j.depends or j.run_id, size.get(j.run_id, 1.0))
            for j in grid.jobs}


class _Scheduler:
    """Hands ready jobs to free slots in batches; one instance per ``launch``."""

    def __init__(self, grid: Grid, store: RunStore, max_retries: int):
        self.jobs = {j.run_id: j for j in grid.jobs}
        self.store, self.max_retries = store, max_retries
        self.cost = job_costs(grid)
        self.attempts = {run_id: 0 for run_id in self.jobs}
        self.running: set[str] = set()

    def _launchable(self, job: Job) -> bool:
        if job.run_id in self.running or self.store.status(job.run_id) == "done":
            return False
        if self.attempts[job.run_id] > self.max_retries:
            return False
        if self.attempts[job.run_id] and _deterministic_failure(self.store, job.run_id):
            return False
        return job.depends is None or self.store.status(job.depends) == "done"

    def has_work(self) -> bool:
        return any(self._launchable(j) for j in self.jobs.values())

    def next_batch(self, free_slots: int) -> list[Job]:
        ready = sorted((j for j in self.jobs.values() if self._launchable(j)),
                       key=lambda j: (j.kind != "parent", -self.cost[j.run_id]))
        if not ready or free_slots < 1:
            return []
        size = max(1, min(BATCH, math.ceil(len(ready) / free_slots)))
        # A parent goes alone: its children wait for it, and pretraining dwarfs start-up anyway.
        batch = ready[:1] if ready[0].kind == "parent" else [j for j in ready[:size] if j.kind != "parent"]
        for job in batch:
            self.attempts[job.run_id] += 1
            self.running.add(job.run_id)
        return batch

    def finished(self, batch: list[Job]) -> None:
        self.running.difference_update(j.run_id for j in batch)

    def blocked(self) -> list[str]:
        return [j.run_id for j in self.jobs.values()
                if j.depends is not None and self.store.status(j.depends) != "done"]


def launch(grid: Grid, runs_dir: str | os.PathLike[str], *, procs: int = 1, max_retries: int = 1,
           parallel: int | None = None, echo: Callable[[str], None] = print) -> LaunchResult:
    """Run every pending job of ``grid`` into ``runs_dir``; returns what happened.

    ``parallel`` overrides the probe's number of simultaneous jobs. A second call on a
    finished grid starts no process at all.
    """
    t0 = time.perf_counter()
    runs = Path(runs_dir)
    files = dict(zip([j.run_id for j in grid.jobs], write_job_files(grid, runs)))
    store, logs = RunStore(runs), runs / LOG_DIR
    sched = _Scheduler(grid, store, max_retries)
    result = LaunchResult()
    if not sched.has_work():
        result.statuses = {j.run_id: store.status(j.run_id) for j in grid.jobs}
        result.seconds = time.perf_counter() - t0
        return result
    plan = machine_plan()
    slots, threads = slots_and_threads(plan, procs)
    slots = parallel or slots
    result.slots, result.threads = slots, threads
    echo(f"machine: {plan.describe()}")
    echo(f"running up to {slots} job(s) at a time, {procs} process(es) x {threads} thread(s) each")
    lock = threading.Lock()

    def run(batch: list[Job]) -> None:
        with lock:
            result.launches += 1
            n = result.launches
        cmd = job_command([files[j.run_id] for j in batch], procs)
        start = time.perf_counter()
        code = _stream(cmd, logs / f"launch-{time.strftime('%Y%m%d-%H%M%S')}-{n}.log", echo, threads)
        echo(f"launch {n}: {len(batch)} job(s) in {time.perf_counter() - start:.1f} s"
             + (f"; launcher exited with {code}, log in {logs}" if code else ""))

    with ThreadPoolExecutor(max_workers=slots) as pool:
        active: dict[Future, list[Job]] = {}
        while True:
            while len(active) < slots and (batch := sched.next_batch(slots - len(active))):
                active[pool.submit(run, batch)] = batch
            if not active:
                break
            done, _ = wait(active, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
                sched.finished(active.pop(future))
    result.blocked = sched.blocked()
    result.statuses = {j.run_id: store.status(j.run_id) for j in grid.jobs}
    result.unordered = check_size_order(grid, runs, echo)
    result.seconds = time.perf_counter() - t0
    return result


def check_size_order(grid: Grid, runs: Path, echo: Callable[[str], None]) -> list[str]:
    """Say loudly when the grid's own pretrained parents are not size-ordered (a fit would
    silently turn that into nonsense size exponents); returns the violations."""
    if not any(j.kind == "parent" for j in grid.jobs):
        return []
    from data.runs import load, size_order_violations

    try:
        problems = size_order_violations(load(runs))
    except Exception:  # an unreadable store is reported by status/fitting; not this check's job
        return []
    for line in problems:
        echo(f"error: parents not size-ordered after pretraining: {line}")
    return problems
