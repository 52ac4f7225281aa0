"""The trainer of the trained pruning stages (``engine.pruning.stage.Trainer``).

Targeted pruning and the width search get one of these as their ``trainer`` option: their
DeepSpeed JSON comes from the one builder (:func:`engine.train.dsconfig.ds_config`), their
steps run in the one loop (:func:`engine.train.loop.run`), their checkpoints are the run's
kind (:mod:`engine.train.checkpoint`: complete tags, ``latest``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.pruning.stage import Settings
from engine.train import checkpoint, loop
from engine.train.config import DataConfig, DeepSpeedConfig, OptimConfig
from engine.train.dsconfig import ds_config
from engine.train.protocols import Engine
from engine.train.runtime import Dist, init_distributed


def stage_ds_config(settings: Settings, steps: int, world: int) -> dict[str, Any]:
    """DeepSpeed JSON of a stage (WarmupCosineLR scales every param group's own lr)."""
    return ds_config(DeepSpeedConfig(zero_stage=settings.zero_stage, precision=settings.precision,
                                     micro_batch=settings.micro_batch),
                     OptimConfig(lr=settings.lr, weight_decay=0.0, warmup_frac=settings.warmup_frac), steps, world)


class StageTrainer:
    """Runs a pruning stage in this process group."""

    def __init__(self) -> None:
        self.dist: Dist = init_distributed()

    def initialize(self, module: nn.Module, param_groups: list[dict[str, Any]], settings: Settings,
                   steps: int) -> Engine:
        import deepspeed

        optimizer = torch.optim.AdamW(param_groups, lr=settings.lr)
        engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer,
                                               config=stage_ds_config(settings, steps, self.dist.world))
        return engine

    def shard_stream(self, shards: str, seq_len: int | None, rows: int, seed: int) -> tuple[Iterator[torch.Tensor], int]:
        from engine.train.sources import open_shards

        data = open_shards(DataConfig(shards=shards, seq_len=seq_len))
        return data.train_batches(rows, seed), data.seq_len

    def resume(self, engine: Engine, state_dir: Path) -> dict[str, Any] | None:
        return checkpoint.load(engine, state_dir) if checkpoint.has_checkpoint(state_dir) else None

    def run(self, engine: Engine, steps: int, position: Callable[[], int], step: Callable[[], None], *,
            after: Callable[[int], None] | None = None, save_at: Callable[[int], bool] | None = None,
            state: Callable[[], dict[str, Any]] | None = None, state_dir: Path | None = None) -> None:
        def mark(at: int) -> loop.Mark:
            if after is not None:
                after(at)
            return loop.Mark.POINT if save_at is not None and save_at(at) else loop.Mark.PLAIN

        def save(at: int) -> None:
            checkpoint.save(engine, state_dir, at, state(), self.dist.is_main)

        loop.run(engine, steps, position, step, mark, save if state is not None and state_dir is not None else None)

    def discard(self, state_dir: Path) -> None:
        checkpoint.remove(state_dir)
