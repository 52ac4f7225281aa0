"""The first line of every answer: how much to trust it, in words a practitioner reads first.

Four verdicts: ``in range`` (the card saw this parent size, ratio and budget),
``extrapolating Nx beyond the card`` (N = the largest factor by which N0 or D* leaves the
card's fitted range), ``not credible at this scale`` (the card's formula predicts losses no
model of this family can have: no budget is given), and ``pilot-calibrated`` (the token term
was fitted on the user's own pilot curve; N then says how far D* lies beyond the pilot's last
point).
"""

from __future__ import annotations

import math

from data.units import format_count
from fitting.card import LawCard, beyond_edge

MODES = ("card", "pilot", "pilot+card")
NOT_CREDIBLE = "verdict: not credible at this scale"


def _factor(value: float, span: tuple[float, float] | None) -> float:
    """How many times ``value`` lies outside ``span`` (1.0 inside)."""
    if span is None or not value > 0:
        return 1.0
    lo, hi = span
    side = beyond_edge(value, lo, hi)
    return 1.0 if side == 0 else value / hi if side > 0 else lo / value


def card_factor(card: LawCard, n0: float, tokens: float, what: str = "D*") -> tuple[float, list[str]]:
    """The extrapolation factor and the axes that leave the card's range, in words."""
    parts, worst = [], 1.0
    for axis, value, name in ((card.law.size_axis, n0, "N0"), (card.law.token_axis, tokens, what)):
        span = card.axis_range(axis)
        f = _factor(value, span)
        if f > 1.0 + 1e-9:
            worst = max(worst, f)
            edge = span[1] if value > span[1] else span[0]
            parts.append(f"{name} = {format_count(value)} vs fitted {format_count(edge)}")
    return worst, parts


def verdict(mode: str, card: LawCard | None, n0: float, ratio: float, tokens: float,
            pilot_tokens: float | None = None, *, doubt: str | None = None, what: str = "D*") -> str:
    """One line, starting with ``verdict:``; ``doubt`` (from :func:`credibility`) makes it
    :data:`NOT_CREDIBLE`, with how far N0 lies beyond the card's parents."""
    if doubt is not None:
        assert card is not None
        span = card.axis_range(card.law.size_axis)
        far = "" if span is None else (f": N0 = {format_count(n0)} is {_factor(n0, span):.3g}x the card's "
                                       f"{'largest' if n0 > span[1] else 'smallest'} parent "
                                       f"({format_count(span[1] if n0 > span[1] else span[0])})")
        tail = "the card gives no budget here" if what == "D*" else "its losses at this N0 are no prediction"
        return f"{NOT_CREDIBLE}{far}; {tail}"
    if mode != "card":
        how = ("pilot-only power law L = L_inf + B / D^beta, no card" if mode == "pilot"
               else "pilot curve with the card's token exponent beta as prior")
        beyond = tokens / pilot_tokens if pilot_tokens else float("nan")
        reach = (f"D* is {beyond:.3g}x the pilot's last point" if beyond > 1
                 else "D* lies within the pilot")
        return f"verdict: pilot-calibrated ({how}); {reach}"
    assert card is not None
    factor, parts = card_factor(card, n0, tokens, what)
    span = card.axis_range(card.law.ratio_axis)
    if _factor(ratio, span) > 1.0:
        parts.append(f"ratio {ratio:g} outside fitted [{span[0]:.3g}, {span[1]:.3g}]")
    if not parts:
        return "verdict: in range (the card was fitted on this parent size, ratio and budget)"
    head = f"extrapolating {factor:.3g}x beyond the card" if factor > 1 else "outside the card's ratios"
    return f"verdict: {head} ({'; '.join(parts)}): calibrate with --pilot"


def uniform_guess_loss(family: str) -> float | None:
    """ln(vocabulary) of a family's real models: the loss of predicting every token uniformly.

    No trained model of the family can lose more than this above its parent, so a card that
    predicts a larger dL at the user's N0 has stopped describing models there (None: a family
    without real models in the table, e.g. the tiny test shapes).
    """
    from data.models import MODELS

    vocabs = [m.vocab for m in MODELS.values() if m.family == family and m.family != "tiny"]
    return math.log(max(vocabs)) if vocabs else None


def credibility(family: str, gap: float, where: str) -> str | None:
    """Why a predicted ``gap`` = L - L0 (nats) ``where`` (``at D*``) cannot be right, or None."""
    ceiling = uniform_guess_loss(family)
    if ceiling is None or not gap > ceiling:
        return None
    return (f"the law predicts L - L0 = {gap:+.4g} nats {where}, more than a uniform guess over the "
            f"{family} vocabulary loses in all (ln V = {ceiling:.2f} nats): its size and ratio terms do "
            f"not transfer to this N0")
