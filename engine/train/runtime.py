"""Process-group plumbing: one initialisation per process, rank-0 decisions shared with all.

The backend comes from the device (DeepSpeed's accelerator: ``gloo`` on CPU, ``nccl`` on
CUDA); nothing here hard-codes one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.train.net import free_port


@dataclass(frozen=True)
class Dist:
    """Where this process sits."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _single_process_env() -> None:
    # Without RANK & co. DeepSpeed falls back to MPI discovery and dies on a missing mpi4py
    # (docs/deepspeed-cpu.md); a plain `python -m engine.train` is a world of one.
    if "RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))


SHM_BUFFER = "deepspeed_allreduce_buffer"
"""The name DeepSpeed's CPU all-reduce gives each rank's shared-memory segment (its shm.cpp)."""


def shm_buffer_path(rank: int, addr: str | None = None, port: str | None = None) -> Path:
    """Where this process group's segment of ``rank`` lives (named from MASTER_ADDR/PORT)."""
    addr = addr if addr is not None else os.environ.get("MASTER_ADDR", "")
    port = port if port is not None else os.environ.get("MASTER_PORT", "")
    return Path("/dev/shm") / f"{SHM_BUFFER}_{os.getuid()}_{addr}_{port}_{rank}"


def release_shm_names(rank: int, world: int) -> None:
    """Unlink this rank's all-reduce segment name once every rank has mapped every segment.

    DeepSpeed's CPU backend creates one 69 MB segment per rank in /dev/shm and never unlinks
    it, so each job left RAM behind for good (one test-suite run left 199 segments, 13.7 GB,
    on a 24 GB machine). Peers open the names only while they initialise: after the barrier
    the names are no longer needed, and the mappings live until the processes exit, so even a
    killed job leaves nothing behind.
    """
    import torch.distributed as dist

    if world > 1:
        dist.barrier()
    shm_buffer_path(rank).unlink(missing_ok=True)


STALE_LOCK_S = 120.0
"""A JIT-extension lock older than this, next to an already built library, is a dead builder's."""


def clear_stale_extension_locks(name: str = "deepspeed_shm_comm") -> list[str]:
    """Remove a torch JIT-extension ``lock`` file left by a process killed mid-load.

    torch's FileBaton waits forever for that file to disappear, so one SIGKILL during the
    first ``deepspeed.initialize`` (the CPU shm comm op, docs/deepspeed-cpu.md) would hang every later
    job on the machine. Only a lock that is old and sits beside a finished ``.so`` is removed:
    a live build finishes in seconds, and a missing ``.so`` means a build may be under way.
    """
    import time
    from pathlib import Path

    from torch.utils.cpp_extension import _get_build_directory

    folder = Path(_get_build_directory(name, verbose=False))
    lock = folder / "lock"
    try:
        stale = lock.exists() and any(folder.glob("*.so")) and time.time() - lock.stat().st_mtime > STALE_LOCK_S
    except OSError:
        return []
    if not stale:
        return []
    lock.unlink(missing_ok=True)
    print(f"[engine.train] removed a stale JIT-extension lock left by a killed process: {lock}", flush=True)
    return [str(lock)]


def prefer_own_ninja() -> None:
    """Put this interpreter's bin directory first on PATH, so torch JIT-builds with its ninja.

    torch rebuilds an extension whenever the ``ninja`` found on PATH changes (a Debian ninja in
    /usr/bin and pip's in the venv write incompatible logs into the shared build directory), and
    a rebuild blocks every DeepSpeed process on the machine for tens of seconds.
    """
    import sys
    from pathlib import Path

    own = str(Path(sys.executable).parent)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if parts[:1] != [own] and (Path(own) / "ninja").exists():
        os.environ["PATH"] = os.pathsep.join([own, *[p for p in parts if p != own]])


def init_distributed() -> Dist:
    """Initialise torch.distributed through DeepSpeed once; later calls return the same."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    _single_process_env()
    prefer_own_ninja()
    clear_stale_extension_locks()
    accel = get_accelerator()
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=accel.communication_backend_name())
        release_shm_names(dist.get_rank(), dist.get_world_size())
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    name = accel.device_name()
    device = torch.device(name, local_rank) if name != "cpu" else torch.device("cpu")
    if name != "cpu":
        accel.set_device(local_rank)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, device)


def broadcast(value: Any, dist_info: Dist) -> Any:
    """Rank 0's ``value`` on every rank (decisions such as skip/resume must agree)."""
    if dist_info.world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_across_ranks(value: float, dist_info: Dist) -> float:
    """Average a float over ranks (the train loss every rank logs and tests for NaN)."""
    if dist_info.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=dist_info.device)
    dist.all_reduce(t)
    return float(t.item()) / dist_info.world
