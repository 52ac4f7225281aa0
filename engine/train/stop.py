"""The online budget: refit the token term at every eval checkpoint, stop when D* is reached.

A job with ``stop: {at: optimum}`` (close ``recover`` of the recoverable gap, the planner's
default criterion) or ``stop: {target_loss: L}`` asks a *forecaster* at every evaluation for D*
(with its interval) from its own curve so far, and ends the run, as ``done``, once the tokens
consumed reach the lower end of the predicted D*'s interval: from there on the law cannot tell
another token apart from stopping. It never stops before ``min_fraction`` of the job's token
budget (an early curve mostly measures warm-up), nor with fewer than three points after step 0.

The forecaster is a plugin, not an import: the design contract (docs/design-contract.md) lets the engine import only ``data``, and
the fit lives in ``fitting``. It is looked up by name (``law``) in the entry-point group
``prunelaw.stop_forecasters``; prunelaw registers ``fitting.online:forecast`` there
(``pyproject.toml``), the same torch-free pilot fit ``planner recommend --pilot`` uses (a few
ms). The contract: ``forecast(tokens, loss, *, criterion, value, budget, loss_before, card,
meta, lr) -> {d_star, low, high, final_loss, final_low, final_high}`` (``lr``: the learning rate
at each point, None where the curve lacks it; the fit leaves the warm-up out), raising
``data.cli.BadInput`` when it has no forecast yet.

Every decision is appended to ``run.json`` under ``stop`` (``history``: step, tokens, fraction,
D* with its interval, predicted final loss, decision) and the final one under ``stop.decision``,
which ``engine grid status`` shows. A resumed run first drops the entries after its checkpoint,
so a killed and resumed run records each evaluation once. Rank 0 decides; every rank follows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from data.cli import BadInput
from engine.train.config import JobConfig
from engine.train.runlog import RunLog

FORECASTERS = "prunelaw.stop_forecasters"
"""Entry-point group of the online stop's forecasters."""
FORECASTER = "law"
"""The forecaster the stop uses (prunelaw's own: ``fitting.online:forecast``)."""


class NoForecaster(RuntimeError):
    """No forecaster of that name is installed (prunelaw not installed as a distribution)."""


@functools.cache
def forecaster(name: str = FORECASTER) -> Callable[..., dict[str, Any]]:
    """The installed forecaster ``name`` of the group ``prunelaw.stop_forecasters``.

    Raises:
        NoForecaster: nothing registered under that name, with how to fix it.
    """
    found = entry_points(group=FORECASTERS, name=name)
    if not found:
        have = sorted(ep.name for ep in entry_points(group=FORECASTERS))
        raise NoForecaster(
            f"the online stop needs a forecaster {name!r} in the entry-point group {FORECASTERS!r} "
            f"(installed: {', '.join(have) or 'none'}); install prunelaw itself "
            "('pip install -e .' in the checkout), which registers fitting.online:forecast")
    return next(iter(found)).load()


def predict(job: JobConfig, curve: Any, loss_before: float | None,
            meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """D* (and its interval) and the predicted loss at the job's budget, from the curve so far."""
    stop = job.stop
    kind, value = ("target_loss", stop.target_loss) if stop.target_loss is not None else ("recover", stop.recover)
    return forecaster()(curve["tokens"].to_numpy(dtype=float), curve["eval_loss"].to_numpy(dtype=float),
                        criterion=kind, value=float(value), budget=float(job.tokens + int((meta or {}).get("prune_tokens", 0))),
                        loss_before=loss_before, card=stop.card, meta=meta or {},
                        lr=curve["lr"].to_numpy(dtype=float) if "lr" in curve else None)


def decide(job: JobConfig, curve: Any, step: int, tokens: int, loss_before: float | None,
           meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """One history entry: the prediction and ``stop`` or ``continue`` with the reason."""
    # A trained pruning stage's tokens start the curve (meta.prune_tokens): the fraction is of
    # the post-training budget alone.
    fraction = (tokens - int((meta or {}).get("prune_tokens", 0))) / job.tokens
    entry: dict[str, Any] = {"step": step, "tokens": tokens, "fraction": round(fraction, 6)}
    try:
        entry.update(predict(job, curve, loss_before, meta))
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


def record(stop: Mapping[str, Any] | None, job: JobConfig, entry: dict[str, Any]) -> dict[str, Any]:
    """run.json's ``stop`` after ``entry``: its history with entries at or after its step replaced."""
    stop = dict(stop or {})
    history = [h for h in stop.get("history", []) if h["step"] < entry["step"]]
    stop.update(config=job.to_dict()["stop"], history=history + [_jsonable(entry)],
                decision=_jsonable(entry) if entry["decision"] == "stop" else None)
    return stop


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in entry.items()}


def should_stop(job: JobConfig, log: RunLog, step: int, tokens: int) -> bool:
    """Rank 0: refit on the log's curve so far, record, and say whether to end the run now
    (other ranks get False: broadcast)."""
    if job.stop is None or not log.is_main:
        return False
    meta = log.meta
    loss_before = meta.get("loss_before") if job.method != "none" else None
    entry = decide(job, log.curve(), step, tokens, loss_before, meta)
    log.update(stop=record(log.record.get("stop"), job, entry))
    return entry["decision"] == "stop"
