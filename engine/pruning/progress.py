"""Progress bars for long pruning and reconstruction loops (tqdm on stderr).

A bar appears only once its loop has run for ``DELAY_S`` seconds, so quick runs (tests, tiny
models) print nothing, while SparseGPT on a real model shows layers done and time left
instead of staying silent for half an hour. stdout stays clean for ``--json``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DELAY_S = 3.0
"""Seconds before a bar is drawn (tqdm's ``delay``)."""


def bar(items: Iterable[T], desc: str, total: int | None = None, unit: str = "layer") -> Iterator[T]:
    """``items`` wrapped in a tqdm bar on stderr (``desc``: what is being done)."""
    from tqdm.auto import tqdm

    return iter(tqdm(items, desc=desc, total=total, unit=unit, delay=DELAY_S, file=sys.stderr,
                     dynamic_ncols=True, leave=False))


def counter(total: int, desc: str, unit: str = "layer") -> Any:
    """A manual tqdm bar (call ``update(n)``, ``set_postfix_str``, ``close``) on stderr."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, delay=DELAY_S, file=sys.stderr,
                dynamic_ncols=True, leave=False)
