"""Model comparison: does the data support P2, or does a simpler or different form do as well?

Each candidate law is fitted to the same points by the same solver and scored two ways:

- information criteria on the fit's own residuals (log loss by default), Gaussian likelihood:
  ``AIC = n log(RSS/n) + 2k``, ``BIC = n log(RSS/n) + k log n``, ``k`` the free parameters;
- leave-one-run-out (LORO): each run in turn is held out, the law refitted on the others and
  the held-out run predicted; RMSE over all held-out points on ``L`` and on ``L - L0``.

LORO is the question a user asks of a law (will it predict a run I have not made?); AIC/BIC
say whether its extra parameters are earned on the data it saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from data.cli import BadInput
from fitting.fit import FitConfig, fit
from fitting.identify import identify
from fitting.laws import LAWS, Law, get_law
from fitting.metrics import rmse
from fitting.table import FitData

OFFSET_AXIS = "loss_before"
"""Where the data carry the parent's loss, LORO errors are also reported on ``L - L0``."""


@dataclass(frozen=True)
class Candidate:
    """One law's scores on the data (lower is better for every number)."""

    law: str
    formula: str
    k: int
    n: int
    rmse: float
    aic: float
    bic: float
    loro_rmse: float
    loro_rmse_gap: float | None
    loro_runs: int
    message: str = ""

    def to_dict(self) -> dict:
        clean = lambda v: None if v is None or not math.isfinite(v) else float(v)  # noqa: E731
        return {"law": self.law, "formula": self.formula, "k": self.k, "n": self.n,
                "rmse": clean(self.rmse), "aic": clean(self.aic), "bic": clean(self.bic),
                "loro_rmse": clean(self.loro_rmse), "loro_rmse_gap": clean(self.loro_rmse_gap),
                "loro_runs": self.loro_runs, "message": self.message}


def candidates_for(data: FitData) -> list[Law]:
    """Registered laws that read only axes the data have and predict the same target."""
    primary = get_law(data.law)
    return [law for law in LAWS.values() if law.target == primary.target
            and set(law.axes) <= set(data.axes) and law.store_init == primary.store_init]


def as_law(data: FitData, law: Law) -> FitData:
    """The same points, seen through ``law``'s axes."""
    return replace(data, law=law.name, axes={a: data.axes[a] for a in law.axes})


def _information(law: Law, data: FitData, card, config: FitConfig) -> tuple[int, float, float, float]:
    pred = card.predict(**data.axes)
    resid = np.log(pred) - np.log(data.y) if config.space == "log" else pred - data.y
    n = data.n_points
    k = len(law.params) - len(card.not_identified())
    rss = max(float(np.sum(resid ** 2)), 1e-300)
    return k, n * math.log(rss / n) + 2 * k, n * math.log(rss / n) + k * math.log(n), rmse(pred, data.y)


def leave_one_run_out(data: FitData, config: FitConfig) -> tuple[float, float | None, int]:
    """RMSE of each run predicted by a fit on all the others (on L, and on L - L0)."""
    law = get_law(data.law)
    full = identify(law, data.axes, data.n_points).fixed
    errs, gaps, used = [], [], 0
    for run in data.runs:
        held = data.run_ids == run
        train = data.subset(~held)
        try:
            if identify(law, train.axes, train.n_points).fixed != full:
                continue  # this run alone identifies a parameter: its hold-out tests another law
            card = fit(train, config)
        except BadInput:
            continue
        test = data.subset(held)
        pred = card.predict(**test.axes)
        errs.append(pred - test.y)
        if OFFSET_AXIS in test.axes:
            gaps.append((pred - test.axes[OFFSET_AXIS]) - (test.y - test.axes[OFFSET_AXIS]))
        used += 1
    if not errs:
        return math.nan, None, 0
    err = np.concatenate(errs)
    gap = float(np.sqrt(np.mean(np.concatenate(gaps) ** 2))) if gaps else None
    return float(np.sqrt(np.mean(err ** 2))), gap, used


def compare(data: FitData, laws: list[str] | None = None,
            config: FitConfig = FitConfig()) -> list[Candidate]:
    """Score every candidate law on ``data`` (default: :func:`candidates_for`), best LORO first."""
    chosen = [get_law(n) for n in laws] if laws else candidates_for(data)
    missing = [(law.name, [a for a in law.axes if a not in data.axes]) for law in chosen]
    bad = [f"{name} needs {axes}" for name, axes in missing if axes]
    if bad:
        raise BadInput(f"laws cannot be compared on this input: {'; '.join(bad)}")
    config = replace(config, n_bootstrap=0)
    out = []
    for law in chosen:
        view = as_law(data, law)
        try:
            card = fit(view, config)
        except BadInput as exc:
            out.append(Candidate(law.name, law.formula, 0, view.n_points, math.nan, math.nan,
                                 math.nan, math.nan, None, 0, f"cannot be fitted: {exc}"))
            continue
        k, aic, bic, err = _information(law, view, card, config)
        loro, gap, used = leave_one_run_out(view, config)
        out.append(Candidate(law.name, law.formula, k, view.n_points, err, aic, bic, loro, gap,
                             used, "" if card.success else card.message))
    return sorted(out, key=lambda c: (math.isnan(c.loro_rmse), c.loro_rmse))


def render(results: list[Candidate]) -> str:
    """Plain-text table plus one line naming the winner by each criterion."""
    ok = [c for c in results if math.isfinite(c.aic)]
    best_aic = min((c.aic for c in ok), default=math.nan)
    head = (f"{'law':<11} {'k':>2} {'rmse':>9} {'AIC':>10} {'dAIC':>7} {'BIC':>10} "
            f"{'LORO rmse':>10} {'LORO L-L0':>10} {'runs':>5}  formula")
    lines = [head, "-" * len(head)]
    for c in results:
        if not math.isfinite(c.aic):
            lines.append(f"{c.law:<11} {c.message}")
            continue
        gap = f"{c.loro_rmse_gap:>10.4g}" if c.loro_rmse_gap is not None else f"{'-':>10}"
        lines.append(f"{c.law:<11} {c.k:>2} {c.rmse:>9.4g} {c.aic:>10.1f} {c.aic - best_aic:>7.1f} "
                     f"{c.bic:>10.1f} {c.loro_rmse:>10.4g} {gap} {c.loro_runs:>5}  {c.formula}")
    if ok:
        by = {"LORO": min(ok, key=lambda c: c.loro_rmse if math.isfinite(c.loro_rmse) else math.inf),
              "AIC": min(ok, key=lambda c: c.aic), "BIC": min(ok, key=lambda c: c.bic)}
        lines.append("best: " + ", ".join(f"{k} {c.law}" for k, c in by.items())
                     + "  (lower is better; dAIC > 10: essentially no support)")
    return "\n".join(lines)
