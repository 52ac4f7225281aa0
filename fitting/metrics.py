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


OUTLIER_Z = 5.0
"""A run whose mean residual sits this many robust sds from the median run is flagged."""
Z_FLOOR = 1e-3
"""Smallest robust sd used for z (noise-free synthetic runs would make every run an outlier)."""


def _robust_z(values: Array) -> Array:
    med = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - med))
    return (values - med) / max(mad, Z_FLOOR)


def run_report(resid: Array, run_ids: Array) -> list[dict]:
    """Per-run residuals (in the fit's space) and which runs are outliers.

    A run is flagged when its mean residual is more than :data:`OUTLIER_Z` robust standard
    deviations (1.4826 MAD over runs) from the median run: a diverged run, a wrong L0, a run
    of another method mixed in. Tables whose "runs" are single points list only the flagged.
    """
    runs, inverse = np.unique(run_ids, return_inverse=True)
    counts = np.bincount(inverse)
    means = np.bincount(inverse, resid) / counts
    rms = np.sqrt(np.bincount(inverse, resid ** 2) / counts)
    z = _robust_z(means)
    rows = [{"run_id": str(r), "n_points": int(n), "mean_residual": float(m),
             "rms_residual": float(s), "z": float(zz), "outlier": bool(abs(zz) > OUTLIER_Z)}
            for r, n, m, s, zz in zip(runs, counts, means, rms, z)]
    return rows if counts.max() > 1 else [r for r in rows if r["outlier"]]


def scatter(resid: Array, run_ids: Array) -> dict[str, float]:
    """Run-to-run and within-run scatter of the residuals (outlier runs left out).

    ``sigma_point``: sd of residuals about their run's mean; ``sigma_run``: sd of run means
    beyond what point noise explains; ``sigma_new_run``: both, the scatter a new run shows
    around the mean law (prediction intervals).
    """
    rows = run_report(resid, run_ids) if len(resid) else []
    bad = {r["run_id"] for r in rows if r["outlier"]}
    keep = ~np.isin(run_ids.astype(str), list(bad))
    resid, run_ids = resid[keep], run_ids[keep]
    runs, inverse = np.unique(run_ids, return_inverse=True)
    counts = np.bincount(inverse)
    if len(runs) < 2:
        return {}
    means = np.bincount(inverse, resid) / counts
    within = resid - means[inverse]
    dof = len(resid) - len(runs)
    s_point = float(np.sqrt(np.sum(within ** 2) / dof)) if dof > 0 else 0.0
    s_run2 = float(np.var(means, ddof=1)) - s_point ** 2 * float(np.mean(1.0 / counts))
    s_run = float(np.sqrt(max(s_run2, 0.0)))
    return {"sigma_point": s_point, "sigma_run": s_run,
            "sigma_new_run": float(np.hypot(s_point, s_run)), "n_runs_used": int(len(runs))}
