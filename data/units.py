"""Parsing and printing of parameter and token counts (``8B``, ``1.5B``, ``500M``, ``8e9``, ``2T``).

torch-free and pandas-free: the planner's sub-second path imports it.
"""

from __future__ import annotations

import math
import re

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtT]?)\s*$")


def parse_count(text: str | int | float, *, what: str = "count", allow_model: bool = False) -> int:
    """``"8B"`` -> 8_000_000_000; exact integers pass through; model names resolve when allowed.

    Raises:
        ValueError: one line naming the bad value and the accepted forms.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text)
        match = _COUNT.match(raw)
        if match is None:
            if allow_model:
                from data.models import get_spec  # local: keeps this module dependency-free

                try:
                    return get_spec(raw).params_total
                except KeyError:
                    pass
            forms = "a number with an optional K/M/B/T suffix (8B, 1.5B, 500M, 8e9, 8030261248)"
            if allow_model:
                forms += " or a model name (llama-3.1-8b, qwen2.5-0.5b, ...)"
            raise ValueError(f"bad {what} {raw!r}: expected {forms}")
        value = float(match.group(1)) * _SUFFIX[match.group(2).upper()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"bad {what} {text!r}: must be a positive finite number")
    return int(round(value))


def format_count(value: float, digits: int = 3) -> str:
    """8.03e9 -> ``8.03B``; 5e5 -> ``500K``."""
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def format_amount(x: float) -> str:
    """Hours or dollars, readable at every scale: 12,345 / 12.3 / 0.012 (never a bare "0")."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2g}"
