"""Frame transforms the report's pages plot: pure pandas/numpy, no matplotlib.

Each function takes the run-store frame of :func:`data.runs.load` (one row per evaluation
point, run metadata repeated on every row) and returns a small tidy frame that one plot
function draws. Keeping them apart from the plots lets notebooks reuse the numbers and lets the
tests check the numbers without reading pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from data.runs import DOMAIN_PREFIX

RUN_KEYS: tuple[str, ...] = ("run_id", "family", "parent", "method", "ratio", "params_before",
                             "params_after", "loss_before", "init", "objective", "seed")


def missing_columns(frame: pd.DataFrame, needed: Sequence[str]) -> list[str]:
    """Columns a page needs that are absent or entirely empty (NaN) in ``frame``."""
    return [c for c in needed if c not in frame.columns or frame[c].isna().all()]


def domain_columns(frame: pd.DataFrame) -> list[str]:
    """The ``eval_loss.<domain>`` columns holding at least one value, sorted."""
    return sorted(c for c in frame.columns if c.startswith(DOMAIN_PREFIX) and frame[c].notna().any())


def ratio_key(frame: pd.DataFrame) -> pd.Series:
    """The ratio a run was asked for (achieved ratio where no target is recorded).

    Grouping by the target keeps runs of one grid cell together even when methods reach
    slightly different achieved ratios (2:4 coverage, rounding of layer counts).
    """
    target = frame["ratio_target"] if "ratio_target" in frame.columns else pd.Series(np.nan, frame.index)
    return target.astype(float).fillna(frame["ratio"].astype(float)).round(4)


def post_training_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``tokens > 0`` and a finite loss (the part of a curve a log axis can show)."""
    keep = (frame["tokens"] > 0) & np.isfinite(frame["eval_loss"].astype(float))
    return frame.loc[keep]


def pruning_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the loss right after pruning (the step-0 evaluation; its ``tokens`` is 0,
    or the pruning tokens of a method that trains while pruning, e.g. ``targeted``)."""
    first = frame["step"] == 0 if "step" in frame.columns else frame["tokens"] == 0
    zero = frame.loc[first & np.isfinite(frame["eval_loss"].astype(float))]
    return zero.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def final_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its last evaluation (largest ``tokens``) with a finite loss."""
    ok = frame.loc[np.isfinite(frame["eval_loss"].astype(float))]
    idx = ok.groupby("run_id")["tokens"].idxmax()
    return ok.loc[idx.to_numpy()].reset_index(drop=True)


def run_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Runs per status plus the total runs and evaluation points (title page provenance)."""
    per_run = frame.drop_duplicates("run_id")
    counts = {str(k): int(v) for k, v in per_run["status"].fillna("unknown").value_counts().items()}
    counts["runs"] = int(len(per_run))
    counts["points"] = int(len(frame))
    return counts


def _log_interp(tokens: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Loss of a curve (x, y) at ``tokens``, interpolated linearly in log-tokens, log-loss."""
    order = np.argsort(x)
    return np.exp(np.interp(np.log(tokens), np.log(x[order]), np.log(y[order])))


def matched_comparison(frame: pd.DataFrame, column: str, reference: str) -> pd.DataFrame:
    """Loss of every other ``column`` value minus the ``reference`` one, at matched tokens.

    Runs are paired when they agree on everything else that defines a grid cell (parent,
    method, target ratio, seed and the other of init/objective). The comparison uses the
    reference run's evaluation tokens inside the range both curves cover, interpolating the
    other curve in log-log space, so arms evaluated on different schedules still compare at
    equal tokens. Columns: parent, method, ratio, seed, arm, reference, tokens, loss_ref,
    loss_arm, gap (arm minus reference; positive means the reference is better).
    """
    other = "objective" if column == "init" else "init"
    pts = post_training_points(frame).assign(_ratio=lambda f: ratio_key(f))
    keys = ["parent", "method", "_ratio", "seed", other]
    out = []
    for key, cell in pts.groupby(keys, dropna=False, sort=True):
        ref = cell.loc[cell[column] == reference]
        if ref.empty:
            continue
        for arm, arm_rows in cell.loc[cell[column] != reference].groupby(column):
            out.append(_pair(dict(zip(keys, key)), reference, str(arm), ref, arm_rows))
    cols = ["parent", "method", "ratio", "seed", other, "arm", "reference", "tokens",
            "loss_ref", "loss_arm", "gap"]
    frames = [f for f in out if len(f)]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def _pair(key: dict, reference: str, arm: str, ref: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    x_ref, y_ref = ref["tokens"].to_numpy(float), ref["eval_loss"].to_numpy(float)
    x_arm, y_arm = other["tokens"].to_numpy(float), other["eval_loss"].to_numpy(float)
    lo, hi = max(x_ref.min(), x_arm.min()), min(x_ref.max(), x_arm.max())
    at = np.unique(x_ref[(x_ref >= lo) & (x_ref <= hi)])
    if len(at) == 0:
        return pd.DataFrame()
    loss_ref = _log_interp(at, x_ref, y_ref)
    loss_arm = _log_interp(at, x_arm, y_arm)
    row = {k.lstrip("_"): v for k, v in key.items()}
    return pd.DataFrame({**row, "arm": arm, "reference": reference, "tokens": at,
                         "loss_ref": loss_ref, "loss_arm": loss_arm, "gap": loss_arm - loss_ref})


def comparison_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (method, ratio, setting, arm): the gap at the largest matched budget, averaged over
    parents and seeds. ``setting`` is the other of init/objective, kept apart so that, e.g.,
    kd - lm from pruned starts is never averaged with kd - lm from random starts."""
    if table.empty:
        return pd.DataFrame(columns=["method", "ratio", "setting", "arm", "reference", "tokens", "gap", "cells"])
    other = "objective" if "objective" in table.columns else "init"
    cell = [c for c in table.columns if c not in ("tokens", "loss_ref", "loss_arm", "gap", "reference")]
    last = table.loc[table.groupby(cell, dropna=False)["tokens"].idxmax()]
    agg = last.rename(columns={other: "setting"}).groupby(
        ["method", "ratio", "setting", "arm", "reference"], dropna=False).agg(
        tokens=("tokens", "median"), gap=("gap", "mean"), cells=("gap", "size"))
    return agg.reset_index()


def recon_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Eval loss after pruning and after reconstruction (or PEFT) per pruning cell.

    ``rows`` are the JSON lines of ``benchmarks/recon_quality.py``: a cell ``KEY`` (pruned
    only), ``KEY:GRANULARITY:SEQS`` (reconstructed), ``KEY:lora:SEQS`` (PEFT), ``peer:KEY``
    (llm-compressor's one-shot result), ``dense``. Returns (columns, cells): one row per
    pruning key, one column per reconstruction setting present (granularity @ calibration),
    then the PEFT columns (adapter kept / merged and re-masked), then llm-compressor's one-shot loss.
    """
    after: dict[str, dict[str, float]] = {}
    pruned: dict[str, float] = {}
    labels: dict[str, str] = {}
    extra: dict[str, tuple[str, float]] = {}
    settings: list[str] = []
    for row in rows:
        cell = str(row.get("cell", ""))
        key = cell.split(":", 1)[0]
        if cell == "dense" or "loss_after_prune" not in row:
            continue
        if key == "peer":
            extra[cell.split(":", 1)[1]] = ("llm-compressor one-shot", row["loss_after_prune"])
            continue
        pruned.setdefault(key, row["loss_after_prune"])
        labels.setdefault(key, _prune_label(row, key))
        if "loss_after_recon" in row:
            setting = f"{row['granularity']} @ {row['recon_calib']}"
            after.setdefault(key, {})[setting] = row["loss_after_recon"]
        elif "loss_after_peft" in row:
            setting = f"LoRA @ {row['peft_tokens']:,} tok"
            after.setdefault(key, {})[setting] = (row["loss_after_peft"], row["loss_after_peft_masked"])
        else:
            continue
        if setting not in settings:
            settings.append(setting)
    settings.sort(key=lambda s: (s.startswith("LoRA"), s))
    columns = ["pruning", "after prune", *settings, "llm-compressor"]
    cells = []
    for key, loss in pruned.items():
        got = after.get(key, {})
        cells.append([labels[key], f"{loss:.3f}", *[_loss_cell(got.get(s)) for s in settings],
                      _loss_cell(extra[key][1]) if key in extra else "—"])
    return columns, cells


def _prune_label(row: dict, key: str) -> str:
    """``method sparsity [key]`` (sparsity of each linear) or ``method ratio R [key]``."""
    if row.get("sparsity") is not None:
        return f"{row.get('method', key)} {float(row['sparsity']):.0%} [{key}]"
    if row.get("ratio") is not None:
        return f"{row.get('method', key)} ratio {float(row['ratio']):.2f} [{key}]"
    return f"{row.get('method', key)} [{key}]"


def _loss_cell(value: float | tuple[float, float] | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, tuple):
        return " / ".join(f"{v:.3f}" for v in value)
    return f"{value:.3f}"
