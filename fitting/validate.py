"""Held-out extrapolation, named by what it holds out (the P2 paper's three directions).

- ``tokens``: fit every run's points with ``D <= f * Dmax`` of that run (``f`` stated, default
  0.25: the last 0.6 decades of a log-spaced curve are predicted), predict the rest.
- ``size``: leave the largest model size out (P2: the largest parent ``N0``), predict it.
- ``ratio``: leave the highest pruning ratio out, predict it.

When the train part cannot identify every parameter the full data can (e.g. three parents
minus the largest leaves two: ``N_C`` and ``alpha`` are pinned), the validated law is the
reduced one, and the result says so (``reduced``). Metrics on the held-out points: RMSE, MAPE,
R^2 and the average slope difference on the loss ``L``, and for a law with an offset the RMSE
and MAPE of the part the law predicts, ``L - L0`` (``*_gap``), where ``L0`` does not dominate.
"""

from __future__ import annotations

import numpy as np

from data.cli import BadInput
from fitting.fit import FitConfig, fit
from fitting.identify import distinct, identify
from fitting.laws import Law, get_law
from fitting.metrics import mape, rmse, score, slope_diff
from fitting.result import ValidationResult
from fitting.table import FitData

SPLITS = ("tokens", "size", "ratio")
TOKEN_FRACTION = 0.25
"""``tokens`` split: fit ``D <= f * Dmax`` of each run."""


def split_tokens(data: FitData, fraction: float = TOKEN_FRACTION, axis: str | None = None) -> np.ndarray:
    """Train mask: points with ``D <= fraction * Dmax`` of their own run (``axis``: the law's
    token axis). Each run keeps at least its first point and holds out at least its last."""
    tokens = data.axes[axis or get_law(data.law).token_axis or "tokens"]
    train = np.ones(data.n_points, dtype=bool)
    for run in data.runs:
        idx = np.flatnonzero(data.run_ids == run)
        if len(idx) < 3:
            continue
        t = tokens[idx]
        keep = t <= fraction * t.max() * (1 + 1e-12)
        keep[np.argmin(t)] = True
        keep[np.argmax(t)] = False
        train[idx] = keep
    return train


def split_largest(data: FitData, axis: str) -> np.ndarray:
    """Train mask: every point whose ``axis`` is below its maximum (the largest is held out)."""
    values = data.axes[axis]
    return values < values.max() * (1 - 1e-6)


def split_axis(law: Law, by: str) -> str | None:
    """The axis a split holds out along (None: the law has none)."""
    return {"tokens": law.token_axis, "size": law.size_axis, "ratio": law.ratio_axis}[by]


def split(data: FitData, by: str, fraction: float = TOKEN_FRACTION) -> tuple[np.ndarray, str]:
    """Train mask and the words that name what it holds out."""
    law = get_law(data.law)
    if by not in SPLITS:
        raise BadInput(f"validation split {by!r}; allowed: {', '.join(SPLITS)}, all")
    axis = split_axis(law, by)
    if axis is None or axis not in data.axes:
        raise BadInput(f"validation by {by!r} needs a {by} axis; law {law.name!r} has {list(data.axes)}")
    if by == "tokens":
        return (split_tokens(data, fraction, axis),
                f"tokens: fit {axis} <= {fraction:g} x Dmax of each run -> predict {axis} > {fraction:g} x Dmax")
    top = data.axes[axis].max()
    what = "largest model size" if by == "size" else "highest ratio"
    return split_largest(data, axis), f"{by}: leave the {what} out: fit {axis} < {top:.4g} -> predict {axis} = {top:.4g}"


def _reduced(law: Law, data: FitData, train: np.ndarray) -> tuple[str, ...]:
    """Parameters the train part pins that the full data identify (the reduced law)."""
    full = identify(law, data.axes, data.n_points).fixed
    part = identify(law, {a: v[train] for a, v in data.axes.items()}, int(train.sum())).fixed
    return tuple(sorted(set(part) - set(full)))


def heldout_metrics(law: Law, card, test: FitData, slopes: FitData | None = None) -> dict[str, float]:
    """Metrics of ``card`` on held-out points: on L, and on L - L0 for a law with an offset."""
    pred = card.predict(**test.axes)
    out = score(pred, test.y)
    if law.offset:
        l0 = test.axes[law.offset]
        out["rmse_gap"] = rmse(pred - l0, test.y - l0)
        out["mape_gap"] = mape(pred - l0, test.y - l0)
    if slopes is not None and law.token_axis:
        out["slope_diff"] = slope_diff(card.predict(**slopes.axes), slopes.y,
                                       slopes.axes[law.token_axis], slopes.run_ids)
    return out


def validate_one(data: FitData, by: str, config: FitConfig = FitConfig(),
                 fraction: float = TOKEN_FRACTION) -> ValidationResult:
    """Fit on the train part of split ``by``, score predictions on the held-out part."""
    law = get_law(data.law)
    train, label = split(data, by, fraction)
    n_train, n_test = int(train.sum()), int((~train).sum())
    axis = split_axis(law, by)
    if n_test == 0 or n_train == 0 or (by != "tokens" and distinct(data.axes[axis]) < 2):
        why = f"one distinct {axis} value" if by != "tokens" else "curves too short to split"
        return ValidationResult(by, False, f"nothing to hold out: {why}", label, n_train, n_test, {}, {})
    try:
        reduced = _reduced(law, data, train)
        card = fit(data.subset(train), FitConfig(delta=config.delta, space=config.space,
                                                 weighting=config.weighting, top_k=config.top_k,
                                                 n_random=config.n_random, seed=config.seed))
    except BadInput as exc:
        return ValidationResult(by, False, f"train part cannot be fitted: {exc}", label,
                                n_train, n_test, {}, {})
    slopes = data.subset(_slope_mask(data, train)) if law.token_axis else None
    metrics = heldout_metrics(law, card, data.subset(~train), slopes)
    message = card.message + (f"; reduced law: {', '.join(reduced)} pinned (the train part "
                              "cannot identify them)" if reduced else "")
    return ValidationResult(by, card.success, message, label, n_train, n_test, metrics,
                            card.params, reduced)


def _slope_mask(data: FitData, train: np.ndarray) -> np.ndarray:
    """Held-out points plus, per run, the last training point before them.

    The segment from the last fitted checkpoint into the held-out part is an observed slope
    too, and often the only one.
    """
    mask = ~train
    tokens = data.axes[get_law(data.law).token_axis]
    for run in np.unique(data.run_ids[~train]):
        fitted = np.flatnonzero((data.run_ids == run) & train)
        if len(fitted):
            mask[fitted[np.argmax(tokens[fitted])]] = True
    return mask


def validate(data: FitData, by: str = "all", config: FitConfig = FitConfig(),
             fraction: float = TOKEN_FRACTION) -> list[ValidationResult]:
    """Every requested held-out extrapolation (``by`` one of tokens, size, ratio, all)."""
    law = get_law(data.law)
    names = [s for s in SPLITS if split_axis(law, s) in data.axes] if by == "all" else [by]
    return [validate_one(data, name, config, fraction) for name in names]


def render_table(results: list[ValidationResult]) -> str:
    """Plain-text table of validation results."""
    head = (f"{'by':<7} {'train':>6} {'test':>5} {'rmse':>9} {'mape%':>7} {'r2':>8} "
            f"{'rmse L-L0':>10} {'mape% L-L0':>10} {'slope_diff':>11}  held out")
    lines = [head, "-" * len(head)]
    nan = float("nan")
    for r in results:
        if not r.metrics:
            lines.append(f"{r.by:<7} {r.n_train:>6} {r.n_test:>5}  skipped: {r.message}  ({r.split})")
            continue
        m = r.metrics
        lines.append(f"{r.by:<7} {r.n_train:>6} {r.n_test:>5} {m['rmse']:>9.4g} {m['mape']:>7.3g} "
                     f"{m['r2']:>8.4g} {m.get('rmse_gap', nan):>10.4g} {m.get('mape_gap', nan):>10.3g} "
                     f"{m.get('slope_diff', nan):>11.4g}  {r.split}")
        if r.reduced:
            lines.append(f"        reduced law: {', '.join(r.reduced)} pinned in the train part")
    return "\n".join(lines)
