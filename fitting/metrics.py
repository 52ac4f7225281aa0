"""Goodness of fit: RMSE, MAPE, R^2, the P2 paper's average slope difference, diagnostics.

Slope difference (Chen et al. 2024, P2 law, "ASD"): for every curve, the slope of loss
against ``log10(tokens)`` between consecutive checkpoints, observed vs predicted; the mean
absolute difference over all segments of all curves. It rewards a law that gets the *rate*
of recovery right, which is what a token budget depends on.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def rmse(pred: Array, obs: Array) -> float:
    """Root mean squared error, in nats."""
    return float(np.sqrt(np.mean((pred - obs) ** 2)))


def mape(pred: Array, obs: Array) -> float:
    """Mean absolute percentage error, in percent."""
    return float(100.0 * np.mean(np.abs(pred - obs) / np.abs(obs)))


def r2(pred: Array, obs: Array) -> float:
    """Coefficient of determination; nan when the observations do not vary."""
    total = float(np.sum((obs - obs.mean()) ** 2))
    return float(1.0 - np.sum((obs - pred) ** 2) / total) if total > 0 else float("nan")


def slope_diff(pred: Array, obs: Array, tokens: Array, run_ids: Array) -> float:
    """Mean |dL/dlog10 D predicted - observed| over consecutive checkpoints of each run."""
    diffs = []
    for run in np.unique(run_ids):
        idx = np.flatnonzero(run_ids == run)
        idx = idx[np.argsort(tokens[idx], kind="stable")]
        dlog = np.diff(np.log10(tokens[idx]))
        ok = dlog > 0
        if not ok.any():
            continue
        s_obs = np.diff(obs[idx])[ok] / dlog[ok]
        s_pred = np.diff(pred[idx])[ok] / dlog[ok]
        diffs.append(np.abs(s_pred - s_obs))
    return float(np.mean(np.concatenate(diffs))) if diffs else float("nan")


def score(pred: Array, obs: Array, tokens: Array | None = None,
          run_ids: Array | None = None) -> dict[str, float]:
    """All metrics; ``slope_diff`` only when tokens and runs are given (curves)."""
    out = {"rmse": rmse(pred, obs), "mape": mape(pred, obs), "r2": r2(pred, obs)}
    if tokens is not None and run_ids is not None:
        out["slope_diff"] = slope_diff(pred, obs, tokens, run_ids)
    return out


def diagnostics(pred: Array, obs: Array, tokens: Array | None, run_ids: Array) -> dict[str, float]:
    """Residual diagnostics on log residuals (statsmodels).

    ``durbin_watson`` over residuals ordered by tokens within each run: far below 2 means the
    checkpoints of one run are correlated, which is why intervals resample whole runs.
    ``jarque_bera_p``: normality of log residuals (small p: heavy tails, Huber is warranted).
    """
    from statsmodels.stats.stattools import durbin_watson, jarque_bera

    resid = np.log(pred) - np.log(obs)
    order = np.lexsort([tokens, run_ids]) if tokens is not None else np.arange(len(resid))
    out = {"jarque_bera_p": float(jarque_bera(resid)[1]) if len(resid) > 7 else float("nan")}
    if tokens is not None and len(np.unique(run_ids)) < len(run_ids):
        out["durbin_watson"] = float(durbin_watson(resid[order]))
    return out
