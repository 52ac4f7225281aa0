"""The one training loop: step, eval, checkpoint, stop, for every stage that trains under DeepSpeed.

Post-training and pretraining (``engine.train.recipe``), the learned-mask stage of targeted
pruning and the width search's short distillation (``engine.pruning``) differ in what one
step does and what happens after it; the order of step, evaluation, checkpoint and stop,
and the wall-clock checkpoint, are here once. A stage hands :func:`run` its step and its
``after`` hook, which says what the step it just finished is (:class:`Mark`).

Every rank runs the loop and must reach the same marks in the same order: checkpoints and
the clock's decision are collectives.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.train.protocols import Engine
from engine.train.runtime import Dist, broadcast


class Mark(enum.Enum):
    """What the step just finished is, as the stage's ``after`` hook sees it."""

    PLAIN = "plain"
    """An ordinary step: a checkpoint is saved here when the wall clock says so."""
    POINT = "point"
    """A checkpoint point of the stage's own schedule (an eval point): saved now."""
    HOLD = "hold"
    """No checkpoint may be taken here (the stage's state would not resume exactly)."""
    STOP = "stop"
    """The stage ends at this step (the online budget is reached)."""


@dataclass
class SaveClock:
    """The wall-clock checkpoint: due at the first step boundary ``every_s`` seconds after the
    last save (or the loop's start). Rank 0's clock decides for all; 0 never saves."""

    every_s: float
    dist: Dist
    last: float = field(default_factory=time.monotonic)

    def due(self) -> bool:
        if self.every_s <= 0:
            return False
        late = time.monotonic() - self.last >= self.every_s if self.dist.is_main else None
        return bool(broadcast(late, self.dist))

    def reset(self) -> None:
        self.last = time.monotonic()


def run(engine: Engine, total: int, position: Callable[[], int], step: Callable[[], None],
        after: Callable[[int], Mark] = lambda _: Mark.PLAIN, save: Callable[[int], None] | None = None,
        clock: SaveClock | None = None) -> None:
    """Train until ``position()`` reaches ``total`` optimizer steps (or ``after`` says STOP).

    ``step`` runs one optimizer step and advances the stage's position; ``after(step)`` does
    the stage's work at that step (logging, evaluation) and returns its :class:`Mark`;
    ``save(step)`` checkpoints the stage (None: the stage does not checkpoint). No checkpoint
    is saved at the last step: the stage ends there.
    """
    engine.train()
    while position() < total:
        step()
        at = position()
        mark = after(at)
        if mark is Mark.STOP:
            return
        if save is None or at >= total or mark is Mark.HOLD:
            continue
        if mark is Mark.POINT or (clock is not None and clock.due()):
            save(at)
            if clock is not None:
                clock.reset()
