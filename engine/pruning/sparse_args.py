"""Options of the sparse methods (2:4 and unstructured), torch-free.

Split from :mod:`engine.pruning.sparse_common` so that ``engine grid plan`` can check a 2:4
ratio against a parent's config before anything loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from data.cli import BadInput
from engine.pruning.args import options

SCORERS: tuple[str, ...] = ("magnitude", "wanda", "sparsegpt")
GROUPS: tuple[str, ...] = ("row", "layer")


@dataclass(frozen=True)
class SparseArgs:
    """Knobs of the sparse methods (``args`` of ``prune``); every default is the papers'."""

    tolerance: float = 0.02
    """2:4 only: largest allowed gap between the asked ratio and the one 2:4 achieves."""
    group: str | None = None
    """Unstructured comparison group: ``row`` (each output row drops the same share, Wanda's
    per-output comparison) or ``layer`` (one threshold per weight matrix, the classic
    magnitude baseline). None: ``row`` for Wanda, ``layer`` for magnitude. SparseGPT selects
    per block of columns and ignores it."""
    n: int = 2
    """N:M patterns: weights kept in each group of ``m`` consecutive inputs."""
    m: int = 4
    """N:M patterns: group size along the input dimension (NVIDIA sparse tensor cores: 2:4)."""
    blocksize: int = 128
    """SparseGPT: columns per lazy-update block (mask selection happens per block)."""
    damp: float = 0.01
    """SparseGPT: dampening added to the Hessian diagonal, as a fraction of its mean."""
    batch_size: int = 8
    """Calibration sequences per forward pass of a decoder layer."""

    def __post_init__(self) -> None:
        if self.group is not None and self.group not in GROUPS:
            raise BadInput(f"sparse args: group {self.group!r} not allowed; use one of {', '.join(GROUPS)}")
        if not 0 < self.n < self.m:
            raise BadInput(f"sparse args: n={self.n}, m={self.m}: need 0 < n < m (e.g. n=2, m=4)")
        if self.blocksize <= 0 or self.blocksize % self.m:
            raise BadInput(f"sparse args: blocksize {self.blocksize} must be a positive multiple of m={self.m}")
        if not 0 <= self.damp < 1 or not 0 <= self.tolerance < 1 or self.batch_size < 1:
            raise BadInput(f"sparse args: need 0 <= damp < 1, 0 <= tolerance < 1, batch_size >= 1; "
                           f"got {self.damp}, {self.tolerance}, {self.batch_size}")

    @classmethod
    def from_dict(cls, args: dict[str, Any] | None) -> SparseArgs:
        return options(cls, args, "sparse")
