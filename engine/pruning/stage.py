"""What a trained pruning stage needs of a trainer, as a protocol: nothing more.

Targeted pruning's learned masks and the width search's short distillation train under
DeepSpeed, in the training engine's one loop. This package keeps scores, masks and surgery;
the trainer (the training engine's ``StageTrainer``) is handed to the method as its
``trainer`` option by whoever runs it (the recipe, ``engine prune``), so the pruning
package never imports the training engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from data.cli import BadInput


class Ranks(Protocol):
    """This process's place in the process group."""

    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool: ...


class StageEngine(Protocol):
    """The DeepSpeed engine wrapping the stage's module."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def backward(self, loss: torch.Tensor) -> Any: ...

    def step(self) -> None: ...

    def destroy(self) -> None: ...


class Settings(Protocol):
    """The stage's DeepSpeed and optimiser settings (fields of its options dataclass)."""

    micro_batch: int
    lr: float
    warmup_frac: float
    zero_stage: int
    precision: str


class Trainer(Protocol):
    """Builds the engine of a stage, runs its loop, and keeps its resume point."""

    dist: Ranks

    def initialize(self, module: nn.Module, param_groups: list[dict[str, Any]], settings: Settings,
                   steps: int) -> StageEngine:
        """``deepspeed.initialize`` with a torch AdamW over ``param_groups`` for ``steps`` steps."""

    def shard_stream(self, shards: str, seq_len: int | None, rows: int, seed: int) -> tuple[Iterator[torch.Tensor], int]:
        """(global batch stream, seq_len) of a ``data prepare`` shard directory's mixture."""

    def resume(self, engine: StageEngine, state_dir: Path) -> dict[str, Any] | None:
        """Load the stage's checkpoint in ``state_dir`` into ``engine``: its client state, or
        None when there is none."""

    def run(self, engine: StageEngine, steps: int, position: Callable[[], int], step: Callable[[], None], *,
            after: Callable[[int], None] | None = None, save_at: Callable[[int], bool] | None = None,
            state: Callable[[], dict[str, Any]] | None = None, state_dir: Path | None = None) -> None:
        """The training loop: ``step`` until ``position()`` reaches ``steps``; ``after(step)``
        after each, and a checkpoint of ``state()`` into ``state_dir`` where ``save_at(step)``."""

    def discard(self, state_dir: Path) -> None:
        """Remove the stage's checkpoints (the stage is done)."""


def need_trainer(trainer: Trainer | None, method: str) -> Trainer:
    """The ``trainer`` option of a trained method, or BadInput naming what to pass."""
    if trainer is None:
        raise BadInput(f"{method} trains under DeepSpeed: pass the training engine's StageTrainer as its "
                       "'trainer' option (the recipe and 'engine prune' do)")
    return trainer
