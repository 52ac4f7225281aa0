"""``recommend``: a post-training token budget for one pruned model, from a P2 law card.

Library side (returns data; ``planner.cli.recommend`` parses and renders). Three criteria:

- ``slope`` (default): D* where one more billion tokens improves the predicted loss by less
  than S nats (closed form, fitting's ``optimal_tokens``; independent of L0).
- ``target_loss``: the smallest D with predicted loss <= L; refused when L is at or below the
  law's asymptote for this (N0, rho).
- ``recover``: the smallest D that closes a fraction F of the post-pruning gap. P2 diverges as
  D -> 0, so "right after pruning" is the loss the law predicts at a reference budget D_ref =
  the smallest token count in the card's fitted range (the first evaluation after pruning
  the fit saw): gap = L(D_ref) - L0, target = L(D_ref) - F * gap. Refused (with the largest
  reachable F) when the target is below the asymptote.

Intervals are bootstrap percentiles over the card's samples (the card's ``ci.level``, 95 %
by default): each sample re-derives D and the losses, so they carry the fit's uncertainty,
not a normal approximation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data.cli import BadInput
from data.units import format_count
from planner import laws
from planner.cards import Card
from planner.hardware import Compute, Gpu, compute_cost
from planner.query import SPARSE_METHODS, Parent

BUDGET_MULTIPLES: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
DEFAULT_SLOPE = 1e-3
"""Nats per billion tokens. Past D*, 10B more tokens buy < 0.01 nats: about the seed-to-seed
spread of a held-out eval loss, so further spend is not measurable."""
CRITERIA = ("slope", "target_loss", "recover")


@dataclass(frozen=True)
class Criterion:
    """How D is chosen: ``kind`` in CRITERIA and its value (S, L or F)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in CRITERIA:
            raise BadInput(f"unknown criterion {self.kind!r}; allowed: {', '.join(CRITERIA)}")
        if self.kind == "recover" and not 0.0 < self.value < 1.0:
            raise BadInput(f"bad --recover {self.value!r}: the fraction of the gap to close must be in (0, 1)")
        if not self.value > 0:
            raise BadInput(f"bad --{self.kind.replace('_', '-')} {self.value!r}: must be positive")

    def describe(self) -> str:
        if self.kind == "slope":
            return f"slope: one more 1B tokens improves predicted loss by < {self.value:g} nats"
        if self.kind == "target_loss":
            return f"target loss: smallest budget with predicted loss <= {self.value:g}"
        return (f"recover: close {self.value:.0%} of the gap between the loss right after pruning "
                "(predicted at the card's smallest fitted budget) and L0")


@dataclass(frozen=True)
class Estimate:
    """A value with its bootstrap interval (None without samples or when none is finite)."""

    value: float
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": _num(self.value), "low": _num(self.low), "high": _num(self.high)}


@dataclass(frozen=True)
class Budget:
    """The predicted loss at one budget of the table around D*."""

    multiple: float
    tokens: float
    loss: Estimate
    compute: Compute

    def to_dict(self) -> dict[str, Any]:
        return {"multiple": self.multiple, "tokens": self.tokens, "loss": self.loss.to_dict(),
                "gpu_hours": self.compute.gpu_hours, "cost_usd": self.compute.cost_usd}


@dataclass(frozen=True)
class Recommendation:
    """Everything ``planner recommend`` answers (``to_dict`` is the --json schema)."""

    parent: Parent
    method: str
    ratio: float
    params_after: float
    card: Card
    card_reason: str
    loss_before: float
    loss_before_source: str
    criterion: Criterion
    tokens: Estimate
    loss: Estimate
    asymptote: Estimate
    budgets: tuple[Budget, ...]
    compute: Compute
    warnings: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "recommend", "schema_version": 1,
            "query": {"params_before": self.parent.params_before, "model": self.parent.name,
                      "family": self.parent.family, "method": self.method, "ratio": self.ratio,
                      "params_after": self.params_after},
            "card": {**self.card.provenance(), "selected_because": self.card_reason},
            "assumptions": {"loss_before": self.loss_before, "loss_before_source": self.loss_before_source,
                            "parent": self.parent.describe()},
            "criterion": {"kind": self.criterion.kind, "value": self.criterion.value,
                          "description": self.criterion.describe()},
            "tokens": self.tokens.to_dict(), "loss": self.loss.to_dict(),
            "asymptote": self.asymptote.to_dict(),
            "budgets": [b.to_dict() for b in self.budgets],
            "compute": self.compute.to_dict(),
            "warnings": list(self.warnings), "notes": list(self.notes),
        }


def _num(x: float | None) -> float | None:
    """JSON-safe: NaN/inf become None."""
    return None if x is None or not np.isfinite(x) else float(x)


def default_loss_before(card: Card) -> tuple[float, str]:
    """The parent loss L0 to assume when the user gives none, and where it comes from.

    The card's fitted range of ``loss_before``: its single value when the fit saw one parent
    loss, else the midpoint. Only the predicted losses depend on it, never D* of the slope
    criterion; a user with a real parent should pass --loss-before (its eval loss, same data).
    """
    span = card.axis_range("loss_before")
    if span is None:
        raise BadInput(f"law card {str(card.path)!r} records no loss_before range; pass --loss-before L0")
    lo, hi = span
    if np.isclose(lo, hi):
        return lo, f"the card's fitted parent loss ({lo:.4g}); pass --loss-before for your parent"
    mid = 0.5 * (lo + hi)
    return mid, (f"midpoint of the card's fitted loss_before range [{lo:.4g}, {hi:.4g}]; "
                 "pass --loss-before for your parent")


def interval(card: Card, f: Any) -> tuple[float | None, float | None]:
    """Percentile interval of ``f(bootstrap samples)``, ignoring samples where f is NaN."""
    samples = card.card.bootstrap_params
    if samples is None or len(samples) == 0:
        return None, None
    values = np.ravel(f(samples))
    values = values[np.isfinite(values)]
    if len(values) < max(10, 0.5 * len(samples)):  # most samples undefined: no honest interval
        return None, None
    level = float(card.card.ci.get("level", 0.95)) if isinstance(card.card.ci, dict) else 0.95
    return percentile(values, 50 * (1 - level)), percentile(values, 50 * (1 + level))


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (its default linear interpolation), written out because
    ``np.percentile`` imports ``numpy.ma`` on first use: ~45 ms of a sub-second command."""
    ordered = np.sort(values)
    pos = q / 100.0 * (len(ordered) - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (pos - lo) * (ordered[hi] - ordered[lo]))


def reference_tokens(card: Card) -> float:
    """D_ref of the recover criterion: the smallest token count in the card's fitted range."""
    span = card.axis_range("tokens")
    if span is None or not span[0] > 0:
        raise BadInput(f"law card {str(card.path)!r} records no positive tokens range; "
                       "--recover needs it (use --slope or --target-loss)")
    return span[0]


def target_for(card: Card, criterion: Criterion, n0: float, ratio: float, l0: float) -> float | None:
    """The loss the budget must reach (None for the slope criterion), refusing the unreachable."""
    params = card.card.params_array
    floor = float(np.squeeze(laws.p2_asymptote(params, n0, ratio, l0)))
    if criterion.kind == "slope":
        return None
    if criterion.kind == "target_loss":
        if criterion.value <= floor:
            raise BadInput(f"--target-loss {criterion.value:g} is at or below the law's asymptote "
                           f"{floor:.4f} for N0 = {format_count(n0)}, ratio {ratio:g} (L0 = {l0:.4g}): "
                           "no budget reaches it; ask for a loss above the asymptote")
        return criterion.value
    l_ref = float(np.squeeze(laws.p2_loss(params, n0, ratio, reference_tokens(card), l0)))
    gap = l_ref - l0
    if not gap > 0:
        raise BadInput(f"--recover: the law predicts no post-pruning gap (L(D_ref) = {l_ref:.4g} <= "
                       f"L0 = {l0:.4g}); use --slope or --target-loss")
    target = l_ref - criterion.value * gap
    if target <= floor:
        reachable = (l_ref - floor) / gap
        raise BadInput(f"--recover {criterion.value:g} is out of reach: the law's asymptote {floor:.4f} "
                       f"closes at most {reachable:.1%} of the gap to L0 = {l0:.4g}; pass a fraction "
                       f"below {reachable:.3f}")
    return target


def solve_tokens(card: Card, criterion: Criterion, n0: float, ratio: float, l0: float) -> Estimate:
    """The budget D under ``criterion``, with its bootstrap interval.

    For the loss criteria the target loss is fixed at the point estimate and each bootstrap
    sample answers "how many tokens does it take me to reach it".
    """
    target = target_for(card, criterion, n0, ratio, l0)

    def tokens_of(params: np.ndarray) -> np.ndarray:
        if target is None:
            return laws.slope_tokens(params, n0, ratio, criterion.value)
        return laws.p2_tokens_for_loss(params, n0, ratio, target, l0)

    value = float(np.squeeze(tokens_of(card.card.params_array)))
    if not np.isfinite(value) or value <= 0:
        raise BadInput(f"law card {str(card.path)!r} predicts no gain from more tokens at N0 = "
                       f"{format_count(n0)}, ratio {ratio:g} (beta * D_C <= 0); no budget to recommend")
    return Estimate(value, *interval(card, tokens_of))


def loss_at(card: Card, n0: float, ratio: float, tokens: float, l0: float) -> Estimate:
    """Predicted loss at ``tokens``, with its bootstrap interval."""
    def f(params: np.ndarray) -> np.ndarray:
        return laws.p2_loss(params, n0, ratio, tokens, l0)
    return Estimate(float(np.squeeze(f(card.card.params_array))), *interval(card, f))


def asymptote_of(card: Card, n0: float, ratio: float, l0: float) -> Estimate:
    """The loss no budget beats (D -> infinity), with its bootstrap interval."""
    def f(params: np.ndarray) -> np.ndarray:
        return laws.p2_asymptote(params, n0, ratio, l0)
    return Estimate(float(np.squeeze(f(card.card.params_array))), *interval(card, f))


def range_warnings(card: Card, *, n0: float | None = None, ratio: float | None = None,
                   tokens: float | None = None, loss_before: float | None = None,
                   tokens_label: str = "D*") -> list[str]:
    """One line per query value outside the card's fitted range, saying how far."""
    out: list[str] = []
    checks = (("params_before", n0, f"N0 = {format_count(n0 or 0)}", "parent", format_count, True),
              ("tokens", tokens, f"{tokens_label} = {format_count(tokens or 0)}",
               "budget of any fitted curve", format_count, True),
              ("ratio", ratio, f"ratio {ratio}", "ratio", lambda v: f"{v:g}", False),
              ("loss_before", loss_before, f"L0 = {loss_before}", "parent loss", lambda v: f"{v:.4g}", False))
    for axis, value, label, noun, fmt, by_factor in checks:
        span = card.axis_range(axis)
        if value is None or span is None:
            continue
        lo, hi = span
        if value > hi * (1 + 1e-9):
            how = f"{value / hi:.3g}x" if by_factor else f"{value - hi:.3g}"
            out.append(f"{label} is {how} above the largest {noun} in the card's fit ({fmt(hi)})")
        elif value < lo * (1 - 1e-9):
            how = f"{lo / value:.3g}x" if by_factor else f"{lo - value:.3g}"
            out.append(f"{label} is {how} below the smallest {noun} in the card's fit ({fmt(lo)})")
    return out


def identifiability_warnings(card: Card) -> list[str]:
    """Parameters the fit pinned (not identified) or barely pinned down (weak), from the card."""
    info = card.card.identifiable if isinstance(card.card.identifiable, dict) else {}
    pinned = card.card.not_identified()
    weak = [p for p, r in info.items() if isinstance(r, dict) and r.get("weak") and p not in pinned]
    out = []
    if pinned:
        reason = next((str(info[p].get("reason")) for p in pinned if info[p].get("reason")),
                      "too little variation in the fitted data")
        out.append(f"the card could not identify {', '.join(pinned)} ({reason}); predictions "
                   "along those axes rest on pinned values")
    if weak:
        out.append(f"the card's {', '.join(weak)} are only weakly identified (wide bootstrap "
                   "intervals): extrapolation in N0 is uncertain beyond the intervals shown")
    return out


def recommend(parent: Parent, method: str, ratio: float, card: Card, reason: str, *,
              criterion: Criterion, gpu: Gpu, mfu: float, price: float | None,
              loss_before: float | None = None) -> Recommendation:
    """The full answer for one (parent, method, ratio) from one P2 card.

    ``reason`` says why this card (printed with it); ``loss_before`` None means the card's
    default L0 (:func:`default_loss_before`), stated in the answer.
    """
    n0 = float(parent.params_before)
    if loss_before is None:
        l0, l0_source = default_loss_before(card)
    else:
        l0, l0_source = loss_before, "given with --loss-before"
    n_after = (1.0 - ratio) * n0
    tokens = solve_tokens(card, criterion, n0, ratio, l0)
    budgets = tuple(Budget(m, m * tokens.value, loss_at(card, n0, ratio, m * tokens.value, l0),
                           compute_cost(n_after, m * tokens.value, gpu, mfu, price))
                    for m in BUDGET_MULTIPLES)
    warnings = range_warnings(card, n0=n0, ratio=ratio, tokens=tokens.value,
                              loss_before=l0 if loss_before is not None else None)
    warnings += identifiability_warnings(card)
    warnings += _unreachable_warning(card, criterion, n0, ratio, l0)
    if card.family is not None and card.family != parent.family:
        warnings.append(f"the card was fitted on family {card.family}, the query is {parent.family}")
    if card.method is not None and card.method != method:
        warnings.append(f"the card was fitted on method {card.method}, the query is {method}")
    return Recommendation(
        parent=parent, method=method, ratio=ratio, params_after=n_after, card=card,
        card_reason=reason, loss_before=l0, loss_before_source=l0_source, criterion=criterion,
        tokens=tokens, loss=loss_at(card, n0, ratio, tokens.value, l0),
        asymptote=asymptote_of(card, n0, ratio, l0), budgets=budgets,
        compute=compute_cost(n_after, tokens.value, gpu, mfu, price),
        warnings=tuple(warnings), notes=tuple(_notes(method, ratio, criterion)))


def _unreachable_warning(card: Card, criterion: Criterion, n0: float, ratio: float,
                         l0: float) -> list[str]:
    """For loss criteria: how many bootstrap fits never reach the target (left out of the interval)."""
    samples = card.card.bootstrap_params
    if criterion.kind == "slope" or samples is None or len(samples) == 0:
        return []
    target = target_for(card, criterion, n0, ratio, l0)
    missing = float(np.mean(~np.isfinite(np.ravel(laws.p2_tokens_for_loss(samples, n0, ratio, target, l0)))))
    if missing == 0.0:
        return []
    return [f"{missing:.0%} of the card's bootstrap fits never reach loss {target:.4g} (their asymptote "
            "is above it): the budget interval covers only the others, so it is optimistic"]


def _notes(method: str, ratio: float, criterion: Criterion) -> list[str]:
    """Caveats that always hold for this kind of query (not warnings about the data)."""
    notes = []
    if method in SPARSE_METHODS:
        notes.append(f"{method} keeps masked weights in dense kernels during training: the real cost is "
                     f"6 * N0 * D, {1 / (1 - ratio):.3g}x the 6 * N * D shown")
    if criterion.kind == "slope":
        notes.append("D* of the slope criterion does not depend on L0; the predicted losses do")
    return notes
