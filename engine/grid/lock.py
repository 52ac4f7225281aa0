"""The run-store lock: one launch owns a store at a time; a dead owner's lock is free again.

``<runs>/_lock.json`` records the owner (host, pid, grid, since) and is held with an exclusive
``flock`` for as long as the launch runs. The kernel drops a flock when its process dies, by
``kill -9`` too, so stale-lock recovery needs no guessing from pids: a second launch either
fails to take the flock (the owner is alive: it refuses with one line naming the owner) or
takes it (the owner is gone: the record it left is *stale* and is replaced).

``owner_state`` is what ``engine grid status`` reports: ``live``, ``stale`` or ``none``.
torch-free; POSIX only (fcntl).
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


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or last held) a run store."""

    host: str
    pid: int
    grid: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (grid {self.grid!r}, since {self.since})"


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


def read_owner(runs_dir: str | os.PathLike[str]) -> LockOwner | None:
    """The record in the lock file, or None (no file, or a torn/empty one)."""
    try:
        return LockOwner(**json.loads((Path(runs_dir) / LOCK_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def owner_state(runs_dir: str | os.PathLike[str]) -> tuple[str, LockOwner | None]:
    """``("none"|"live"|"stale", owner)``: is a launch holding this store right now?

    ``stale``: a lock file is there but nobody holds it (its owner was killed).
    """
    path = Path(runs_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "none", None
    try:
        free = _try_flock(fd)  # released again when fd closes
    finally:
        os.close(fd)
    owner = read_owner(runs_dir)
    return ("stale" if free else "live"), owner


def acquire(runs_dir: str | os.PathLike[str], grid: str) -> Lock:
    """Take the store's lock for this process (a stale one is taken over).

    Raises:
        BadInput: a live launch holds it; the message names its host and pid.
    """
    runs = Path(runs_dir)
    if runs.exists() and not runs.is_dir():
        raise BadInput(f"--runs {str(runs)!r} is a file; expected a run-store directory")
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_flock(fd):
            os.close(fd)
            owner = read_owner(runs)
            who = owner.describe() if owner else "another process"
            raise BadInput(f"run store {str(runs)!r} is locked by a running launch: {who}; "
                           f"watch it with 'engine grid status', or wait for it to finish")
        try:  # the holder we waited on may have unlinked the file: lock the file that is there now
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    owner = LockOwner(host=socket.gethostname(), pid=os.getpid(), grid=grid,
                      since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(owner)).encode(), 0)
    os.fsync(fd)
    return Lock(path, owner, fd)


@contextmanager
def grid_lock(runs_dir: str | os.PathLike[str], grid: str) -> Iterator[LockOwner]:
    """``with grid_lock(runs, name):`` hold the store for the body (released even on error)."""
    lock = acquire(runs_dir, grid)
    try:
        yield lock.owner
    finally:
        lock.release()
