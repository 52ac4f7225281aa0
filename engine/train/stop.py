"""The online budget: refit the token term at every eval checkpoint, stop when D* is reached.

A job with ``stop: {at: optimum}`` (close ``recover`` of the recoverable gap, the planner's
default criterion) or ``stop: {target_loss: L}`` refits ``L(D) = a + k * D**-beta`` on its own
curve so far at every evaluation (the planner's pilot fit, ``planner.pilot``; torch-free and a
few ms) and ends the run, as ``done``, once the tokens consumed reach the lower end of the
predicted D*'s interval: from there on the law cannot tell another token apart from stopping.
It never stops before ``min_fraction`` of the job's token budget (an early curve mostly
measures warm-up), nor with fewer than three points after step 0.

Every decision is appended to ``run.json`` under ``stop`` (``history``: step, tokens, fraction,
D* with its interval, predicted final loss, decision) and the final one under ``stop.decision``,
which ``engine grid status`` shows. A resumed run first drops the entries after its checkpoint,
so a killed and resumed run records each evaluation once. Rank 0 decides; every rank follows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.cli import BadInput
from data.runs import RunStore
from engine.train.config import JobConfig


def _criterion(job: JobConfig):
    from planner.term import Criterion

    if job.stop.target_loss is not None:
        return Criterion("target_loss", job.stop.target_loss)
    return Criterion("recover", job.stop.recover)


def _card_prior(job: JobConfig) -> tuple[np.ndarray | None, float | None]:
    """The card's beta samples (the pilot + card prior), or nothing (pilot-only)."""
    if not job.stop.card:
        return None, None
    from planner.cards import load_card

    card = load_card(job.stop.card, law="p2")
    names = list(card.card.law.params)
    boot = card.card.bootstrap_params
    beta = card.card.params["beta"]
    return (None if boot is None else boot[:, names.index("beta")]), beta


def predict(job: JobConfig, curve: Any, loss_before: float | None) -> dict[str, Any]:
    """D* (and its interval) and the predicted loss at the job's budget, from the curve so far."""
    from planner.pilot import Pilot, fit_pilot
    from planner.recommend import pilot_reference

    tokens = curve["tokens"].to_numpy(dtype=float)
    loss = curve["eval_loss"].to_numpy(dtype=float)
    start = float(loss[0]) if len(tokens) and tokens[0] == 0 else None
    keep = tokens > 0
    if int(keep.sum()) < 3:
        raise BadInput(f"{int(keep.sum())} point(s) after step 0; the fit needs 3")
    pilot = Pilot("curve so far", tokens[keep], loss[keep], start, loss_before, None, None)
    betas, beta = _card_prior(job)
    term = fit_pilot(pilot, card_betas=betas, card_beta=beta, loss_before=loss_before)
    d = term.tokens(_criterion(job), pilot_reference(pilot))
    final = term.loss(float(job.tokens))
    return {"d_star": d.value, "low": d.low, "high": d.high, "final_loss": final.value,
            "final_low": final.low, "final_high": final.high}


def decide(job: JobConfig, curve: Any, step: int, tokens: int, loss_before: float | None) -> dict[str, Any]:
    """One history entry: the prediction and ``stop`` or ``continue`` with the reason."""
    fraction = tokens / job.tokens
    entry: dict[str, Any] = {"step": step, "tokens": tokens, "fraction": round(fraction, 6)}
    try:
        entry.update(predict(job, curve, loss_before))
    except BadInput as exc:
        entry.update(decision="continue", reason=f"no fit yet: {exc}")
        return entry
    reach = entry["low"] if entry["low"] is not None else entry["d_star"]
    if fraction < job.stop.min_fraction:
        entry.update(decision="continue", reason=f"below min_fraction {job.stop.min_fraction:g}")
    elif tokens >= reach:
        entry.update(decision="stop", reason=f"tokens {tokens} reached the predicted D* interval "
                                              f"(low {reach:.4g}, D* {entry['d_star']:.4g})")
    else:
        entry.update(decision="continue", reason=f"predicted D* {entry['d_star']:.4g} not reached")
    return entry


def record(store: RunStore, job: JobConfig, entry: dict[str, Any]) -> dict[str, Any]:
    """Append ``entry`` to run.json's stop history (replacing entries at or after its step)."""
    run = store.read(job.run_id)
    stop = dict(run.get("stop") or {})
    history = [h for h in stop.get("history", []) if h["step"] < entry["step"]]
    stop.update(config=job.to_dict()["stop"], history=history + [_jsonable(entry)],
                decision=_jsonable(entry) if entry["decision"] == "stop" else None)
    store.update(job.run_id, stop=stop)
    return stop


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in entry.items()}


def should_stop(job: JobConfig, store: RunStore, step: int, tokens: int, is_main: bool) -> bool:
    """Rank 0: refit, record, and say whether to end the run now (others get False: broadcast)."""
    if job.stop is None or not is_main:
        return False
    curve = store.read_curve(job.run_id)
    loss_before = (store.read(job.run_id).get("meta") or {}).get("loss_before")
    entry = decide(job, curve, step, tokens, loss_before if job.method != "none" else None)
    record(store, job, entry)
    return entry["decision"] == "stop"
