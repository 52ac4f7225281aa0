"""Host-memory behaviour of long CPU jobs that allocate and free large tensors in turn.

glibc serves an allocation from ``mmap`` only above a threshold that it *raises* to the size
of every mmapped block freed (up to 32 MiB). After the first few frees, the activations and
optimizer states of a reconstruction step (1-50 MiB each) come from the heap, whose freed
holes are rarely returned to the system: resident memory then keeps the high-water mark of
every step plus fragmentation. A fixed threshold trades page faults (a fresh mmap is zeroed
on every allocation) for that. Measured on SmolLM2-135M, block reconstruction of 32 x 256
tokens, 2 steps per block, each run alone in a fresh shell (peak RSS / seconds):

    threshold   default    32 MiB    8 MiB    4 MiB    2 MiB    1 MiB
    peak MiB      1,445     1,417    1,400    1,338    1,319    1,310
    seconds        66.7      67.0     67.9     74.6     79.5     89.8

4 MiB keeps most of the saving (107 of 135 MiB) for 12% more time; below it the page faults
of the many small activations cost more than the memory they save. The setting holds only
inside :func:`mmap_large_allocations` (a grid that post-trains after reconstructing, in the
same process, should not pay the page faults): on exit the threshold goes to 32 MiB, where the
default's dynamic threshold ends up after a few large frees (measured: the same 67 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable, Iterator

M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter number (malloc.h); setting it also turns the dynamic raise off."""
MMAP_THRESHOLD_BYTES = 4 << 20
AFTER_BYTES = 32 << 20
"""glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the ceiling of its dynamic threshold."""


@functools.cache
def _libc_function(name: str) -> Callable[..., int] | None:
    """glibc's ``name`` (``mallopt``, ``malloc_trim``), or None off Linux and on C libraries
    without it (musl and others)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim(0)``).

    Returns whether it ran (False on other C libraries).
    """
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def set_mmap_threshold(threshold: int) -> bool:
    """Serve allocations of ``threshold`` bytes or more from mmap (glibc only).

    Returns whether the setting took effect (False on other C libraries, where it is skipped).
    """
    mallopt = _libc_function("mallopt")
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))


@contextlib.contextmanager
def mmap_large_allocations(threshold: int = MMAP_THRESHOLD_BYTES) -> Iterator[bool]:
    """Inside: allocations of ``threshold`` bytes or more come from mmap; yields whether it took."""
    took = set_mmap_threshold(threshold)
    try:
        yield took
    finally:
        if took:
            set_mmap_threshold(AFTER_BYTES)
