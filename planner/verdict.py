"""The first line of every answer: how much to trust it, in words a practitioner reads first.

Three verdicts: ``in range`` (the card saw this parent size, ratio and budget),
``extrapolating Nx beyond the card`` (N = the largest factor by which N0 or D* leaves the
card's fitted range), and ``pilot-calibrated`` (the token term was fitted on the user's own
pilot curve; N then says how far D* lies beyond the pilot's last point).
"""

from __future__ import annotations

from data.units import format_count
from planner.cards import Card

MODES = ("card", "pilot", "pilot+card")


def _factor(value: float, span: tuple[float, float] | None) -> float:
    """How many times ``value`` lies outside ``span`` (1.0 inside)."""
    if span is None or not value > 0:
        return 1.0
    lo, hi = span
    return value / hi if value > hi else lo / value if value < lo else 1.0


def card_factor(card: Card, n0: float, tokens: float) -> tuple[float, list[str]]:
    """The extrapolation factor and the axes that leave the card's range, in words."""
    parts, worst = [], 1.0
    for axis, value, name in (("params_before", n0, "N0"), ("tokens", tokens, "D*")):
        span = card.axis_range(axis)
        f = _factor(value, span)
        if f > 1.0 + 1e-9:
            worst = max(worst, f)
            edge = span[1] if value > span[1] else span[0]
            parts.append(f"{name} = {format_count(value)} vs fitted {format_count(edge)}")
    return worst, parts


def verdict(mode: str, card: Card | None, n0: float, ratio: float, tokens: float,
            pilot_tokens: float | None = None) -> str:
    """One line, starting with ``verdict:``."""
    if mode != "card":
        how = ("pilot-only power law L = L_inf + B / D^beta, no card" if mode == "pilot"
               else "pilot curve with the card's token exponent beta as prior")
        beyond = tokens / pilot_tokens if pilot_tokens else float("nan")
        reach = (f"D* is {beyond:.3g}x the pilot's last point" if beyond > 1
                 else "D* lies within the pilot")
        return f"verdict: pilot-calibrated ({how}); {reach}"
    assert card is not None
    factor, parts = card_factor(card, n0, tokens)
    span = card.axis_range("ratio")
    if span is not None and not span[0] - 1e-9 <= ratio <= span[1] + 1e-9:
        parts.append(f"ratio {ratio:g} outside fitted [{span[0]:.3g}, {span[1]:.3g}]")
    if not parts:
        return "verdict: in range (the card was fitted on this parent size, ratio and budget)"
    head = f"extrapolating {factor:.3g}x beyond the card" if factor > 1 else "outside the card's ratios"
    return f"verdict: {head} ({'; '.join(parts)}): calibrate with --pilot"
