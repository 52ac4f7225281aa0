"""The local executor: run a grid's pending jobs through the ``deepspeed`` launcher.

Jobs are batched: one launcher invocation runs a short list of jobs in the same processes, so
the ~5 s of imports and the first ``deepspeed.initialize`` are paid once per batch, not per
job. Several batches run side by side when the machine probe (``engine.probe``) says that
pays: on small CPUs one single-thread job per core beats one job on every core by far. Jobs go
in the shared :func:`engine.grid.executor.job_order` (parents first, longest first); a parent
goes alone, and a post-training job starts as soon as its own parent is done, not when every
parent is. Done runs are skipped (by this executor and again by the worker), killed runs resume
from their checkpoint, and a job that failed is retried up to ``max_retries`` times when its
failure kind is retryable (:class:`data.runs.Failure`).

On a GPU machine each concurrent batch gets its own GPUs (``deepspeed --include
localhost:i,j``, from the GPUs present and CUDA_VISIBLE_DEVICES): jobs at once = GPUs //
processes per job. On CPU the machine probe decides as above.

A run has one writer. Each training process holds its run's writer lock
(``engine.grid.lock``) and ends itself when this launch dies (``engine.train.worker``), and a
run another live process still writes is waited for, never started twice.

``submit`` blocks until the grid is done, saying how far it got (``engine.grid.progress``).
``cancel`` (another process, same host) sends the launch SIGTERM; it stops its launchers
(each runs in its own process group) and exits.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from data.cli import BadInput
from data.runs import CORRUPT, RunStore
from engine.grid.executor import MAX_PROCS, JobState, Plan, Submission, job_costs, job_order, job_states, should_run
from engine.grid.lock import LAUNCH_ENV, LockOwner, process_token, writer_state
from engine.grid.progress import Progress
from engine.grid.spec import Grid, Job, job_command, write_job_files
from engine.probe import MachinePlan, machine_plan, usable_cores

LOG_DIR = "_logs"
BATCH = 4
"""Jobs per launcher invocation: amortises start-up, small enough to keep the slots balanced."""
MAX_RETRIES = 20
"""Relaunches of unfinished jobs: more only repeats a failure that is not going away."""
CANCEL_WAIT_S = 60.0
"""How long ``cancel`` waits for the launch to stop its launchers and release the store."""
FOLLOW_S = 0.2
"""How often a launcher's log is read for new lines."""
WRITER_POLL_S = 1.0
"""How often a launch looks again at a run another process still writes."""
JOB_MOVED = re.compile(r"^(\S+): (?:started$|(?:done|failed|skipped) in |not started: )")
"""A worker's line saying one job of its batch started or ended (``engine.train.worker.run_jobs``)."""


def say(line: str) -> None:
    """Print and flush: a launch's lines must reach a log as they happen, not when it ends."""
    print(line, flush=True)


@dataclass(frozen=True)
class LocalOptions:
    """``engine grid launch --executor local`` flags."""

    procs_per_job: int = 1
    """Processes of each job (``deepspeed --num_gpus``; CPU ranks on a CPU machine)."""
    max_retries: int = 1
    """Relaunches, within one launch, of a job whose failure is retryable (crashed, killed)."""
    parallel: int | None = None
    """Jobs at once; None: what the machine probe says pays."""

    def __post_init__(self) -> None:
        if not 1 <= self.procs_per_job <= MAX_PROCS:
            raise BadInput(f"--procs-per-job {self.procs_per_job} must be between 1 and {MAX_PROCS}")
        if not 0 <= self.max_retries <= MAX_RETRIES:
            raise BadInput(f"--max-retries {self.max_retries} must be between 0 and {MAX_RETRIES}")
        if self.parallel is not None and not 1 <= self.parallel <= MAX_PROCS:
            raise BadInput(f"--parallel {self.parallel} must be between 1 and {MAX_PROCS}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("local executor (--executor local)")
    group.add_argument("--procs-per-job", type=int, default=1, metavar="N", help="processes per job (default 1)")
    group.add_argument("--max-retries", type=int, default=1, metavar="K",
                       help="relaunches of a job that crashed or was killed (default 1)")
    group.add_argument("--parallel", type=int, default=None, metavar="J",
                       help="jobs at once (default: what the machine probe says pays)")


def slots_and_threads(plan: MachinePlan, procs: int) -> tuple[int, int]:
    """(jobs at once, OMP threads per rank) for jobs of ``procs`` ranks each under ``plan``."""
    threads = plan.grid_threads
    budget = plan.grid_parallel * plan.grid_threads  # cores the plan keeps busy
    return max(1, budget // (max(1, procs) * threads)), threads


def parse_visible_devices(value: str) -> list[int]:
    """CUDA_VISIBLE_DEVICES as GPU indices (``-1`` or empty: none).

    Raises:
        BadInput: an entry that is not an index (a UUID or MIG name): ``deepspeed --include``
            selects GPUs by index only.
    """
    ids = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        if not entry.lstrip("-").isdigit():
            raise BadInput(f"CUDA_VISIBLE_DEVICES={value!r}: {entry!r} is not a GPU index; the deepspeed "
                           f"launcher selects GPUs by index, e.g. CUDA_VISIBLE_DEVICES=0,1")
        if int(entry) < 0:  # CUDA stops at the first negative entry
            break
        ids.append(int(entry))
    return ids


def visible_gpus() -> list[int]:
    """The GPUs this machine lets jobs use, as the indices ``deepspeed --include`` takes.

    [] on a CPU machine (no NVIDIA driver) or with ``DS_ACCELERATOR`` naming another
    accelerator. CUDA_VISIBLE_DEVICES is applied here because DeepSpeed's runner drops it as
    soon as ``--include`` is given; without it, every GPU torch sees.
    """
    if os.environ.get("DS_ACCELERATOR", "cuda") != "cuda":
        return []
    if shutil.which("nvidia-smi") is None and not os.path.isdir("/proc/driver/nvidia"):
        return []
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return parse_visible_devices(os.environ["CUDA_VISIBLE_DEVICES"])
    import torch  # only on a machine with an NVIDIA driver: its device count reads NVML

    return list(range(torch.cuda.device_count()))


def device_groups(gpus: Sequence[int], procs: int, parallel: int | None = None) -> list[tuple[int, ...]]:
    """The GPUs of each concurrent job: ``procs`` consecutive ones each, ``len(gpus) // procs``
    jobs (at most ``parallel``).

    Raises:
        BadInput: fewer GPUs than one job's processes, or ``parallel`` beyond what fits.
    """
    if len(gpus) < procs:
        raise BadInput(f"--procs-per-job {procs} needs {procs} GPUs; {len(gpus)} visible "
                       f"({', '.join(map(str, gpus)) or 'none'})")
    groups = [tuple(gpus[i * procs:(i + 1) * procs]) for i in range(len(gpus) // procs)]
    if parallel is not None and parallel > len(groups):
        raise BadInput(f"--parallel {parallel} needs {parallel * procs} GPUs at --procs-per-job {procs}; "
                       f"{len(gpus)} visible ({', '.join(map(str, gpus))})")
    return groups[:parallel] if parallel else groups


@dataclass(frozen=True)
class Slots:
    """How one launch uses the machine."""

    devices: list[tuple[int, ...] | None]
    """One entry per concurrent job: its GPUs, or None on CPU (the launcher's own choice)."""
    threads: int
    """OMP threads per rank."""
    describe: str

    @property
    def count(self) -> int:
        return len(self.devices)


def plan_slots(gpus: Sequence[int], procs: int, parallel: int | None) -> Slots:
    """GPUs present: one device group per concurrent job; none: the machine probe's choice."""
    if gpus:
        groups = device_groups(gpus, procs, parallel)
        threads = max(1, usable_cores() // (len(groups) * procs))
        return Slots(list(groups), threads, f"{len(gpus)} GPU(s) visible ({', '.join(map(str, gpus))}): "
                                            f"{len(groups)} job(s) at a time on GPUs "
                                            + ", ".join("+".join(map(str, g)) for g in groups))
    machine = machine_plan()
    slots, threads = slots_and_threads(machine, procs)
    return Slots([None] * (parallel or slots), threads, f"machine: {machine.describe()}")


class _Cancelled(Exception):
    """SIGTERM reached the launch (``engine grid cancel --executor local``)."""


class _Children:
    """The launcher processes now running, each the leader of its own process group, so that
    stopping one stops its ranks too (they share its group)."""

    def __init__(self) -> None:
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def start(self, cmd: list[str], env: dict[str, str], out: Any) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise _Cancelled("cancelled")
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.procs.add(proc)
            return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.procs.discard(proc)

    def stop_all(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in self.procs:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


def launch_env(threads: int, devices: tuple[int, ...] | None) -> dict[str, str]:
    """The environment of one launcher: thread count, unbuffered output, this launch's identity
    (its training processes end with it), and no CUDA_VISIBLE_DEVICES once ``--include``
    names the GPUs (DeepSpeed's runner would print that it ignores it, then drop it)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           LAUNCH_ENV: process_token(os.getpid())}  # engine.train.worker.watch_launch
    if devices is not None:
        env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _stream(children: _Children, cmd: list[str], log: Path, echo: Callable[[str], None], env: dict[str, str],
            moved: Callable[[], None]) -> int:
    """Run ``cmd`` with its output going to ``log``, following the file: only the per-job
    summary lines are echoed, and ``moved`` is called when one says a job started or ended.

    A file, not a pipe: when this launch dies, a pipe would turn the trainer's next print
    into a BrokenPipeError that ends the run as ``failed``; with a file the trainer goes on
    writing its log and its watchdog ends it cleanly (``engine.train.worker.watch_launch``).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        start = fh.tell()
        proc = children.start(cmd, env, fh)
    try:
        with log.open(errors="replace") as reader:
            reader.seek(start)
            partial = ""
            while True:
                exited = proc.poll() is not None  # before reading: what it wrote before exiting is read
                partial += reader.read()
                *lines, partial = partial.split("\n")
                for line in lines:
                    _echo_line(line, echo, moved)
                if exited:
                    break
                time.sleep(FOLLOW_S)
            if partial:
                _echo_line(partial, echo, moved)
        return proc.wait()
    finally:
        children.done(proc)


def _echo_line(line: str, echo: Callable[[str], None], moved: Callable[[], None]) -> None:
    if "[engine.train]" not in line:
        return
    said = line.rstrip().split("[engine.train] ", 1)[-1]
    echo(said)
    if JOB_MOVED.match(said):
        moved()


class _Scheduler:
    """Hands ready jobs to free slots in batches; one instance per ``launch``."""

    def __init__(self, grid: Grid, store: RunStore, max_retries: int):
        self.jobs = {j.run_id: j for j in grid.jobs}
        self.order = job_order(grid.jobs, job_costs(grid.jobs))
        self.store, self.max_retries = store, max_retries
        self.attempts = {run_id: 0 for run_id in self.jobs}
        self.running: set[str] = set()
        self.guard = threading.Lock()  # batch threads read ``running`` (progress) while it changes

    def _launchable(self, job: Job) -> bool:
        if job.run_id in self.running:
            return False
        if not should_run(self.store, job.run_id, self.attempts[job.run_id], self.max_retries)[0]:
            return False
        if job.depends is not None and self.store.status(job.depends) != "done":
            return False
        return writer_state(self.store.run_dir(job.run_id))[0] != "live"  # never a second writer

    def has_work(self) -> bool:
        return any(self._launchable(j) for j in self.jobs.values()) or bool(self.foreign())

    def foreign(self) -> dict[str, LockOwner | None]:
        """Runs not done that a process other than this launch's still writes (an earlier
        launch's job, ``engine train``): run_id -> its writer. They are waited for."""
        out = {}
        for run_id in self.jobs:
            if run_id in self.running_now() or self.store.status(run_id) == "done":
                continue
            state, owner = writer_state(self.store.run_dir(run_id))
            if state == "live":
                out[run_id] = owner
        return out

    def statuses(self) -> dict[str, str]:
        """Each job's stored status, except that a job this launch holds is ``running`` only
        while its process holds the run's writer lock (a batch runs its jobs one after another,
        and a killed run's record still says ``running``) and ``pending`` until then."""
        held, out = self.running_now(), {}
        for run_id in self.jobs:
            status = self.store.status(run_id)
            if run_id in held and status not in ("done", "failed", CORRUPT):
                live = writer_state(self.store.run_dir(run_id))[0] == "live"
                status = "running" if live else "pending"
            out[run_id] = status
        return out

    def next_batch(self, free_slots: int) -> list[Job]:
        ready = [j for j in self.order if self._launchable(j)]
        if not ready or free_slots < 1:
            return []
        size = max(1, min(BATCH, math.ceil(len(ready) / free_slots)))
        # A parent goes alone: its children wait for it, and pretraining dwarfs start-up anyway.
        batch = ready[:1] if ready[0].kind == "parent" else [j for j in ready[:size] if j.kind != "parent"]
        with self.guard:
            for job in batch:
                self.attempts[job.run_id] += 1
                self.running.add(job.run_id)
        return batch

    def finished(self, batch: list[Job]) -> None:
        with self.guard:
            self.running.difference_update(j.run_id for j in batch)

    def running_now(self) -> set[str]:
        with self.guard:
            return set(self.running)

    def blocked(self) -> list[str]:
        return [j.run_id for j in self.jobs.values()
                if j.depends is not None and self.store.status(j.depends) != "done"]


@dataclass
class _Run:
    """State one ``submit`` shares with its worker threads."""

    files: dict[str, Path]
    logs: Path
    procs: int
    threads: int
    progress: Progress
    sched: _Scheduler
    children: _Children
    devices: queue.SimpleQueue
    """Free device groups (None entries on CPU): a batch takes one and gives it back."""
    launches: int = 0

    def refresh(self) -> None:
        self.progress.refresh(self.sched.running_now())


def _run_batch(state: _Run, lock: threading.Lock, batch: list[Job]) -> None:
    with lock:
        state.launches += 1
        n = state.launches
    devices = state.devices.get_nowait()  # never empty: at most one batch per group runs
    try:
        cmd = job_command([state.files[j.run_id] for j in batch], state.procs, devices=devices)
        start = time.perf_counter()
        try:
            code = _stream(state.children, cmd, state.logs / f"launch-{time.strftime('%Y%m%d-%H%M%S')}-{n}.log",
                           state.progress.say, launch_env(state.threads, devices), state.refresh)
        except _Cancelled:
            return
    finally:
        state.devices.put(devices)
    state.progress.say(f"launch {n}: {len(batch)} job(s) in {time.perf_counter() - start:.1f} s"
                       + (f" on GPU(s) {','.join(map(str, devices))}" if devices else "")
                       + (f"; launcher exited with {code}, log in {state.logs}" if code else ""))


def _on_sigterm(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
    raise _Cancelled("cancelled by SIGTERM")


def _drive(sched: _Scheduler, state: _Run, slots: int) -> None:
    """Keep ``slots`` batches running until no job is ready; parents unlock children as they end.

    A run another process still writes is waited for (polled), then resumed or skipped as its
    stored state says: two writers never share a run directory.
    """
    lock = threading.Lock()
    told: set[str] = set()
    with ThreadPoolExecutor(max_workers=slots) as pool:
        active: dict[Future, list[Job]] = {}
        try:
            while True:
                # Foreign writers first: one that ends after next_batch passed its run over is
                # still in this snapshot, so the loop polls again instead of ending with it unrun.
                foreign = sched.foreign()
                while len(active) < slots and (batch := sched.next_batch(slots - len(active))):
                    active[pool.submit(_run_batch, state, lock, batch)] = batch
                    state.refresh()
                for run_id in sorted(set(foreign) - told):
                    who = foreign[run_id].process() if foreign[run_id] else "another process"
                    state.progress.say(f"{run_id}: {who} still writes this run; waiting for it (not started twice)")
                told |= set(foreign)
                if not active and not foreign:
                    break
                if not active:
                    time.sleep(WRITER_POLL_S)
                    continue
                done, _ = wait(active, timeout=WRITER_POLL_S if foreign else None, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
                    sched.finished(active.pop(future))
                if done:
                    state.refresh()
        except BaseException:  # Ctrl-C or cancel: the launchers live in their own sessions
            state.children.stop_all()
            raise


class LocalExecutor:
    """Runs jobs on this machine (see the module docstring)."""

    name: ClassVar[str] = "local"
    Options: ClassVar[type] = LocalOptions
    add_arguments = staticmethod(add_arguments)

    def __init__(self, options: LocalOptions | None = None,
                 gpus: Callable[[], list[int]] = visible_gpus) -> None:
        """``gpus``: how the GPUs present are found (injectable: tests have no CUDA)."""
        self.options = options or LocalOptions()
        self.gpus = gpus

    @property
    def procs(self) -> int:
        return self.options.procs_per_job

    def check(self, grid: Grid, runs: Path, launching: bool = False) -> None:
        """The shards exist, every job is valid at this world size, and (``launching``) the
        ``deepspeed`` launcher is installed."""
        from engine.grid.spec import check_shards, find_launcher, validate

        if launching:  # first: without a launcher nothing else matters
            find_launcher()
            gpus = self.gpus()
            if gpus:
                device_groups(gpus, self.procs, self.options.parallel)
        check_shards(grid)
        validate(grid, runs, self.procs)

    def plan(self, grid: Grid, runs: Path) -> Plan:
        store = RunStore(runs)
        todo, skipped = [], {}
        for job in job_order(grid.jobs):
            run, why = should_run(store, job.run_id)
            if run:
                todo.append(job)
            else:
                skipped[job.run_id] = why
        return Plan(grid, Path(runs), todo, skipped)

    def submit(self, plan: Plan, echo: Callable[[str], None] = say) -> Submission:
        """Run every pending job of the plan's grid; returns when none is left to run.

        A second call on a finished grid starts no process at all. SIGTERM (``cancel``) stops
        the launchers; their runs show ``killed`` and resume on the next launch.
        """
        t0 = time.perf_counter()
        grid, runs = plan.grid, Path(plan.runs)
        store = RunStore(runs)
        result = Submission(self.name)
        sched = _Scheduler(grid, store, self.options.max_retries)
        if sched.has_work():
            files = dict(zip([j.run_id for j in grid.jobs], write_job_files(grid, runs)))
            slots = plan_slots(self.gpus(), self.procs, self.options.parallel)
            echo(slots.describe)
            echo(f"running up to {slots.count} job(s) at a time, {self.procs} process(es) x {slots.threads} "
                 f"thread(s) each")
            devices: queue.SimpleQueue = queue.SimpleQueue()
            for group in slots.devices:
                devices.put(group)
            progress = Progress(sched.statuses, job_costs(grid.jobs), echo)
            state = _Run(files, runs / LOG_DIR, self.procs, slots.threads, progress, sched, _Children(), devices)
            previous = _install_sigterm()
            try:
                _drive(sched, state, slots.count)
            except _Cancelled:
                result.cancelled = True
                progress.say("cancelled: launchers stopped; their runs resume on the next launch")
            finally:
                _restore_sigterm(previous)
                progress.close()
            result.launches = state.launches
            result.blocked = sched.blocked()
            result.unordered = check_size_order(grid, runs, echo)
        result.statuses = {j.run_id: store.status(j.run_id) for j in grid.jobs}
        result.seconds = time.perf_counter() - t0
        return result

    def status(self, grid: Grid, runs: Path) -> list[JobState]:
        return job_states(grid, runs)  # no queue: a run's live writer lock is what "running" means

    def cancel(self, grid: Grid, runs: Path, echo: Callable[[str], None] = print) -> list[str]:
        """SIGTERM the launch that holds ``runs`` (it must run on this host); waits for it."""
        from engine.grid.lock import owner_state

        state, owner = owner_state(runs)
        if state != "live" or owner is None:
            echo(f"{grid.name}: no launch holds {runs}; nothing cancelled")
            return []
        if owner.host != socket.gethostname():
            raise BadInput(f"the launch of {str(runs)!r} runs on {owner.host!r} (pid {owner.pid}); "
                           f"cancel it there")
        os.kill(owner.pid, signal.SIGTERM)
        end = time.monotonic() + CANCEL_WAIT_S
        while owner_state(runs)[0] == "live" and time.monotonic() < end:
            time.sleep(0.2)
        echo(f"cancelled the launch {owner.describe()}")
        return [f"pid {owner.pid}"]


def _install_sigterm() -> Any:
    """SIGTERM -> _Cancelled in the main thread (signals can only be set from it)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def launch(grid: Grid, runs_dir: str | os.PathLike[str], *, procs: int = 1, max_retries: int = 1,
           parallel: int | None = None, echo: Callable[[str], None] = say) -> Submission:
    """Run every pending job of ``grid`` into ``runs_dir`` (the library call ``engine demo`` uses).

    The caller holds the store's lock (``engine.grid.lock.grid_lock``).
    """
    executor = LocalExecutor(LocalOptions(procs_per_job=procs, max_retries=max_retries, parallel=parallel))
    return executor.submit(executor.plan(grid, Path(runs_dir)), echo)


def check_size_order(grid: Grid, runs: Path, echo: Callable[[str], None]) -> list[str]:
    """Say loudly when the grid's own pretrained parents are not size-ordered (a fit would
    silently turn that into nonsense size exponents); returns the violations."""
    if not any(j.kind == "parent" for j in grid.jobs):
        return []
    import warnings

    from data.runs import load, size_order_violations

    try:
        with warnings.catch_warnings():  # corrupt runs: status and the next launch report them
            warnings.simplefilter("ignore")
            problems = size_order_violations(load(runs))
    except Exception:  # an unreadable store is reported by status/fitting; not this check's job
        return []
    for line in problems:
        echo(f"error: parents not size-ordered after pretraining: {line}")
    return problems
