"""The types that cross module boundaries in the training engine, as protocols (torch-free).

A DeepSpeed engine is passed from the recipe to the loop, the checkpoints and the monitor;
these modules use only the part of it named here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from torch import nn


class Engine(Protocol):
    """What the training stages use of a ``deepspeed.DeepSpeedEngine``."""

    module: nn.Module
    global_rank: int

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def backward(self, loss: Any) -> Any: ...

    def step(self) -> None: ...

    def get_lr(self) -> list[float]: ...

    def save_checkpoint(self, save_dir: str, tag: str | None = None, client_state: dict[str, Any] | None = None,
                        save_latest: bool = True) -> Any: ...

    def load_checkpoint(self, load_dir: str, tag: str | None = None) -> tuple[Any, Any]: ...

    def destroy(self) -> None: ...
