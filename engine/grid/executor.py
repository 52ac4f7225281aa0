"""The executor interface of ``engine grid``: ``check -> plan -> submit -> status -> cancel``.

An executor is one class behind :data:`EXECUTORS` (or the ``prunelaw.executors`` entry-point
group, for one installed from elsewhere), constructed from its own typed ``Options``
dataclass, never from an argparse namespace::

    ex = get_executor("local", procs_per_job=2)
    ex.check(grid, runs)          # every validation; writes nothing
    plan = ex.plan(grid, runs)    # what would run, in job_order, and why the rest does not
    result = ex.submit(plan)      # local: runs it all; slurm: submits job arrays
    ex.status(grid, runs)         # one JobState per job (the store, the lock, the queue)
    ex.cancel(grid, runs)         # stop what this executor started

What every executor shares lives here, so a third one (Ray, Kubernetes) is one file: the job
ordering (:func:`job_order`, :func:`generations`), the retry rule on typed failure kinds
(:func:`should_run`, from :class:`data.runs.Failure`) and the status a user sees
(:func:`job_states`). torch-free: ``engine grid plan`` and ``status`` stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from data.cli import BadInput
from data.models import MODELS
from data.runs import CORRUPT, Failure, RunStore, failure_of

EXECUTORS: dict[str, str] = {
    "local": "engine.grid.local:LocalExecutor",
    "slurm": "engine.grid.slurm:SlurmExecutor",
}
"""Built-in executors: name -> ``module:Class`` (imported only when chosen or listed)."""
ENTRY_POINTS = "prunelaw.executors"
"""Entry-point group of executors installed by other distributions (same contract)."""


# -- typed results ------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobState:
    """What is true of one job now."""

    run_id: str
    status: str
    """pending | queued | running | suspended | done | failed | killed | corrupt."""
    failure: Failure | None = None
    """Why it is not done, when it ended badly (``failed``, ``killed``, ``corrupt``)."""
    reason: str = ""
    handle: str = ""
    """The executor's id for it while it runs or waits (a SLURM ``<array>_<task>``), else ''."""


@dataclass
class Plan:
    """What ``submit`` would do: the jobs to run in order, and why each other job is left out."""

    grid: Any
    runs: Path
    todo: list[Any]
    """Jobs to run (or submit), in :func:`job_order`."""
    skipped: dict[str, str] = field(default_factory=dict)
    """run_id -> why it is not run (``done``, ``already queued as SLURM task 12_3``)."""
    held: dict[str, str] = field(default_factory=dict)
    """run_id -> handle of jobs the executor already holds (queued or running there)."""


@dataclass
class Submission:
    """What ``submit`` did. ``statuses`` are final for a blocking executor (local), the
    just-submitted state for a queueing one (SLURM)."""

    executor: str
    statuses: dict[str, str] = field(default_factory=dict)
    handles: dict[str, str] = field(default_factory=dict)
    """run_id -> the executor's id for what it submitted."""
    launches: int = 0
    """Launcher invocations (local) or job arrays (SLURM)."""
    seconds: float = 0.0
    blocked: list[str] = field(default_factory=list)
    """Jobs not run because a job they depend on never finished."""
    unordered: list[str] = field(default_factory=list)
    """Parents whose pretrained loss does not fall with size (``data.runs.size_order_violations``)."""
    waits: bool = False
    """True when the jobs still run after ``submit`` returns (a queue owns them)."""
    cancelled: bool = False
    """``cancel`` stopped it before every job ran."""

    @property
    def ok(self) -> bool:
        if self.unordered or self.blocked or self.cancelled:
            return False
        allowed = {"done", "pending", "queued", "running"} if self.waits else {"done"}
        return all(s in allowed for s in self.statuses.values())


class Executor(Protocol):
    """The contract every executor meets (see the module docstring)."""

    name: ClassVar[str]
    Options: ClassVar[type]

    @property
    def procs(self) -> int:
        """Processes of one job (over all its nodes): the world size ``check`` validates against."""

    def check(self, grid: Any, runs: Path, launching: bool = False) -> None:
        """Every validation before anything is written (BadInput naming the first problem);
        ``launching`` adds what only a launch needs (its launcher or scheduler client)."""

    def plan(self, grid: Any, runs: Path) -> Plan: ...

    def submit(self, plan: Plan, echo: Callable[[str], None] = print) -> Submission: ...

    def status(self, grid: Any, runs: Path) -> list[JobState]: ...

    def cancel(self, grid: Any, runs: Path, echo: Callable[[str], None] = print) -> list[str]:
        """Stop what this executor started for ``grid``; returns the handles stopped."""


# -- the registry -------------------------------------------------------------------------------

def executor_names() -> list[str]:
    """Built-in executors first, then installed ones."""
    from importlib.metadata import entry_points

    return list(EXECUTORS) + sorted(ep.name for ep in entry_points(group=ENTRY_POINTS) if ep.name not in EXECUTORS)


def executor_class(name: str) -> type:
    """The class registered as ``name``.

    Raises:
        BadInput: no such executor (the message lists the available ones).
    """
    import importlib

    target = EXECUTORS.get(name)
    if target is None:
        from importlib.metadata import entry_points

        found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == name]
        if not found:
            raise BadInput(f"--executor {name!r} is not available; allowed: {', '.join(executor_names())}")
        return found[0].load()
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_executor(name: str, **options: Any) -> Executor:
    """An executor built from keyword options (its ``Options`` fields; unknown ones refused)."""
    cls = executor_class(name)
    known = {f.name for f in dataclasses.fields(cls.Options)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise BadInput(f"executor {name!r} has no option {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    return cls(cls.Options(**options))


def options_from_args(name: str, args: argparse.Namespace, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen executor's options from parsed flags; a flag of another executor that was set
    is refused (it would silently do nothing).

    ``defaults`` are the parser's defaults (``{dest: default}``) to tell "set" from "left alone".
    """
    own = {f.name for f in dataclasses.fields(executor_class(name).Options)}
    for other in EXECUTORS:
        if other == name:
            continue
        for f in dataclasses.fields(executor_class(other).Options):
            if f.name in own or not hasattr(args, f.name):
                continue
            if getattr(args, f.name) != defaults.get(f.name):
                raise BadInput(f"--{f.name.replace('_', '-')} is an option of --executor {other}, not {name}")
    return {n: getattr(args, n) for n in own if hasattr(args, n)}


# -- one job ordering ---------------------------------------------------------------------------

def _depends(job: Any) -> str | None:
    return getattr(job, "depends", None)


def depths(jobs: Sequence[Any]) -> dict[str, int]:
    """run_id -> generation: 0 for a job whose parent is not among ``jobs``, else parent's + 1.

    Only dependencies *among* ``jobs`` count: a parent already done does not hold a child back.

    Raises:
        BadInput: a dependency cycle.
    """
    by_id = {job.run_id: job for job in jobs}
    level: dict[str, int] = {}

    def depth(job: Any, seen: tuple[str, ...] = ()) -> int:
        if job.run_id in level:
            return level[job.run_id]
        if job.run_id in seen:
            raise BadInput(f"grid job {job.run_id!r} depends on itself through its parents")
        parent = _depends(job)
        level[job.run_id] = 0 if parent not in by_id else depth(by_id[parent], seen + (job.run_id,)) + 1
        return level[job.run_id]

    for job in jobs:
        depth(job)
    return level


def job_costs(jobs: Sequence[Any]) -> dict[str, float]:
    """Relative cost of each job: its tokens x its (root) parent's parameters; 1 when unknown."""
    by_id = {j.run_id: j for j in jobs}
    size: dict[str, float] = {}
    for job in jobs:
        key = str(getattr(getattr(job, "config", None), "parent", "")).strip().lower()
        if key in MODELS:
            size[job.run_id] = float(MODELS[key].params_total)
    out = {}
    for job in jobs:
        root = job.run_id
        while root not in size and _depends(by_id.get(root)) in by_id:
            root = _depends(by_id[root])
        tokens = float(getattr(getattr(job, "config", None), "tokens", 1) or 1)
        out[job.run_id] = tokens * size.get(root, 1.0)
    return out


def job_order(jobs: Sequence[Any], cost: Mapping[str, float] | None = None) -> list[Any]:
    """The one order every executor runs jobs in: parents before their children (generation),
    then the longest job first (so no worker idles at the end), then the grid's own order."""
    level = depths(jobs)
    cost = job_costs(jobs) if cost is None else cost
    index = {j.run_id: i for i, j in enumerate(jobs)}
    return sorted(jobs, key=lambda j: (level[j.run_id], -cost.get(j.run_id, 1.0), index[j.run_id]))


def generations(jobs: Sequence[Any]) -> list[list[Any]]:
    """:func:`job_order` cut into generations: each depends only on earlier ones (SLURM arrays)."""
    level = depths(jobs)
    out: list[list[Any]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for job in job_order(jobs):
        out[level[job.run_id]].append(job)
    return out


# -- what to run, and what is true now ----------------------------------------------------------

def should_run(store: RunStore, run_id: str, attempts: int = 0, max_retries: int = 0) -> tuple[bool, str]:
    """(run it now?, why not) from the run's stored state and its typed failure kind.

    ``attempts``: how often this launch already ran it. Done: never again. The first attempt
    of a launch runs anything else (corrupt and killed runs included: the trainer re-runs or
    resumes them). A retry within the launch needs a retryable kind (``crashed``, ``killed``):
    a bad input or a divergence fails the same way again, so retrying it only burns time.
    """
    status = store.status(run_id)
    if status == "done":
        return False, "done"
    if attempts == 0:
        return True, ""
    failure = failure_of(store.read(run_id)) if status == "failed" else None
    if failure is not None and not failure.retryable:
        return False, f"failed: {failure.value}"
    if attempts > max_retries:
        return False, "retries spent"
    return True, ""


def job_states(grid: Any, runs: Path, queue: Mapping[str, tuple[str, str]] | None = None) -> list[JobState]:
    """One :class:`JobState` per job from the run store, each run's writer lock and a queue.

    A live writer lock (``engine.grid.lock.writer_state``) is what ``running`` means: the
    process holding it is named. A run that says ``running`` with no live writer lost its
    process (kill -9, a crash, a reboot): it shows ``killed`` and the next launch resumes it.
    ``queue`` maps run_id -> (shown state, handle) for jobs a scheduler still holds.
    """
    from engine.grid.lock import writer_state

    store, queue = RunStore(runs), queue or {}
    out = []
    for job in grid.jobs:
        record = store.check(job.run_id) if store.exists(job.run_id) else {}
        writer, holder = writer_state(store.run_dir(job.run_id))
        held = queue.get(job.run_id)
        if record.get("corrupt"):
            state = JobState(job.run_id, CORRUPT, Failure.CORRUPT, record["corrupt"])
        elif writer == "live" and record.get("status") != "done":
            who = holder.process() if holder else "a live process"
            state = JobState(job.run_id, "running", None, f"written by {who}",
                             held[1] if held else (f"pid {holder.pid}" if holder else ""))
        elif held is not None and record.get("status") != "done":
            state = JobState(job.run_id, held[0], None, record.get("reason") or "", held[1])
        elif record.get("status") == "running":
            state = JobState(job.run_id, "killed", Failure.KILLED, "its process is gone; the next launch resumes it")
        else:
            state = JobState(job.run_id, record.get("status", "pending"), failure_of(record),
                             record.get("reason") or "")
        out.append(state)
    return out


MAX_PROCS = 1024
"""Processes of one job: more is a typo (an executor would start them all)."""


def runs_path(runs: str | os.PathLike[str]) -> Path:
    """``--runs`` as a path, refused when it names a file (checked before anything is written)."""
    path = Path(runs)
    if path.exists() and not path.is_dir():
        raise BadInput(f"--runs {str(path)!r} is a file; expected a run-store directory")
    return path
