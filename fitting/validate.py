"""Held-out extrapolation, the way the P2 paper validates its law.

- ``tokens``: fit the first 80% of every curve (by tokens), predict the last 20%.
- ``size``: fit the smaller parents, predict the largest ``params_before``.
- ``ratio``: fit the lower pruning ratios, predict the highest.

Metrics on the held-out points: RMSE, MAPE, R^2 and the average slope difference.
"""

from __future__ import annotations

import numpy as np

from data.cli import BadInput
from fitting.fit import FitConfig, fit
from fitting.identify import distinct
from fitting.metrics import score, slope_diff
from fitting.result import ValidationResult
from fitting.table import FitData

SPLITS = ("tokens", "size", "ratio")
TRAIN_FRACTION = 0.8


def split_tokens(data: FitData, fraction: float = TRAIN_FRACTION) -> np.ndarray:
    """Train mask: the first ``fraction`` of each run's points by tokens (at least 1 held out)."""
    train = np.ones(data.n_points, dtype=bool)
    tokens = data.axes["tokens"]
    for run in data.runs:
        idx = np.flatnonzero(data.run_ids == run)
        if len(idx) < 3:
            continue
        idx = idx[np.argsort(tokens[idx], kind="stable")]
        keep = min(len(idx) - 1, int(np.ceil(fraction * len(idx))))
        train[idx[keep:]] = False
    return train


def split_largest(data: FitData, axis: str) -> np.ndarray:
    """Train mask: every point whose ``axis`` is below its maximum (the largest is held out)."""
    values = data.axes[axis]
    return values < values.max() * (1 - 1e-6)


def _masks(data: FitData, by: str) -> tuple[np.ndarray, str]:
    if by == "tokens":
        return split_tokens(data), f"first {TRAIN_FRACTION:.0%} of every curve -> last {1 - TRAIN_FRACTION:.0%}"
    axis = {"size": "params_before", "ratio": "ratio"}[by]
    if axis not in data.axes:
        raise BadInput(f"validation by {by!r} needs axis {axis!r}; law {data.law!r} has {list(data.axes)}")
    values = data.axes[axis]
    return split_largest(data, axis), f"{axis} < {values.max():.4g} -> {axis} = {values.max():.4g}"


def validate_one(data: FitData, by: str, config: FitConfig = FitConfig()) -> ValidationResult:
    """Fit on the train part of split ``by``, score predictions on the held-out part."""
    if by not in SPLITS:
        raise BadInput(f"validation split {by!r}; allowed: {', '.join(SPLITS)}, all")
    train, split = _masks(data, by)
    n_train, n_test = int(train.sum()), int((~train).sum())
    axis = {"size": "params_before", "ratio": "ratio"}.get(by)
    if n_test == 0 or n_train == 0 or (axis is not None and distinct(data.axes[axis]) < 2):
        why = f"one distinct {axis} value" if axis else "curves too short to split"
        return ValidationResult(by, False, f"nothing to hold out: {why}", split, n_train, n_test, {}, {})
    try:
        result = fit(data.subset(train), FitConfig(delta=config.delta, weighting=config.weighting,
                                                   top_k=config.top_k))
    except BadInput as exc:
        return ValidationResult(by, False, f"train part cannot be fitted: {exc}", split,
                                n_train, n_test, {}, {})
    test = data.subset(~train)
    metrics = score(result.predict(**test.axes), test.y)
    if "tokens" in data.axes:
        slopes = data.subset(_slope_mask(data, train))
        metrics["slope_diff"] = slope_diff(result.predict(**slopes.axes), slopes.y,
                                           slopes.axes["tokens"], slopes.run_ids)
    return ValidationResult(by, result.success, result.message, split, n_train, n_test,
                            metrics, result.params)


def _slope_mask(data: FitData, train: np.ndarray) -> np.ndarray:
    """Held-out points plus, per run, the last training point before them.

    A curve cut at 80% holds out only a few checkpoints; the segment from the last fitted
    checkpoint into the held-out part is an observed slope too, and often the only one.
    """
    mask = ~train
    tokens = data.axes["tokens"]
    for run in np.unique(data.run_ids[~train]):
        fitted = np.flatnonzero((data.run_ids == run) & train)
        if len(fitted):
            mask[fitted[np.argmax(tokens[fitted])]] = True
    return mask


def validate(data: FitData, by: str = "all", config: FitConfig = FitConfig()) -> list[ValidationResult]:
    """Every requested held-out extrapolation (``by`` one of tokens, size, ratio, all)."""
    names = SPLITS if by == "all" else (by,)
    return [validate_one(data, name, config) for name in names]


def render_table(results: list[ValidationResult]) -> str:
    """Plain-text table of validation results."""
    head = f"{'by':<7} {'train':>6} {'test':>5} {'rmse':>9} {'mape%':>7} {'r2':>8} {'slope_diff':>11}  split"
    lines = [head, "-" * len(head)]
    for r in results:
        if not r.metrics:
            lines.append(f"{r.by:<7} {r.n_train:>6} {r.n_test:>5}  skipped: {r.message}")
            continue
        m = r.metrics
        lines.append(f"{r.by:<7} {r.n_train:>6} {r.n_test:>5} {m['rmse']:>9.4g} {m['mape']:>7.3g} "
                     f"{m['r2']:>8.4g} {m.get('slope_diff', float('nan')):>11.4g}  {r.split}")
    return "\n".join(lines)
