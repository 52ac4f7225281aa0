"""What the report needs from law cards: opening them, and tidy frames of law predictions.

Everything about a law comes from the ``fitting`` package: the card (``fitting.card.LawCard``,
whose law object owns the formula and the bands; ``fitting.criteria`` the D* criteria), the held-out splits
and the fit itself. This module holds no formula and never branches on a law's name; it only
turns cards into the frames :mod:`reports.plots` draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from data.cli import BadInput
from fitting.criteria import DEFAULT_RECOVER, Recover
from fitting.sections import Identified, json_float
from reports.tables import post_training_points, ratio_key

if TYPE_CHECKING:  # pragma: no cover
    from fitting.card import LawCard

DSTAR_CRITERION = f"close {DEFAULT_RECOVER:.0%} of the recoverable gap, planner recommend's default criterion"
"""How every D* of the report is chosen, in the words its pages print."""
GRID_POINTS = 40
"""Points per run on which a fitted curve and its band are drawn."""


def label(card: "LawCard", here: bool | None = None) -> str:
    """Short name for headings: law, family, methods and file name, and whose data it is
    (``here``: :func:`check_against_store`'s answer for the card, None when not checked)."""
    methods = ",".join(card.methods) or "all methods"
    family = f"{card.family}/" if card.family else ""
    other = "; fitted on OTHER data" if here is False else ""
    return f"{card.law.name} [{family}{methods}] ({Path(str(card.path)).name}{other})"


def law_label(here: bool | None) -> str:
    """What the drawn law is, for legends."""
    return "fitted law" if here is not False else "law fitted on other data"


def residual_columns(card: "LawCard") -> list[str]:
    """Run-store columns residuals are drawn against: the token axis, and the ratio axis."""
    law = card.law
    return [law.store[a] for a in (law.token_axis, law.ratio_axis) if a and a in law.store]


def open_cards(paths: list[str]) -> list["LawCard"]:
    """Load every card with fitting's loader (each keeps its path and the sha256 of its bytes:
    which exact card a page was drawn from); ``BadInput`` for a missing, corrupt or unknown law."""
    from fitting.card import load_card

    return [load_card(Path(raw)) for raw in paths]  # raises BadInput naming the file and what is wrong


def card_rows(frame: pd.DataFrame, card: "LawCard") -> pd.DataFrame:
    """Post-training rows of the runs a card describes: its init kind, family, methods and
    objective, and, for a card fitted ``--after-warmup``, only the points after each run's LR
    warm-up (the law's curves, residuals and RMSE are then those of the points it was fitted on:
    a KD card is not drawn over an LM run of the same shape, nor scored on the ramp it left out)."""
    from fitting.table import drop_warmup

    law = card.law
    rows = post_training_points(frame)
    rows = rows.loc[rows["init"] == law.store_init]
    if card.methods:
        rows = rows.loc[rows["method"].isin(card.methods)]
    if card.family and "family" in rows.columns:
        rows = rows.loc[rows["family"] == card.family]
    if card.data.objective and "objective" in rows.columns:
        rows = rows.loc[rows["objective"] == card.data.objective]
    if card.data.after_warmup and "lr" in rows.columns and rows["lr"].notna().any():
        rows = drop_warmup(rows, "the report's store")[0]
    return rows


def check_against_store(cards: list["LawCard"], runs: Path, frame: pd.DataFrame) -> dict[str, bool]:
    """Whether each card was fitted here, by the sha256 of its file; ``BadInput`` for a card
    that describes none of the runs.

    A card is "fitted here" when fitting's own reading of this store (same law, family and
    method) hashes to the card's ``data.content_hash``: anything else (a Chinchilla card of a
    published table, a P2 card of another grid) is labelled as fitted on other data.
    """
    out = {}
    for card in cards:
        if card_rows(frame, card).empty:
            kind = f"{card.law.store_init}-init runs of {card.family or 'any family'}/" \
                   f"{','.join(card.methods) or 'any method'}"
            raise BadInput(f"--law {str(card.path)!r} (law {card.law.name}, fitted on {card.data.source!r}) "
                           f"describes no runs of {str(runs)!r} (no {kind}); pass the store it was fitted "
                           "on, or leave the card out")
        out[card.sha256] = _fitted_on(card, runs)
    return out


def _fitted_on(card: "LawCard", runs: Path) -> bool:
    try:
        data = card.points_in(runs)
    except BadInput:
        return False
    return data.content_hash() == card.data.content_hash


def law_axes(card: "LawCard", rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The law's axes taken from run-store columns (``law.store`` says which column is which)."""
    law = card.law
    missing = [law.store[a] for a in law.axes if law.store.get(a) not in rows.columns]
    if missing:
        raise BadInput(f"runs lack column(s) {missing} that law {law.name!r} needs")
    return {a: rows[law.store[a]].to_numpy(float) for a in law.axes}


def predictions(frame: pd.DataFrame, card: "LawCard", points: int = GRID_POINTS) -> pd.DataFrame:
    """The card's law along every run it describes: run_id, tokens, pred, lo, hi.

    Each run's curve is evaluated on ``points`` log-spaced tokens spanning its observations,
    with the card's confidence band of the mean law (NaN without samples).
    """
    rows = card_rows(frame, card)
    if rows.empty:
        return pd.DataFrame(columns=["run_id", "tokens", "pred", "lo", "hi"])
    ends = rows.groupby("run_id")["tokens"].agg(["min", "max"])
    first = rows.drop_duplicates("run_id").set_index("run_id").loc[ends.index]
    grid = np.geomspace(ends["min"].to_numpy(float), ends["max"].to_numpy(float), points, axis=1)
    dense = first.loc[first.index.repeat(points)].reset_index()
    dense["tokens"] = grid.ravel()
    axes = law_axes(card, dense)
    pred = card.predict(**axes)
    band = card.band(**axes)  # confidence band of the mean law
    lo, hi = band if band is not None else (np.full_like(pred, np.nan), np.full_like(pred, np.nan))
    return pd.DataFrame({"run_id": dense["run_id"], "tokens": dense["tokens"], "pred": pred,
                         "lo": lo, "hi": hi})


def residuals(frame: pd.DataFrame, card: "LawCard") -> pd.DataFrame:
    """Observed minus predicted loss at every point the card describes."""
    rows = card_rows(frame, card)
    pred = card.predict(**law_axes(card, rows)) if len(rows) else []
    return pd.DataFrame({"run_id": rows["run_id"].to_numpy(), "method": rows["method"].to_numpy(),
                         "tokens": rows["tokens"].to_numpy(float), "ratio": ratio_key(rows).to_numpy(),
                         "observed": rows["eval_loss"].to_numpy(float), "predicted": np.asarray(pred, float),
                         "residual": rows["eval_loss"].to_numpy(float) - np.asarray(pred, float)})


def param_rows(card: "LawCard") -> list[dict]:
    """Table rows: parameter, estimate, interval, and the card's identifiability verdict."""
    out = []
    for name in card.law.params:
        ident = card.identifiable.get(name, Identified())
        interval = card.ci.params.get(name) or (None, None)
        if not ident.identified:
            note = f"not identified, fixed at {ident.fixed_at}"
        elif ident.bound:
            note = "at a bound: not identified by this data"
        elif ident.weak:
            note = "weakly identified"
        else:
            note = "" if interval[0] is not None else "no bootstrap interval"
        out.append({"name": name, "value": card.params[name], "lo": interval[0], "hi": interval[1],
                    "note": note})
    return out + derived_rows(card)


def derived_rows(card: "LawCard") -> list[dict]:
    """The card's decision quantities (predicted loss, D*) with intervals and their query."""
    out = []
    for name, d in card.ci.derived.items():
        where = ", ".join(f"{k}={_short(float(v))}" for k, v in d.query.items())
        head = "slope criterion (not the D* pages'), " if "slope" in d.query else ""
        out.append({"name": name, "value": json_float(d.value), "lo": d.low, "hi": d.high,
                    "note": f"{head}at {where}"})
    return out


def dstar_table(card: "LawCard", parents: dict[str, float], ratios: np.ndarray | None = None,
                recover: float | None = None) -> pd.DataFrame:
    """D* per ratio for each parent size: label, params_before, ratio, dstar, lo, hi.

    The criterion is ``planner recommend``'s default (close ``recover`` of the recoverable gap,
    from the law's loss at the card's reference budget), computed by the same functions
    (``fitting.term``), so a page and the planner give one number for one card.
    """
    if not card.law.plans_budgets:
        raise BadInput(f"D* per ratio needs a law with token, size and ratio axes; {card.path} "
                       f"holds law {card.law.name!r}")
    criterion = Recover(DEFAULT_RECOVER if recover is None else recover)
    ratios = np.linspace(0.1, 0.9, 17) if ratios is None else np.asarray(ratios, float)
    rows = []
    for label, n0 in parents.items():
        start = card.reference(n0)
        for ratio in ratios:
            try:
                est = card.token_term(n0, float(ratio), None).tokens(criterion, start)
                found = (est.value, np.nan if est.low is None else est.low, np.nan if est.high is None else est.high)
            except BadInput:  # the law predicts no gain at this ratio
                found = (np.nan, np.nan, np.nan)
            rows.append((label, n0, float(ratio), *found))
    return pd.DataFrame(rows, columns=["label", "params_before", "ratio", "dstar", "lo", "hi"])


def ratio_free_note(table: pd.DataFrame) -> str:
    """Why every parent's D* line is flat, when it is ('' otherwise): under a token term that is
    a power of D alone, closing a fraction F of the gap takes D_ref * (1 - F)^(-1/beta) at any
    ratio; the ratio only sets how large the gap is. A reader who sees flat lines should be told
    it is the criterion, not a plotting fault, and which criterion does compare ratios."""
    spans = table.dropna(subset=["dstar"]).groupby("label")["dstar"].agg(["min", "max"])
    if spans.empty or not np.allclose(spans["min"], spans["max"], rtol=1e-9):
        return ""
    return ("D* is the same at every ratio: this law's token term is a power of D alone, so closing a fixed "
            "fraction of the gap costs the same tokens whatever the ratio (the ratio sets the gap's size: see the "
            "loss pages); planner recommend --target-loss compares ratios by the loss they reach")


@dataclass(frozen=True)
class HeldOut:
    """One held-out extrapolation: which split, its points, its metrics, or why it is absent."""

    by: str
    split: str
    points: pd.DataFrame
    """observed, predicted, method, run_id, tokens of the held-out points."""
    metrics: dict[str, float]
    message: str = ""


def heldout(frame: pd.DataFrame, card: "LawCard", by: str, runs: Path) -> HeldOut:
    """Refit the card's law on the train part of fitting's split ``by``; predict the rest.

    The points are what ``fitting fit`` reads from the store ``runs`` for the card's law,
    family and method (finished runs, tokens > 0, points above L0 for a law with an offset);
    the split, its label, the fit and the metrics are fitting's, with the card's Huber delta,
    space and weighting, so the page shows the extrapolation ``fitting validate`` scores.
    ``frame`` (the store's rows) names each held-out run's method.
    """
    from fitting.fit import FitConfig, fit
    from fitting.validate import heldout_metrics, split, split_axis

    law = card.law
    rows = card_rows(frame.loc[frame["status"] == "done"], card)
    if rows.empty:
        return HeldOut(by, "", pd.DataFrame(), {}, "no finished runs the card describes")
    data = card.points_in(runs)
    if split_axis(law, by) is None:
        return HeldOut(by, "", pd.DataFrame(), {}, f"law {card.law.name!r} has no {by} axis")
    train, label = split(data, by)
    if train.all() or not train.any():
        return HeldOut(by, label, pd.DataFrame(), {}, "nothing to hold out")
    # top_k=1: one polished grid start (plus the random one) is enough for a diagnostic refit.
    config = FitConfig(delta=1e-3 if card.fit.delta is None else card.fit.delta, space=card.fit.space,
                       weighting=card.fit.weighting, top_k=1)
    result = fit(data.subset(train), config)
    test = data.subset(~train)
    pred = result.predict(**test.axes)
    tokens = test.axes.get(law.token_axis) if law.token_axis else None
    metrics = heldout_metrics(law, result, test, test if tokens is not None else None)
    methods = pd.Series(test.run_ids).map(rows.drop_duplicates("run_id").set_index("run_id")["method"])
    points = pd.DataFrame({"observed": test.y, "predicted": pred, "run_id": test.run_ids,
                           "method": methods.fillna("?").to_numpy(),
                           "tokens": tokens if tokens is not None else np.full(len(pred), np.nan)})
    return HeldOut(by, label, points, metrics, "" if result.success else result.message)


def _short(value: float) -> str:
    from data.units import format_count

    return format_count(value) if value >= 1e4 else f"{value:.4g}"
