"""``recommend``: a post-training token budget for one pruned model, from a card and/or a pilot.

Library side (returns data; ``planner.cli.recommend`` parses and renders). Three modes, always
named in the answer: ``card`` (the P2 card alone), ``pilot`` (a pilot curve alone:
L = L_inf + B / D^beta) and ``pilot+card`` (the pilot with the card's beta as prior; see
``fitting.pilot``). Each reduces to a token term ``a + k * D**-beta`` at the query's (N0, rho)
(``fitting.term``), on which the criteria (``fitting.criteria``) are solved:

- ``recover`` (default, F = 0.9): close a fraction F of the recoverable gap, from the loss right
  after pruning to the law's asymptote. "Right after pruning" is the pilot's measured loss at
  tokens == 0 when it has one; otherwise the law's loss at a reference budget D_ref (the
  pilot's first evaluation, or, card-only, the card's first fitted budget per parent parameter
  times N0: the same point of recovery in tokens per parameter). Every F < 1 is reachable.
- ``slope``: D* where the next 1e9 tokens lower the predicted loss by S nats (absolute nats
  per extra 1B tokens; its meaning moves with the loss scale, hence not the default).
- ``target_loss``: the smallest D with predicted loss <= L (needs a known L0 or a pilot).

No L0 is invented: without ``--loss-before`` or a pilot that knows it, card losses are dL above
L0 and the answer says so. Budgets under 1e-3 or over 1e4 tokens per parent parameter exit 2
with the reason (8M and 80T tokens at 8B).

Intervals: card mode, the card's own (``fitting.intervals``: the bootstrap's expanded percentile
hulled with the leave-one-run-out jackknife-t interval); pilot modes, percentiles over the
posterior samples of the pilot fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from data.cli import BadInput
from data.units import format_count
from fitting.card import LawCard, beyond_edge
from fitting.intervals import defined_enough
from fitting.criteria import Criterion, Reference
from fitting.term import Estimate, TokenTerm
from planner.grounding import PilotRecipe, pilot_recipe
from data.compute import Compute, Gpu, compute_cost
from planner.query import SPARSE_METHODS, Parent
from planner.verdict import card_factor, credibility, verdict

if TYPE_CHECKING:  # pragma: no cover - the pilot fit loads only when a pilot is given (cold start)
    from fitting.pilot import Pilot

__all__ = ["Recommendation", "recommend", "DEFAULT_SLOPE"]

BUDGET_MULTIPLES: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
DEFAULT_SLOPE = 1e-3
"""Nats per extra 1B tokens when --slope is given without a value elsewhere (tests, compare)."""


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
    card: LawCard | None
    card_reason: str
    loss_before: float | None
    loss_before_source: str
    criterion: Criterion
    tokens: Estimate | None
    """None only when not credible and the card's formula gives no budget either."""
    loss: Estimate | None
    asymptote: Estimate
    budgets: tuple[Budget, ...]
    compute: Compute | None
    mode: str = "card"
    verdict: str = ""
    relative: bool = False
    """True: losses are dL above the (unknown) L0, not eval losses."""
    reference: str = ""
    pilot: dict[str, Any] | None = None
    card_only: dict[str, Any] | None = None
    practice: tuple[dict[str, Any], ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())
    doubt: str | None = None
    """Why the answer is not credible at this scale (then no budget is recommended), or None."""
    reach: str | None = None
    """Not credible only: why the card's formula itself gives no usable budget here, or None."""
    pilot_recipe: PilotRecipe | None = None
    """The pilot to run for a grounded answer (card-only answers outside the card's range)."""

    @property
    def credible(self) -> bool:
        return self.doubt is None

    def to_dict(self) -> dict[str, Any]:
        answer = {"tokens": None if self.tokens is None else self.tokens.to_dict(),
                  "loss": None if self.loss is None else self.loss.to_dict(),
                  "asymptote": self.asymptote.to_dict(), "card_only": self.card_only,
                  "budgets": [b.to_dict() for b in self.budgets],
                  "compute": None if self.compute is None else self.compute.to_dict()}
        if self.credible:
            shown, extrapolation = answer, None
        else:  # the numbers stay for a script, under a key that says what they are
            shown = {"tokens": None, "loss": None, "asymptote": None, "card_only": None, "budgets": [],
                     "compute": None}
            extrapolation = {"label": "the card's formula applied where it does not describe models: "
                                      "not a prediction", "why": self.doubt, "reach": self.reach, **answer}
        return {
            "command": "recommend", "schema_version": 3, "verdict": self.verdict, "credible": self.credible,
            "why_not_credible": self.doubt, "mode": self.mode,
            "query": {"params_before": self.parent.params_before, "model": self.parent.name,
                      "family": self.parent.family, "method": self.method, "ratio": self.ratio,
                      "params_after": self.params_after},
            "card": None if self.card is None else {**self.card.provenance(), "selected_because": self.card_reason},
            "pilot": self.pilot,
            "assumptions": {"loss_before": self.loss_before, "loss_before_source": self.loss_before_source,
                            "loss_scale": "dL above L0 (L0 unknown)" if self.relative else "eval loss (nats)",
                            "parent": self.parent.describe(), "recover_reference": self.reference},
            "criterion": {"kind": self.criterion.kind, "value": self.criterion.value,
                          "description": self.criterion.describe()},
            **shown,
            "extrapolation": extrapolation,
            "next_steps": None if self.pilot_recipe is None else {"pilot": self.pilot_recipe.to_dict(),
                                                                   "design": self.pilot_recipe.design},
            "practice": list(self.practice),
            "warnings": list(self.warnings), "notes": list(self.notes),
        }


# -- what the card can say at this scale ---------------------------------------------------------

def card_doubt(card: LawCard, family: str, n0: float, ratio: float, l0: float | None) -> str | None:
    """Why the card cannot describe a model of this N0 and ratio (None: nothing rules it out).

    Checked at D_ref, the point of recovery (in tokens per parameter) where the card's own runs
    were first measured: the card's predicted L - L0 there is what it claims a model of this
    size reaches after a first stretch of training, whatever the criterion asked.
    """
    try:
        ref = card.reference(n0)
    except BadInput:
        return None
    gap = card.token_term(n0, ratio, None).loss(float(ref.tokens)).value
    return credibility(family, gap, f"after D_ref = {format_count(float(ref.tokens))} tokens")


# -- card helpers shared with compare ------------------------------------------------------------

def interval(card: LawCard, f: Any, floor: float | None = None) -> tuple[float | None, float | None]:
    """The card's interval of ``f(params)``, ignoring samples where f is NaN; None, None when
    most are undefined."""
    if card.bootstrap_params is None or len(card.bootstrap_params) == 0:
        return None, None
    return card.interval(f, floor=floor, min_finite=defined_enough(len(card.bootstrap_params))) or (None, None)


def loss_at(card: LawCard, n0: float, ratio: float, tokens: float, l0: float) -> Estimate:
    """Predicted loss at ``tokens``, with its bootstrap interval."""
    axes = card.query(n0, ratio, tokens, l0)

    def f(params: np.ndarray) -> np.ndarray:
        return card.law.predict(params, **axes)
    return Estimate(float(np.squeeze(f(card.params_array))), *interval(card, f, floor=l0))


def asymptote_of(card: LawCard, n0: float, ratio: float, l0: float) -> Estimate:
    """The loss no budget beats (D -> infinity), with its bootstrap interval."""
    axes = card.query(n0, ratio, offset=l0)

    def f(params: np.ndarray) -> np.ndarray:
        return card.law.asymptote(params, **axes)
    return Estimate(float(np.squeeze(f(card.params_array))), *interval(card, f, floor=l0))


def range_warnings(card: LawCard, *, n0: float | None = None, ratio: float | None = None,
                   tokens: float | None = None, loss_before: float | None = None,
                   tokens_label: str = "D*") -> list[str]:
    """One line per query value outside the card's fitted range, saying how far."""
    out: list[str] = []
    law = card.law
    checks = ((law.size_axis, n0, f"N0 = {format_count(n0 or 0)}", "parent", format_count, True),
              (law.token_axis, tokens, f"{tokens_label} = {format_count(tokens or 0)}",
               "budget of any fitted curve", format_count, True),
              (law.ratio_axis, ratio, f"ratio {ratio}", "ratio", lambda v: f"{v:g}", False),
              (law.offset, loss_before, f"L0 = {loss_before}", "parent loss", lambda v: f"{v:.4g}", False))
    for axis, value, label, noun, fmt, by_factor in checks:
        span = card.axis_range(axis)
        if value is None or span is None:
            continue
        lo, hi = span
        side = beyond_edge(value, lo, hi)
        if side > 0:
            how = f"{value / hi:.3g}x" if by_factor else f"{value - hi:.3g}"
            out.append(f"{label} is {how} above the largest {noun} in the card's fit ({fmt(hi)})")
        elif side < 0:
            how = f"{lo / value:.3g}x" if by_factor else f"{lo - value:.3g}"
            out.append(f"{label} is {how} below the smallest {noun} in the card's fit ({fmt(lo)})")
    return out


def identifiability_warnings(card: LawCard) -> list[str]:
    """Parameters the fit pinned (not identified), left at a bound or absent (degenerate), or
    barely pinned down (weak), from the card; the notes themselves are printed beside them."""
    info = card.identifiable
    pinned = card.not_identified()
    weak = [p for p, r in info.items() if r.weak and p not in pinned]
    bound = [p for p, r in info.items() if r.bound and p not in pinned]
    out = []
    if bound:
        out.append(f"the card's {', '.join(bound)} sit at a bound or vanished (a degenerate fit: see the "
                   "card's identifiability notes); the law there is the simpler one it collapsed to")
    if pinned:
        reason = next((info[p].reason for p in pinned if info[p].reason),
                      "too little variation in the fitted data")
        out.append(f"the card could not identify {', '.join(pinned)} ({reason}); predictions "
                   "along those axes rest on pinned values")
    if weak:
        out.append(f"the card's {', '.join(weak)} are only weakly identified (wide bootstrap "
                   "intervals): extrapolation in N0 is uncertain beyond the intervals shown")
    return out


# -- the answer ---------------------------------------------------------------------------------

def recommend(parent: Parent, method: str, ratio: float, card: LawCard | None, reason: str, *,
              criterion: Criterion, gpu: Gpu, mfu: float, price: float | None,
              loss_before: float | None = None, pilot: Pilot | None = None,
              sparse_kernel: bool = False) -> Recommendation:
    """The full answer for one (parent, method, ratio) from a card, a pilot, or both.

    ``pilot`` is a :class:`fitting.pilot.Pilot` (already checked against N0 and ratio);
    ``loss_before`` None with no pilot L0 gives dL answers. ``sparse_kernel`` False counts
    a sparse method's compute on dense kernels (6 * N0 * D).

    A card-only answer the card cannot give at this scale (:func:`card_doubt`) is not
    credible: it recommends no budget (``tokens`` stays as the card's extrapolation, for
    ``--show-extrapolation``), carries the published practice and a pilot recipe, and budgets
    the formula puts out of reach are noted there instead of refused.
    """
    if card is None and pilot is None:
        raise BadInput("no law card and no --pilot: pass --law CARD.json or --pilot RUN|CURVE.csv")
    n0 = float(parent.params_before)
    l0, l0_source = _loss_before(loss_before, pilot)
    cterm = None if card is None else card.token_term(n0, ratio, l0)
    warnings: list[str] = []
    doubt = None
    if pilot is None:
        mode, term, ref = "card", cterm, card.reference(n0) if criterion.needs_start else Reference()
        doubt = card_doubt(card, parent.family, n0, ratio, l0)
    else:
        mode = "pilot" if card is None else "pilot+card"
        from fitting.pilot import card_prior, fit_pilot, pilot_reference

        prior = None if card is None else card_prior(card, **card.query(n0, ratio))
        term = fit_pilot(pilot, prior=prior, loss_before=l0)
        ref = pilot_reference(pilot)
    tokens, reach = _budget(term, criterion, ref, mode, n0, credible=doubt is None)
    n_compute, formula = _compute_params(method, ratio, n0, sparse_kernel)
    budgets = () if tokens is None else tuple(
        Budget(m, m * tokens.value, term.loss(m * tokens.value),
               compute_cost(n_compute, m * tokens.value, gpu, mfu, price, formula)) for m in BUDGET_MULTIPLES)
    loss = None if tokens is None else term.loss(tokens.value)
    d_star = float("nan") if tokens is None else tokens.value
    card_only = None
    if card is not None:
        warnings += identifiability_warnings(card) if mode == "card" and doubt is None else []
        warnings += _card_warnings(card, parent, method, n0, ratio, d_star if doubt is None else float("nan"),
                                   l0 if loss_before else None, mode)
        if pilot is not None:
            card_only = _card_only(cterm, criterion, card, n0, pilot, tokens)
    if pilot is not None and d_star > 10 * pilot.max_tokens:
        warnings.append(f"D* = {format_count(d_star)} is {d_star / pilot.max_tokens:.3g}x the pilot's "
                        f"last point ({format_count(pilot.max_tokens)}): a longer pilot narrows the interval")
    share = term.unreachable_fraction(criterion)
    if share > 0 and doubt is None:
        warnings.append(f"{share:.0%} of the {'bootstrap' if mode == 'card' else 'posterior'} samples never reach "
                        f"loss {criterion.value:.4g} (their asymptote is above it): the budget interval covers "
                        "only the others, so it is optimistic")
    if loss is not None and doubt is None:
        doubt = credibility(parent.family, loss.value - (0.0 if term.relative or l0 is None else l0), "at D*")
        if doubt is not None and mode != "card":  # the user's own curve: say so, answer anyway
            warnings.insert(0, doubt)
            doubt = None
    line = verdict(mode, card, n0, ratio, d_star, None if pilot is None else pilot.max_tokens, doubt=doubt)
    practice, recipe = _guidance(parent, method, ratio, card, mode, line, doubt, d_star,
                                 lambda d: compute_cost(n_compute, d, gpu, mfu, price, formula))
    return Recommendation(
        parent=parent, method=method, ratio=ratio, params_after=(1.0 - ratio) * n0, card=card,
        card_reason=reason if card is not None else "no card: pilot-only", loss_before=l0,
        loss_before_source=l0_source, criterion=criterion, tokens=tokens,
        loss=loss, asymptote=term.asymptote(), budgets=budgets,
        compute=None if tokens is None else compute_cost(n_compute, tokens.value, gpu, mfu, price, formula),
        mode=mode, verdict=line,
        relative=term.relative, reference=ref.source if criterion.needs_start else "",
        pilot=None if pilot is None else _pilot_dict(pilot, term), card_only=card_only, practice=practice,
        warnings=tuple(warnings), notes=tuple(_notes(method, ratio, criterion, sparse_kernel, term.relative)),
        doubt=doubt, reach=reach, pilot_recipe=recipe)


def _guidance(parent: Parent, method: str, ratio: float, card: LawCard | None, mode: str, line: str,
              doubt: str | None, d_star: float, cost: Callable[[float], Compute]) -> tuple[tuple[dict[str, Any], ...], PilotRecipe | None]:
    """The nearest published recipes (when they are a yardstick) and the pilot to run (when the
    verdict says: calibrate), with ``cost(tokens)`` of that pilot."""
    from planner.practice import comparisons

    n0 = float(parent.params_before)
    # Published recipes are 0.5B-15B parents: beside a query at that scale they are a yardstick,
    # beside a card's own toy sizes (where only D* leaves the range) they are noise.
    sizes = None if card is None else card.axis_range(card.law.size_axis)
    practice: tuple[dict[str, Any], ...] = ()
    if doubt is not None or mode != "card" or card is None or sizes is None or n0 > sizes[1]:
        rows = comparisons(d_star, n0, ratio)
        # not credible: there is no D* to hold against the recipes
        practice = tuple(rows if doubt is None else ({**r, "law_over_practice": None} for r in rows))
    if mode != "card" or line.startswith("verdict: in range"):
        return practice, None
    return practice, pilot_recipe(parent, method, ratio, cost)


def _budget(term: TokenTerm, criterion: Criterion, ref: Reference, mode: str, n0: float, *,
            credible: bool) -> tuple[Estimate | None, str | None]:
    """D* under ``criterion``; refused (BadInput) when credible and out of reach, else noted."""
    try:
        tokens = term.tokens(criterion, ref)
    except BadInput as exc:
        if credible:
            raise
        return None, str(exc)
    try:
        criterion.check_budget(tokens.value, f"{mode} mode", n0)
    except BadInput as exc:
        if credible:
            raise
        return tokens, str(exc)
    return tokens, None


def _loss_before(given: float | None, pilot: Pilot | None) -> tuple[float | None, str]:
    """L0 from --loss-before, else the pilot's own, else unknown (never a card's other parents)."""
    if given is not None:
        if pilot is not None and pilot.loss_before is not None and abs(pilot.loss_before - given) > 1e-3 * given:
            raise BadInput(f"--loss-before {given:g} contradicts the pilot's own loss_before "
                           f"{pilot.loss_before:.4g}; drop one of them")
        return given, "given with --loss-before"
    if pilot is not None and pilot.loss_before is not None:
        return pilot.loss_before, f"the pilot's parent loss ({pilot.path})"
    if pilot is not None:
        return None, "the pilot's losses are eval losses; L0 is only needed for dL"
    return None, ("losses are shown as dL above L0; pass --loss-before L0 (the parent's eval loss on the "
                  "same data) or --pilot for eval losses")


def _compute_params(method: str, ratio: float, n0: float, sparse_kernel: bool) -> tuple[float, str]:
    """Which parameter count the training kernels multiply: masked weights stay dense."""
    if method in SPARSE_METHODS and not sparse_kernel:
        return n0, "6 * params_before * tokens (sparse weights on dense kernels)"
    return (1.0 - ratio) * n0, "6 * params_after * tokens"


def _card_warnings(card: LawCard, parent: Parent, method: str, n0: float, ratio: float, tokens: float,
                   l0: float | None, mode: str) -> list[str]:
    out = []
    if mode == "card":
        out += range_warnings(card, n0=n0, ratio=ratio, tokens=tokens, loss_before=l0)
    else:
        span = card.axis_range(card.law.size_axis)
        if span is not None and n0 > span[1]:
            out.append(f"the card's beta prior comes from parents up to {format_count(span[1])} "
                       f"({n0 / span[1]:.3g}x smaller than N0); the pilot decides the rest")
    if card.family is not None and card.family != parent.family:
        out.append(f"the card was fitted on family {card.family}, the query is {parent.family}")
    if card.method is not None and card.method != method:
        out.append(f"the card was fitted on method {card.method}, the query is {method}")
    return out


def _card_only(cterm: TokenTerm, criterion: Criterion, card: LawCard, n0: float, pilot: Pilot,
               tokens: Estimate) -> dict[str, Any]:
    """What the card alone says, and how far the pilot moved the answer from it."""
    ref = card.reference(n0) if criterion.needs_start else Reference()
    if criterion.needs_start and pilot.loss_start is not None and not cterm.relative:
        from fitting.pilot import pilot_reference

        ref = pilot_reference(pilot)  # the same measured start: only the law differs
    try:
        d = cterm.tokens(criterion, ref)
    except BadInput as exc:
        return {"tokens": None, "loss": None, "moved": f"the card alone gives no budget ({exc})"}
    loss = cterm.loss(tokens.value)
    factor, _ = card_factor(card, n0, d.value)
    return {"tokens": d.to_dict(), "loss_at_pilot_dstar": None if cterm.relative else loss.to_dict(),
            "extrapolation_factor": factor, "tokens_ratio": tokens.value / d.value,
            "moved": f"the pilot moved D* {tokens.value / d.value:.3g}x from the card's {format_count(d.value)}"}


def _pilot_dict(pilot: Pilot, term: TokenTerm) -> dict[str, Any]:
    return {"path": pilot.path, "points": int(len(pilot.tokens)), "warmup_left_out": pilot.warmup_left_out,
            "max_tokens": pilot.max_tokens,
            "loss_start": pilot.loss_start, "last_loss": float(pilot.loss[-1]),
            "fit": {"a": term.a, "k": term.k, "beta": term.beta, "samples": int(len(term.samples)),
                    "card_weight": term.card_weight}}


def _notes(method: str, ratio: float, criterion: Criterion, sparse_kernel: bool, relative: bool) -> list[str]:
    """Caveats that always hold for this kind of query (not warnings about the data)."""
    notes = []
    if method in SPARSE_METHODS and not sparse_kernel:
        notes.append(f"{method} keeps masked weights in dense kernels during training: compute counts 6 * N0 * D, "
                     f"{1 / (1 - ratio):.3g}x the 6 * N * D of the non-zero weights (--sparse-kernel if yours "
                     "runs sparse)")
    notes += criterion.notes()
    if relative:
        notes.append("losses are dL above the parent's L0 (unknown here): pass --loss-before or --pilot")
    return notes
