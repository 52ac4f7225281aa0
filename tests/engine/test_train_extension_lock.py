"""A process killed while torch loads the JIT comm op must not hang every later job."""

import os
import time

from engine.train import runtime


def test_stale_lock_beside_built_library_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = tmp_path / "deepspeed_shm_comm"
    folder.mkdir()
    (folder / "deepspeed_shm_comm.so").write_bytes(b"\x7fELF")
    lock = folder / "lock"
    lock.touch()
    assert runtime.clear_stale_extension_locks() == []  # fresh: a live loader may hold it
    old = time.time() - runtime.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    assert runtime.clear_stale_extension_locks() == [str(lock)]
    assert not lock.exists()


def test_lock_without_library_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = tmp_path / "deepspeed_shm_comm"
    folder.mkdir()
    lock = folder / "lock"
    lock.touch()
    old = time.time() - 10 * runtime.STALE_LOCK_S
    os.utime(lock, (old, old))
    assert runtime.clear_stale_extension_locks() == []  # a first build may still be running
    assert lock.exists()
