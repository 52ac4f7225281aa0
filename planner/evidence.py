"""Closed-loop evidence: does the planner's answer hold on a run it has not seen?

Issue 14's test of the whole chain, per family and method of a run store:

- ``size``: fit P2 on every parent but the largest, let :func:`planner.recommend.recommend`
  choose D* (its default criterion) and predict the loss at D* for the largest parent's runs,
  then read what each of those runs actually reached at D* (log-linear interpolation between
  its eval checkpoints; a D* beyond the last checkpoint is reported as such, not guessed);
- ``ratio``: fit on every ratio but each parent's highest, predict the highest.

Scored on the part the law predicts, ``L - L0`` (L0 dominates the total loss), and by whether
the run's loss falls inside the predicted interval. One function computes each number; the
findings table and the reference report both print what :func:`closed_loop` returns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.compute import get_gpu
from planner.query import Parent
from planner.recommend import recommend
from fitting.criteria import DEFAULT_CRITERION, Criterion

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

HOLDOUTS = ("size", "ratio")


@dataclass(frozen=True)
class LoopRow:
    """One held-out run: what the planner said before seeing it, and what it did."""

    family: str
    method: str
    holdout: str
    run_id: str
    params_before: float
    ratio: float
    loss_before: float
    d_star: float
    d_star_low: float | None
    d_star_high: float | None
    loss_pred: float
    loss_low: float | None
    loss_high: float | None
    loss_actual: float | None
    """The run's eval loss at D* (None when D* lies beyond its last checkpoint)."""
    tokens_max: float
    mode: str

    @property
    def err_dl(self) -> float | None:
        """Relative error of the predicted ``L - L0`` at D* (signed: > 0 is pessimistic)."""
        if self.loss_actual is None:
            return None
        return (self.loss_pred - self.loss_actual) / (self.loss_actual - self.loss_before)

    @property
    def inside(self) -> bool | None:
        if self.loss_actual is None or self.loss_low is None or self.loss_high is None:
            return None
        return self.loss_low <= self.loss_actual <= self.loss_high

    @property
    def beyond(self) -> float | None:
        """How many times the observed tokens D* asks for (None when inside them)."""
        return self.d_star / self.tokens_max if self.d_star > self.tokens_max else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "err_dl": self.err_dl, "inside": self.inside, "beyond": self.beyond}


def loss_at(curve: "pd.DataFrame", value: float, axis: str = "tokens") -> float | None:
    """Eval loss of one run at ``value`` of ``axis`` (tokens, or training seconds ``elapsed_s``),
    interpolated in log ``axis``; None outside its points."""
    points = curve[curve[axis] > 0].sort_values(axis)
    d, loss = points[axis].to_numpy(float), points["eval_loss"].to_numpy(float)
    if len(d) == 0 or not d[0] <= value <= d[-1]:
        return None
    return float(np.interp(np.log(value), np.log(d), loss))


def _split(runs: "pd.DataFrame", holdout: str) -> "pd.Series":
    """True for the held-out runs of one family+method (``runs``: one row per run)."""
    if holdout == "size":
        return runs["params_before"] == runs["params_before"].max()
    top = runs.groupby("params_before")["ratio_target"].transform("max")
    return runs["ratio_target"] == top


def closed_loop(store: str | Path, family: str, method: str, holdout: str, *, n_bootstrap: int = 100,
                criterion: Criterion | None = None, seed: int = 0) -> list[LoopRow]:
    """Fit without the held-out runs, recommend for each of them, compare with what they did."""
    from data.runs import load
    from fitting.fit import FitConfig, fit
    from fitting.table import load_data

    criterion = criterion or DEFAULT_CRITERION
    frame = load(store)
    frame = frame[(frame["family"] == family) & (frame["method"] == method) & (frame["status"] == "done")
                  & (frame["init"] == "pruned")]
    runs = frame.groupby("run_id").first().reset_index()
    test = runs[_split(runs, holdout)]
    data = load_data(store, "p2", method=method, family=family)
    train_ids = set(runs.loc[~_split(runs, holdout), "run_id"])
    card = fit(data.subset(np.isin(data.run_ids, list(train_ids))),
               FitConfig(n_bootstrap=n_bootstrap, seed=seed))
    planner_card = replace(card, path=Path(f"<closed loop: {family} {method} without the held-out {holdout}>"))
    rows = []
    for _, run in test.iterrows():
        parent = Parent(int(run["params_before"]), family, None)
        rec = recommend(parent, method, float(run["ratio"]), planner_card, "closed loop", criterion=criterion,
                        gpu=get_gpu("h100"), mfu=0.4, price=None, loss_before=float(run["loss_before"]))
        curve = frame[frame["run_id"] == run["run_id"]]
        rows.append(LoopRow(family, method, holdout, run["run_id"], float(run["params_before"]),
                            float(run["ratio"]), float(run["loss_before"]), rec.tokens.value, rec.tokens.low,
                            rec.tokens.high, rec.loss.value, rec.loss.low, rec.loss.high,
                            loss_at(curve, rec.tokens.value), float(curve["tokens"].max()), rec.mode))
    return rows


def summary(rows: list[LoopRow]) -> dict[str, Any]:
    """Median |error| on L - L0, coverage of the interval, and D* beyond the observed tokens."""
    errs = [abs(r.err_dl) for r in rows if r.err_dl is not None]
    inside = [r.inside for r in rows if r.inside is not None]
    return {"runs": len(rows), "scored": len(errs),
            "median_abs_err_dl": float(np.median(errs)) if errs else None,
            "inside": sum(inside), "covered_of": len(inside),
            "beyond_observed": sum(r.beyond is not None for r in rows)}


TABLE_HEAD = ("family", "method", "held out", "N0", "ratio", "D* [95%]", "L-L0 pred [95%]",
              "L-L0 actual", "err on L-L0", "inside")
"""Columns of the closed-loop table; :func:`table_cells` fills them, findings and report print them."""


def table_cells(row: dict[str, Any]) -> list[str]:
    """One held-out run as the table's strings, from :meth:`LoopRow.to_dict` (JSON-safe)."""
    l0 = row["loss_before"]

    def gap(x: float | None) -> str:
        return "" if x is None else f"{x - l0:.4f}"

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.3g}"

    actual = (f"beyond observed ({row['beyond']:.1f}x)" if row["loss_actual"] is None
              else gap(row["loss_actual"]))
    err = "" if row["err_dl"] is None else f"{row['err_dl']:+.0%}"
    inside = {None: "", True: "yes", False: "no"}[row["inside"]]
    return [row["family"], row["method"], row["holdout"], f"{row['params_before']:,.0f}", f"{row['ratio']:.3f}",
            f"{num(row['d_star'])} [{num(row['d_star_low'])}, {num(row['d_star_high'])}]",
            f"{gap(row['loss_pred'])} [{gap(row['loss_low'])}, {gap(row['loss_high'])}]", actual, err, inside]


def markdown(rows: list[LoopRow]) -> str:
    """The findings table: one line per held-out run."""
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(table_cells(r.to_dict())) + " |" for r in rows]
    return "\n".join(lines)
