"""``compare``: predicted loss per pruning ratio at equal tokens and at equal compute.

Equal tokens: every ratio is post-trained on the same ``tokens``.

Equal compute: the reference is the parent. The budget is ``C = 6 * N0 * tokens`` FLOPs (what
post-training the unpruned parent on ``tokens`` would cost); a pruned model with
``N = (1 - rho) * N0`` parameters spends it on ``tokens / (1 - rho)`` tokens. The reference
does not depend on which ratios are listed, so adding a ratio never changes another row.

From scratch (when a Chinchilla card for the family is given or bundled): a model of the same
size N trained from random init on the same tokens (so also the same compute) as the pruned
one. The parent's pretraining is treated as sunk: that is the question a user who already
owns the parent asks. The winner is called only when the two bootstrap intervals do not
overlap; otherwise it is ``uncertain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fitting.laws import CHINCHILLA
from planner.cards import Card
from planner.query import Parent
from planner.recommend import (Estimate, default_loss_before, identifiability_warnings, interval,
                               loss_at, range_warnings)


@dataclass(frozen=True)
class Arm:
    """One ratio under one budget rule."""

    tokens: float
    loss: Estimate
    scratch_loss: Estimate | None
    winner: str | None
    """``pruning``, ``scratch``, ``uncertain`` or None without a Chinchilla card."""

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "loss": self.loss.to_dict(),
                "scratch_loss": None if self.scratch_loss is None else self.scratch_loss.to_dict(),
                "winner": self.winner}


@dataclass(frozen=True)
class Row:
    ratio: float
    params_after: float
    equal_tokens: Arm
    equal_compute: Arm

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "params_after": self.params_after,
                "equal_tokens": self.equal_tokens.to_dict(), "equal_compute": self.equal_compute.to_dict()}


@dataclass(frozen=True)
class Comparison:
    """Everything ``planner compare`` answers (``to_dict`` is the --json schema)."""

    parent: Parent
    method: str
    tokens: float
    card: Card
    card_reason: str
    scratch: Card | None
    scratch_reason: str
    loss_before: float
    loss_before_source: str
    rows: tuple[Row, ...]
    warnings: tuple[str, ...]

    @property
    def compute_flops(self) -> float:
        return 6.0 * self.parent.params_before * self.tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "compare", "schema_version": 1,
            "query": {"params_before": self.parent.params_before, "model": self.parent.name,
                      "family": self.parent.family, "method": self.method, "tokens": self.tokens,
                      "ratios": [r.ratio for r in self.rows]},
            "card": {**self.card.provenance(), "selected_because": self.card_reason},
            "scratch_card": None if self.scratch is None else self.scratch.provenance(),
            "scratch_reason": self.scratch_reason,
            "assumptions": {"loss_before": self.loss_before, "loss_before_source": self.loss_before_source,
                            "parent": self.parent.describe()},
            "equal_compute": {"flops": self.compute_flops,
                              "reference": "6 * params_before * tokens (the unpruned parent on --tokens); "
                                           "ratio rho gets tokens / (1 - rho)"},
            "rows": [r.to_dict() for r in self.rows],
            "warnings": list(self.warnings),
        }


def scratch_loss(card: Card, n: float, tokens: float) -> Estimate:
    """Chinchilla loss of an ``n``-parameter model trained from scratch on ``tokens``."""
    def f(params: np.ndarray) -> np.ndarray:
        return CHINCHILLA.predict(params, N=n, D=tokens)
    return Estimate(float(np.squeeze(f(card.card.params_array))), *interval(card, f))


def winner(pruned: Estimate, scratch: Estimate) -> str:
    """``pruning``/``scratch`` when the intervals separate them (or, without intervals, the
    point estimates do), else ``uncertain``."""
    if None not in (pruned.low, pruned.high, scratch.low, scratch.high):
        if pruned.high < scratch.low:
            return "pruning"
        if scratch.high < pruned.low:
            return "scratch"
        return "uncertain"
    return "pruning" if pruned.value < scratch.value else "scratch"


def _arm(card: Card, scratch: Card | None, n0: float, ratio: float, tokens: float, l0: float) -> Arm:
    loss = loss_at(card, n0, ratio, tokens, l0)
    if scratch is None:
        return Arm(tokens, loss, None, None)
    other = scratch_loss(scratch, (1.0 - ratio) * n0, tokens)
    return Arm(tokens, loss, other, winner(loss, other))


def compare(parent: Parent, method: str, ratios: tuple[float, ...], tokens: float, card: Card,
            card_reason: str, *, scratch: Card | None = None, scratch_reason: str = "",
            loss_before: float | None = None) -> Comparison:
    """Rows per ratio at equal tokens and at equal compute (reference: the parent, above)."""
    n0 = float(parent.params_before)
    if loss_before is None:
        l0, l0_source = default_loss_before(card)
    else:
        l0, l0_source = loss_before, "given with --loss-before"
    rows = tuple(Row(r, (1 - r) * n0, _arm(card, scratch, n0, r, tokens, l0),
                     _arm(card, scratch, n0, r, tokens / (1 - r), l0)) for r in ratios)
    warnings = range_warnings(card, n0=n0, tokens=max(tokens / (1 - r) for r in ratios),
                              loss_before=loss_before, tokens_label="largest budget")
    for r in ratios:
        warnings += range_warnings(card, ratio=r)
    warnings += identifiability_warnings(card)
    if scratch is not None:
        warnings += [f"from-scratch card: {w}" for w in
                     _scratch_range(scratch, min((1 - r) * n0 for r in ratios), tokens)]
    return Comparison(parent, method, tokens, card, card_reason, scratch, scratch_reason, l0,
                      l0_source, rows, tuple(warnings))


def _scratch_range(card: Card, n: float, tokens: float) -> list[str]:
    """Extrapolation warnings of the Chinchilla card (axes N, D)."""
    out = []
    for axis, value in (("N", n), ("D", tokens)):
        span = card.axis_range(axis)
        if span is not None and not span[0] <= value <= span[1]:
            far = value / span[1] if value > span[1] else span[0] / value
            out.append(f"{axis} = {value:.3g} is {far:.3g}x outside its fitted range [{span[0]:.3g}, {span[1]:.3g}]")
    return out
