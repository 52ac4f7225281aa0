"""Two locks, both an exclusive ``flock`` on a small JSON file naming the holder.

- The run-store lock, ``<runs>/_lock.json``: one launch owns a store at a time.
- The writer lock of one run, ``<runs>/<run_id>/_writer.json``: held by the training process
  that writes the run (``engine.train.worker``) for as long as it trains it, so a run never
  has two writers, whatever launched them (a launch, a resumed launch, SLURM, ``engine train``).

The kernel drops a flock when its process dies, by ``kill -9`` too, so stale-lock recovery
needs no guessing from pids: a rival either fails to take the flock (the holder is alive: it
is refused, with the holder named) or takes it (the holder is gone: the record it left is
*stale* and is replaced).

``owner_state`` / ``writer_state`` are what ``engine grid status`` reports: ``live``,
``stale`` or ``none``. torch-free; POSIX only (fcntl).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from data.cli import BadInput

LOCK_FILE = "_lock.json"
WRITER_FILE = "_writer.json"
PROBE_GRACE_S = 0.25
"""How long a refused flock is retried before the holder counts as live: a probe
(:func:`file_state`, run by every status poll) holds a lock file for microseconds, and a writer
starting at that instant must not take the probe for a rival."""
LAUNCH_ENV = "PRUNELAW_LAUNCH"
"""Names, to each training process, the grid launch it must not outlive (:func:`process_token`)."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or last held) a run store."""

    host: str
    pid: int
    grid: str
    """The grid of a store's launch; the run id for a run's writer."""
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (grid {self.grid!r}, since {self.since})"

    def process(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"


@dataclass
class Lock:
    """A held lock: the open file keeps the flock; ``release`` (or process death) frees it."""

    path: Path
    owner: LockOwner
    fd: int

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.unlink(self.path)  # unlink while holding: a rival that opened it re-checks the inode
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = -1


def _read(path: Path) -> LockOwner | None:
    try:
        return LockOwner(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def read_owner(runs_dir: str | os.PathLike[str]) -> LockOwner | None:
    """The record in the store's lock file, or None (no file, or a torn/empty one)."""
    return _read(Path(runs_dir) / LOCK_FILE)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _flock_within(fd: int, grace_s: float) -> bool:
    deadline = time.monotonic() + grace_s
    while not _try_flock(fd):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def file_state(path: Path) -> tuple[str, LockOwner | None]:
    """``("none"|"live"|"stale", holder)`` of the lock file ``path``.

    ``stale``: a lock file is there but nobody holds it (its holder was killed).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "none", None
    try:
        free = _try_flock(fd)  # released again when fd closes
    finally:
        os.close(fd)
    return ("stale" if free else "live"), _read(path)


def owner_state(runs_dir: str | os.PathLike[str]) -> tuple[str, LockOwner | None]:
    """Is a launch holding this store right now? (see :func:`file_state`)"""
    return file_state(Path(runs_dir) / LOCK_FILE)


def writer_state(run_dir: str | os.PathLike[str]) -> tuple[str, LockOwner | None]:
    """Is a training process writing this run right now? (see :func:`file_state`)"""
    return file_state(Path(run_dir) / WRITER_FILE)


def try_hold(path: Path, label: str) -> Lock | LockOwner | None:
    """Take the lock file ``path`` for this process (a stale one is taken over).

    Returns the held :class:`Lock`, or, when a live process holds it, that holder's record
    (None when its record is unreadable).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _flock_within(fd, PROBE_GRACE_S):
            os.close(fd)
            return _read(path)
        try:  # the holder we waited on may have unlinked the file: lock the file that is there now
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    owner = LockOwner(host=socket.gethostname(), pid=os.getpid(), grid=label,
                      since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(owner)).encode(), 0)
    os.fsync(fd)
    return Lock(path, owner, fd)


def acquire(runs_dir: str | os.PathLike[str], grid: str) -> Lock:
    """Take the store's lock for this process (a stale one is taken over).

    Raises:
        BadInput: a live launch holds it; the message names its host and pid.
    """
    runs = Path(runs_dir)
    if runs.exists() and not runs.is_dir():
        raise BadInput(f"--runs {str(runs)!r} is a file; expected a run-store directory")
    held = try_hold(runs / LOCK_FILE, grid)
    if isinstance(held, Lock):
        return held
    who = held.describe() if held else "another process"
    raise BadInput(f"run store {str(runs)!r} is locked by a running launch: {who}; "
                   f"watch it with 'engine grid status', or wait for it to finish")


@contextmanager
def grid_lock(runs_dir: str | os.PathLike[str], grid: str) -> Iterator[LockOwner]:
    """``with grid_lock(runs, name):`` hold the store for the body (released even on error)."""
    lock = acquire(runs_dir, grid)
    try:
        yield lock.owner
    finally:
        lock.release()


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from field 3 (state) on; [] where unknown (no /proc, no process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (``/proc/<pid>/stat`` field 22), '' where unknown.

    A pid plus its start time names one process for good: a pid alone may be reused.
    """
    fields = _stat_fields(pid)
    return fields[19] if len(fields) > 19 else ""


def process_token(pid: int) -> str:
    """``<pid>:<start time>``: one process, for :func:`process_alive` in another process."""
    return f"{pid}:{process_start(pid)}"


def process_alive(pid: int, start: str = "") -> bool:
    """Is the process ``pid`` (started at ``start``, from :func:`process_start`) still running?

    A zombie (killed, not yet reaped by its parent) counts as gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    fields = _stat_fields(pid)
    if not fields:
        return True  # no /proc: the signal test is all there is
    return fields[0] != "Z" and (not start or fields[19] == start)
