"""The online stop's forecaster: the pilot fit on a training run's curve so far.

``engine train`` with a ``stop:`` key asks, at every evaluation, how far the run is from D*.
The engine may import only ``data`` (docs/design-contract.md), so it does not import this module: it finds
:func:`forecast` through the entry point ``law`` of the group ``prunelaw.stop_forecasters``
(``pyproject.toml``), and another forecaster is one more entry point. The contract is the
signature and the returned keys of :func:`forecast`; ``data.cli.BadInput`` means "no forecast
yet" (too few points, a curve that does not fall), never a failed run.

The forecast is exactly the planner's pilot calibration (``fitting.pilot.fit_pilot``): the
token term ``L(D) = a + k * D**-beta`` fitted on the curve, with the card's mixture prior on
beta when the job names a card, else pilot-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from data.cli import BadInput
from fitting.pilot import CardPrior, Pilot, card_prior, fit_pilot, pilot_reference, too_few_points
from fitting.table import fit_points
from fitting.criteria import Criterion

KEYS = ("d_star", "low", "high", "final_loss", "final_low", "final_high")
"""What :func:`forecast` returns (tokens, and eval losses in nats; None where undefined)."""


def forecast(tokens: np.ndarray, loss: np.ndarray, *, criterion: str, value: float, budget: float,
             loss_before: float | None = None, card: str | None = None,
             meta: Mapping[str, Any] | None = None, level: float = 0.95,
             lr: np.ndarray | None = None) -> dict[str, float | None]:
    """D* under ``criterion`` with its interval, and the loss predicted at ``budget`` tokens.

    Parameters
    ----------
    tokens, loss : arrays
        The curve so far (``tokens`` increasing; a row at 0 is the loss right after pruning).
    criterion, value : str, float
        A registered criterion's kind (``fitting.criteria``: ``recover``, the fraction of the
        recoverable gap, or ``target_loss`` in nats, the two a job's ``stop:`` names) and its value.
    budget : float
        The job's token budget (where the final loss is predicted).
    loss_before : float or None
        The parent's L0 (recorded with the fit; it bounds nothing).
    card : path or None
        A law card: its bootstrap of the token exponent is the prior (pilot + card).
    meta : mapping or None
        The run's metadata (run-store names, e.g. ``params_before``, ``ratio``): places the
        card at the run's own parent and ratio.
    lr : array or None
        The learning rate at each point: points inside the warm-up are left out of the fit
        (``fitting.table.fit_points``).

    Raises
    ------
    BadInput
        Fewer than 3 points after step 0, a curve the token term cannot fit, an unreachable
        target, or a card that cannot give a prior.
    """
    tokens, loss = np.asarray(tokens, dtype=float), np.asarray(loss, dtype=float)
    start = float(loss[0]) if len(tokens) and tokens[0] == 0 else None
    keep, warm = fit_points(tokens, None if lr is None else np.asarray(lr, dtype=float))
    if why := too_few_points(int(keep.sum()), warm):
        raise BadInput(why)
    pilot = Pilot("curve so far", tokens[keep], loss[keep], start, loss_before, None, None, warm)
    term = fit_pilot(pilot, prior=_prior(card, meta or {}), loss_before=loss_before, level=level)
    d = term.tokens(Criterion.of(criterion, value), pilot_reference(pilot))
    final = term.loss(float(budget))
    return dict(zip(KEYS, (d.value, d.low, d.high, final.value, final.low, final.high)))


def _prior(card: str | None, meta: Mapping[str, Any]) -> CardPrior | None:
    """The card's prior on beta at the run's axes, or None (pilot-only)."""
    if not card:
        return None
    from fitting.card import load_card

    law_card = load_card(card)
    law = law_card.law
    fixed = {law.token_axis, law.offset, law.target}
    axes = {a: meta.get(law.store.get(a, a)) for a in law.axes if a not in fixed}
    missing = [a for a, v in axes.items() if v is None]
    if missing:
        raise BadInput(f"stop.card {card!r}: the run's metadata lacks {missing}, which place the "
                       f"{law.name!r} card at this run")
    return card_prior(law_card, **{a: float(v) for a, v in axes.items()})
