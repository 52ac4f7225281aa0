"""Options of local reconstruction (engine.pruning.recon), torch-free.

``engine grid plan`` validates job files through ``engine.train.config`` without importing
torch, so the granularity check lives here, beside the dataclass the library takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data.cli import BadInput
from engine.pruning.args import options

GRANULARITIES = ("layer", "block", "blocks:K")
"""``layer``: each linear on its own; ``block``: one decoder block; ``blocks:K``: K consecutive."""

def parse_granularity(value: str) -> int | None:
    """Blocks per submodel: ``block`` -> 1, ``blocks:K`` -> K, ``layer`` -> None (per linear).

    Raises:
        BadInput: anything else, naming the allowed forms.
    """
    text = str(value).strip().lower()
    if text == "layer":
        return None
    if text == "block":
        return 1
    if text.startswith("blocks:") and text[len("blocks:"):].isdigit() and int(text[len("blocks:"):]) >= 1:
        return int(text[len("blocks:"):])
    raise BadInput(f"reconstruction granularity {value!r} not allowed; allowed: layer, block, "
                   f"blocks:K (K >= 1 consecutive blocks, e.g. blocks:2)")


@dataclass(frozen=True)
class ReconArgs:
    """Knobs of local reconstruction; every default is visible here."""

    granularity: str = "block"
    """``layer``, ``block`` or ``blocks:K`` (see :data:`GRANULARITIES`)."""
    steps: int = 100
    """Adam steps per submodel (one calibration batch per step, cycled)."""
    lr: float = 1e-4
    """Adam learning rate per submodel (constant)."""
    batch_size: int = 8
    """Calibration sequences per step (and per forward pass when capturing activations)."""
    seed: int = 0
    """Seed of the batch order (submodel ``u`` uses ``seed + u``: a resumed run is identical)."""

    def __post_init__(self) -> None:
        parse_granularity(self.granularity)
        if self.steps < 1 or self.batch_size < 1:
            raise BadInput(f"reconstruction steps={self.steps} and batch_size={self.batch_size} must be >= 1")
        if not self.lr > 0:
            raise BadInput(f"reconstruction lr={self.lr} must be > 0")

    @classmethod
    def from_dict(cls, args: dict[str, Any] | None) -> ReconArgs:
        return options(cls, args, "reconstruction")
