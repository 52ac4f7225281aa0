"""``compare``: predicted loss per pruning ratio at equal tokens and at equal compute.

Equal tokens: every ratio is post-trained on the same ``tokens``.

Equal compute: the reference is the parent. The budget is ``C = 6 * N0 * tokens`` FLOPs (what
post-training the unpruned parent on ``tokens`` would cost); a pruned model spends it at
``6 * N_kernel`` FLOPs per token, where ``N_kernel`` is what its training kernels multiply:
``(1 - rho) * N0`` for depth/width (really smaller matrices), but ``N0`` for 2:4 and
unstructured sparsity, whose masked weights train in dense kernels, unless a sparse kernel is
stated (``sparse_kernel=True``). So a dense-kernel sparse model gets the same ``tokens``, not
``tokens / (1 - rho)``. The reference does not depend on which ratios are listed.

From scratch (when a Chinchilla card for the family is given or bundled), two token-matched
settings, each named in the output:

- ``equal post-training tokens``: a model of the same size N trained from random init on the
  same tokens as the pruned one's post-training (the parent's pretraining is sunk: the
  question of a user who already owns the parent);
- ``whole pipeline's tokens`` (only with ``parent_tokens``): the same-size model trained from
  scratch on the parent's pretraining tokens plus the post-training tokens, i.e. every token
  the prune-and-post-train pipeline consumed.

The winner is called only when the two intervals do not overlap; otherwise ``uncertain``.
Without a known L0 the pruned losses are dL above L0 and no winner is called (a from-scratch
loss is absolute).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fitting.laws import CHINCHILLA
from fitting.card import LawCard
from fitting.term import Estimate
from planner.query import SPARSE_METHODS, Parent
from planner.recommend import card_doubt, identifiability_warnings, interval, loss_at, range_warnings
from planner.verdict import credibility, verdict


@dataclass(frozen=True)
class Arm:
    """One ratio under one budget rule."""

    tokens: float
    loss: Estimate
    scratch_loss: Estimate | None
    winner: str | None
    """``pruning``, ``scratch``, ``uncertain`` or None without a Chinchilla card (or L0)."""
    pipeline_loss: Estimate | None = None
    """From scratch on the parent's pretraining tokens + ``tokens`` (with ``parent_tokens``)."""
    pipeline_winner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "loss": self.loss.to_dict(),
                "scratch_loss": None if self.scratch_loss is None else self.scratch_loss.to_dict(),
                "winner": self.winner,
                "scratch_pipeline_loss": None if self.pipeline_loss is None else self.pipeline_loss.to_dict(),
                "pipeline_winner": self.pipeline_winner}


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
    card: LawCard
    card_reason: str
    scratch: LawCard | None
    scratch_reason: str
    loss_before: float | None
    loss_before_source: str
    rows: tuple[Row, ...]
    warnings: tuple[str, ...]
    kernel: str = "dense"
    """``dense`` or ``sparse``: which FLOPs a sparse method's training is charged."""
    parent_tokens: float | None = None
    verdict: str = ""
    """The first line of the answer, as ``planner recommend`` words it."""
    doubt: str | None = None
    """Why the card cannot describe these models (then the rows are no prediction), or None."""

    @property
    def credible(self) -> bool:
        return self.doubt is None

    @property
    def compute_flops(self) -> float:
        return 6.0 * self.parent.params_before * self.tokens

    @property
    def relative(self) -> bool:
        return self.loss_before is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "compare", "schema_version": 2, "verdict": self.verdict, "credible": self.credible,
            "why_not_credible": self.doubt,
            "query": {"params_before": self.parent.params_before, "model": self.parent.name,
                      "family": self.parent.family, "method": self.method, "tokens": self.tokens,
                      "ratios": [r.ratio for r in self.rows]},
            "card": {**self.card.provenance(), "selected_because": self.card_reason},
            "scratch_card": None if self.scratch is None else self.scratch.provenance(),
            "scratch_reason": self.scratch_reason,
            "assumptions": {"loss_before": self.loss_before, "loss_before_source": self.loss_before_source,
                            "loss_scale": "dL above L0 (L0 unknown)" if self.relative else "eval loss (nats)",
                            "parent": self.parent.describe(), "parent_tokens": self.parent_tokens},
            "equal_compute": {"flops": self.compute_flops, "kernel": self.kernel,
                              "reference": "6 * params_before * tokens (the unpruned parent on --tokens); "
                                           + kernel_rule(self.method, self.kernel)},
            "scratch_settings": scratch_settings(self.parent_tokens),
            "rows": [r.to_dict() for r in self.rows] if self.credible else [],
            "extrapolation": None if self.credible else {
                "label": "the card's formula applied where it does not describe models: not a prediction",
                "rows": [r.to_dict() for r in self.rows]},
            "warnings": list(self.warnings),
        }


def scratch_loss(card: LawCard, n: float, tokens: float) -> Estimate:
    """Chinchilla loss of an ``n``-parameter model trained from scratch on ``tokens``."""
    def f(params: np.ndarray) -> np.ndarray:
        return CHINCHILLA.predict(params, N=n, D=tokens)
    return Estimate(float(np.squeeze(f(card.params_array))), *interval(card, f))


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


def kernel_rule(method: str, kernel: str) -> str:
    """The equal-compute token rule for ``method`` in words."""
    if method in SPARSE_METHODS and kernel == "dense":
        return f"{method} trains on dense kernels (6 * N0 per token): every ratio gets tokens"
    return "ratio rho gets tokens / (1 - rho) (6 * N per token)"


def scratch_settings(parent_tokens: float | None) -> list[str]:
    """The token-matched from-scratch settings this comparison uses, by name."""
    out = ["equal post-training tokens: a same-size model from random init on the pruned model's tokens"]
    if parent_tokens is not None:
        out.append(f"whole pipeline's tokens: a same-size model from scratch on the parent's "
                   f"{parent_tokens:.3g} pretraining tokens + the post-training tokens")
    return out


def _arm(card: LawCard, scratch: LawCard | None, n0: float, ratio: float, tokens: float, l0: float | None,
         parent_tokens: float | None) -> Arm:
    loss = loss_at(card, n0, ratio, tokens, 0.0 if l0 is None else l0)
    if scratch is None:
        return Arm(tokens, loss, None, None)
    n = (1.0 - ratio) * n0
    other = scratch_loss(scratch, n, tokens)
    pipe = None if parent_tokens is None else scratch_loss(scratch, n, parent_tokens + tokens)
    if l0 is None:  # dL cannot be compared with an absolute from-scratch loss
        return Arm(tokens, loss, other, None, pipe, None)
    return Arm(tokens, loss, other, winner(loss, other), pipe, None if pipe is None else winner(loss, pipe))


def compare(parent: Parent, method: str, ratios: tuple[float, ...], tokens: float, card: LawCard,
            card_reason: str, *, scratch: LawCard | None = None, scratch_reason: str = "",
            loss_before: float | None = None, sparse_kernel: bool = False,
            parent_tokens: float | None = None) -> Comparison:
    """Rows per ratio at equal tokens and at equal compute (reference: the parent, above)."""
    n0 = float(parent.params_before)
    l0 = loss_before
    l0_source = ("given with --loss-before" if l0 is not None else
                 "unknown: pruned losses are dL above L0 and no winner is called; pass --loss-before")
    kernel = "sparse" if sparse_kernel else "dense"
    dense_sparse = method in SPARSE_METHODS and not sparse_kernel

    def compute_tokens(r: float) -> float:
        return tokens if dense_sparse else tokens / (1 - r)
    rows = tuple(Row(r, (1 - r) * n0, _arm(card, scratch, n0, r, tokens, l0, parent_tokens),
                     _arm(card, scratch, n0, r, compute_tokens(r), l0, parent_tokens)) for r in ratios)
    warnings = range_warnings(card, n0=n0, tokens=max(compute_tokens(r) for r in ratios),
                              loss_before=loss_before, tokens_label="largest budget")
    for r in ratios:
        warnings += range_warnings(card, ratio=r)
    warnings += identifiability_warnings(card)
    if scratch is not None:
        warnings += [f"from-scratch card: {w}" for w in
                     _scratch_range(scratch, min((1 - r) * n0 for r in ratios), tokens)]
    doubt = _doubt(card, parent, rows, l0)
    span = card.axis_range("ratio")
    outside = [r for r in ratios if span is not None and not span[0] <= r <= span[1]]
    line = verdict("card", card, n0, (outside or list(ratios))[-1], max(compute_tokens(r) for r in ratios),
                   doubt=doubt, what="largest budget")
    return Comparison(parent, method, tokens, card, card_reason, scratch, scratch_reason, l0,
                      l0_source, rows, tuple(warnings), kernel, parent_tokens, line, doubt)


def _doubt(card: LawCard, parent: Parent, rows: tuple[Row, ...], l0: float | None) -> str | None:
    """The first reason (as ``planner recommend`` gives it) why a row is no prediction."""
    n0 = float(parent.params_before)
    for row in rows:
        why = card_doubt(card, parent.family, n0, row.ratio, l0)
        for name, arm in (("equal tokens", row.equal_tokens), ("equal compute", row.equal_compute)):
            why = why or credibility(parent.family, arm.loss.value - (l0 or 0.0),
                                     f"at ratio {row.ratio:g} ({name}, {arm.tokens:.3g} tokens)")
        if why is not None:
            return f"ratio {row.ratio:g}: {why}"
    return None


def _scratch_range(card: LawCard, n: float, tokens: float) -> list[str]:
    """Extrapolation warnings of the Chinchilla card (axes N, D)."""
    out = []
    for axis, value in (("N", n), ("D", tokens)):
        span = card.axis_range(axis)
        if span is not None and not span[0] <= value <= span[1]:
            far = value / span[1] if value > span[1] else span[0] / value
            out.append(f"{axis} = {value:.3g} is {far:.3g}x outside its fitted range [{span[0]:.3g}, {span[1]:.3g}]")
    return out
