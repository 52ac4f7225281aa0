"""Keep-masks held one bit per weight.

A bool tensor spends a byte per entry: the masks of SmolLM2-135M's decoder linears are 101
MiB, a fifth of the fp32 weights, held by the caller through pruning and reconstruction
(the memory budget allows 1.3x the weights for everything but the activations). Packed to
bits they are 13 MiB, and one mask is unpacked when it is used (numpy's packbits: C code, a
few milliseconds for the largest SmolLM2 linear).

:class:`PackedMasks` is a ``MutableMapping[str, Tensor]`` with the same keys and values a
dict of bool tensors has, so code that reads ``masks[name]`` or iterates ``items()`` is
unchanged; ``dict(masks)`` unpacks all of them (a trainer re-applies masks every step and
wants them unpacked, on its device).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

import numpy as np
import torch


class PackedMasks(MutableMapping[str, torch.Tensor]):
    """Parameter name -> bool keep-mask (True = keep), stored bit-packed on the CPU."""

    def __init__(self, masks: Mapping[str, torch.Tensor] | None = None) -> None:
        self._bits: dict[str, tuple[np.ndarray, torch.Size]] = {}
        for name, mask in (masks or {}).items():
            self[name] = mask

    @classmethod
    def of(cls, masks: Mapping[str, torch.Tensor] | None) -> PackedMasks:
        """``masks`` itself when already packed, else a packed copy."""
        return masks if isinstance(masks, PackedMasks) else cls(masks)

    def __setitem__(self, name: str, mask: torch.Tensor) -> None:
        keep = mask.detach().to("cpu", torch.bool).contiguous()
        self._bits[name] = (np.packbits(keep.numpy().reshape(-1)), keep.shape)

    def __getitem__(self, name: str) -> torch.Tensor:
        bits, shape = self._bits[name]
        flat = np.unpackbits(bits, count=shape.numel()).view(np.bool_)
        return torch.from_numpy(flat).reshape(shape)

    def __delitem__(self, name: str) -> None:
        del self._bits[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._bits)

    def __len__(self) -> int:
        return len(self._bits)

    def packed(self, name: str) -> bytes:
        """The mask's bits (8 entries per byte, row-major), e.g. to hash it."""
        return self._bits[name][0].tobytes()

    @property
    def nbytes(self) -> int:
        return sum(bits.nbytes for bits, _ in self._bits.values())
