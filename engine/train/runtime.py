"""Process-group plumbing: one initialisation per process, rank-0 decisions shared with all.

The backend comes from the device (DeepSpeed's accelerator: ``gloo`` on CPU, ``nccl`` on
CUDA); nothing here hard-codes one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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
    # (DEEPSPEED.md); a plain `python -m engine.train` is a world of one.
    if "RANK" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ:
        return
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))


def init_distributed() -> Dist:
    """Initialise torch.distributed through DeepSpeed once; later calls return the same."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    _single_process_env()
    accel = get_accelerator()
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=accel.communication_backend_name())
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
