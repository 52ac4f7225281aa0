"""Fit inputs: a run store or a plain CSV/parquet table, checked and reduced to a ``FitData``.

Every refusal is a ``BadInput`` with one line naming the value and what is allowed; rows with
a NaN/inf loss are dropped and counted in ``notes`` (refused when nothing is left).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.cli import BadInput
from fitting.laws import Law, get_law
from fitting.laws.base import POSITIVE

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

Array = np.ndarray
DEFAULT_STATUSES = ("done",)
"""Run statuses a store fit keeps: finished curves only (running ones are still moving)."""
COUNT_CONVENTION = "total parameters, embeddings included, tied weights counted once"


@dataclass(frozen=True)
class FitData:
    """Points a law is fitted to: axis arrays, the loss, and which run each point belongs to."""

    law: str
    axes: dict[str, Array]
    y: Array
    run_ids: Array
    source: str
    family: str | None = None
    method: str | None = None
    objective: str | None = None
    """Post-training objective of the runs (kd, lm; None for a table without the column)."""
    after_warmup: bool = False
    """Points inside each run's learning-rate warm-up were left out (``load_data``)."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_points(self) -> int:
        return len(self.y)

    @property
    def runs(self) -> Array:
        """Distinct run ids, sorted."""
        return np.unique(self.run_ids)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    def subset(self, mask: Array) -> "FitData":
        """The points where ``mask`` is true (validation splits)."""
        mask = np.asarray(mask, dtype=bool)
        return replace(self, axes={a: v[mask] for a, v in self.axes.items()}, y=self.y[mask],
                       run_ids=self.run_ids[mask])

    def axis_range(self) -> dict[str, dict[str, float]]:
        """min/max of every axis and the target (the card's ``range``)."""
        cols = dict(self.axes, **{get_law(self.law).target: self.y})
        return {a: {"min": float(np.min(v)), "max": float(np.max(v))} for a, v in cols.items()}

    def content_hash(self) -> str:
        """sha256 over the fitted numbers and run ids, independent of row order."""
        order = np.lexsort([self.y] + [self.axes[a] for a in sorted(self.axes)] + [self.run_ids])
        h = hashlib.sha256()
        for name in sorted(self.axes):
            h.update(name.encode() + np.ascontiguousarray(self.axes[name][order]).tobytes())
        h.update(np.ascontiguousarray(self.y[order]).tobytes())
        h.update("\0".join(map(str, self.run_ids[order])).encode())
        return "sha256:" + h.hexdigest()


def from_arrays(law: str | Law, axes: dict[str, Array], y: Array, run_ids: Array | None = None,
                source: str = "arrays") -> FitData:
    """``FitData`` from in-memory arrays (tests, benchmarks); checked like a file."""
    import pandas as pd

    law = law if isinstance(law, Law) else get_law(law)
    frame = pd.DataFrame({**{a: np.asarray(v, float) for a, v in axes.items()},
                          law.target: np.asarray(y, float)})
    if run_ids is not None:
        frame["run_id"] = np.asarray(run_ids).astype(str)
    return _checked(law, frame, source, notes=[])


def load_data(path: str | Path, law: str | Law, *, method: str | None = None,
              statuses: tuple[str, ...] = DEFAULT_STATUSES, family: str | None = None,
              allow_unordered: bool = False, objective: str | None = None,
              after_warmup: bool = False) -> FitData:
    """Read a run-store directory or a .csv/.parquet table for ``law``.

    From a store: runs whose ``init`` matches the law (P2: pruned, Chinchilla: random), with a
    status in ``statuses``, rows with ``tokens > 0``, one ``method`` (required when the store
    holds several: their laws differ), one post-training ``objective`` (required when the
    selected runs mix KD and LM loss: their curves differ too). A table needs the law's axis names as columns; an
    optional ``run_id`` column groups points into runs (else each row is its own run).
    ``after_warmup``: leave out each run's points inside its learning-rate warm-up (before its
    first point at the peak rate, from the ``lr`` column: :func:`fit_points`).
    """
    law = law if isinstance(law, Law) else get_law(law)
    path = Path(path)
    if not path.exists():
        raise BadInput(f"input {str(path)!r} does not exist; expected a run-store directory or a .csv/.parquet table")
    if path.is_dir():
        frame, notes = _from_store(path, law, method, statuses, family, allow_unordered, objective)
    else:
        frame, notes = _read_table(path), []
        if method is not None and "method" not in frame.columns:
            raise BadInput(f"--method {method!r}: table {str(path)!r} has no 'method' column to "
                           "select from; add one or leave --method out")
        if method is not None:
            frame = _only_method(frame, method)
    if after_warmup:
        frame, n_warm = drop_warmup(frame, str(path))
        notes = [*notes, f"left out {n_warm} points inside their run's learning-rate warm-up (--after-warmup)"]
    data = _checked(law, frame, str(path), notes)
    family = _single(frame, "family")
    return replace(data, family=family, method=method or _single(frame, "method"),
                   objective=objective or _single(frame, "objective"), after_warmup=after_warmup)


def fit_points(tokens: np.ndarray, lr: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Which points the token term is fitted on, and how many were left out as warm-up.

    Points after step 0 and, where the curve records its learning rate, not inside the warm-up
    (before the first point at the peak rate): while the rate ramps up the loss barely moves,
    then falls fast, a shape no ``a + k D^-beta`` follows. Left in, the first few percent of a
    run made the pilot's asymptote and beta absurd (benchmarks/pilot_backtest.py on the SmolLM2
    curves: D* off by 7-14 decades from a 20-30 % pilot; 0.26 with the warm-up left out).
    """
    after = tokens > 0
    if lr is None or len(lr) != len(tokens) or not np.all(np.isfinite(lr)) or not np.any(lr > 0):
        return after, 0
    warm = after & (np.arange(len(tokens)) < int(np.argmax(lr >= lr.max() * (1 - 1e-9))))
    return after & ~warm, int(warm.sum())


def drop_warmup(frame: "pd.DataFrame", where: str) -> tuple["pd.DataFrame", int]:
    """Each run's points before its first at the peak learning rate (one rule with the pilot's)
    left out, and how many; ``BadInput`` naming ``where`` if no ``lr`` column says where."""
    if "lr" not in frame.columns or frame["lr"].isna().all():
        raise BadInput(f"--after-warmup: {where!r} records no 'lr' column to find the warm-up in")
    keep = np.ones(len(frame), dtype=bool)
    groups = frame.groupby("run_id").indices if "run_id" in frame.columns else {None: np.arange(len(frame))}
    for rows in groups.values():
        rows = rows[np.argsort(frame["tokens"].to_numpy(float)[rows], kind="stable")]
        tokens = frame["tokens"].to_numpy(float)[rows]
        inside = (tokens > 0) & ~fit_points(tokens, frame["lr"].to_numpy(float)[rows])[0]
        keep[rows[inside]] = False
    return frame[keep], int((~keep).sum())


def _read_table(path: Path) -> "pd.DataFrame":
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise BadInput(f"input {str(path)!r} has suffix {suffix!r}; allowed: a run-store directory, .csv, .parquet")
    try:
        return pd.read_parquet(path) if suffix != ".csv" else pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise BadInput(f"cannot read table {str(path)!r}: {exc}") from exc


def _only_family(table: "pd.DataFrame", family: str | None, path: Path) -> "pd.DataFrame":
    if family is None:
        return table
    present = sorted(map(str, table["family"].dropna().unique()))
    if family not in present:
        raise BadInput(f"--family {family!r}: run store {str(path)!r} holds families {present}")
    return table[table["family"] == family]


def _drop_zero_update_points(table: "pd.DataFrame") -> tuple["pd.DataFrame", int]:
    """Old stores logged an eval after a first step taken at lr 0: its loss repeats the step-0
    loss exactly and would add a fake flat point to the fit (the engine no longer writes one)."""
    start = table[table["tokens"] <= 0].groupby("run_id")["eval_loss"].first()
    ref = table["run_id"].map(start)
    fake = (table["tokens"] > 0) & ((table["eval_loss"] - ref).abs() < 1e-9)
    return table[~fake], int(fake.sum())


def _from_store(path: Path, law: Law, method: str | None, statuses: tuple[str, ...],
                family: str | None = None, allow_unordered: bool = False,
                objective: str | None = None) -> tuple["pd.DataFrame", list[str]]:
    from data.runs import load, size_order_violations

    table = load(path)
    if table.empty:
        raise BadInput(f"run store {str(path)!r} holds no curve points")
    table = _only_family(table, family, path)
    notes = []
    table, n_fake = _drop_zero_update_points(table)
    if n_fake:
        notes.append(f"left out {n_fake} points that repeat the step-0 loss (an update at lr 0)")
    if "params_before" in law.store.values():
        problems = size_order_violations(table[table["status"].isin(statuses)])
        if problems and not allow_unordered:
            raise BadInput(f"parents not size-ordered after pretraining in {str(path)!r}: {problems[0]}; "
                           "a size law fitted to them is noise (pass --allow-unordered to fit anyway)")
        notes += [f"warning: not size-ordered: {p}" for p in problems]
    kept = table[table["status"].isin(statuses)]
    skipped = table.loc[~table["status"].isin(statuses), "run_id"].nunique()
    if skipped:
        notes.append(f"skipped {skipped} runs whose status is not in {list(statuses)}")
    kept = kept[kept["init"] == law.store_init]
    if kept.empty:
        raise BadInput(f"run store {str(path)!r} has no {law.store_init}-init runs with status in "
                       f"{list(statuses)}; law {law.name!r} is fitted to {law.store_init}-init runs")
    kept = _only_method(kept, method)
    kept = _only_objective(kept, objective)
    n_zero = int((kept["tokens"] <= 0).sum())
    kept = kept[kept["tokens"] > 0]
    if n_zero:
        notes.append(f"left out {n_zero} points at tokens == 0 (right after pruning: D^-beta is infinite)")
    if "loss_before" in kept.columns and law.offset is not None:
        # KD from an under-trained parent can reach the parent's own loss: such a point says
        # "recovered" but has no excess for the law's terms; dropped and counted, not refused.
        at_l0 = kept["eval_loss"] <= kept["loss_before"]
        if at_l0.any():
            notes.append(f"left out {int(at_l0.sum())} points at or below their parent's loss L0 (fully recovered)")
            kept = kept[~at_l0]
    frame = kept.rename(columns={col: axis for axis, col in law.store.items()})
    return frame, notes


def _only_objective(frame: "pd.DataFrame", objective: str | None) -> "pd.DataFrame":
    return _only(frame, "objective", objective, "post-training objectives",
                 "a KD curve and an LM-loss curve follow different laws")


def _only_method(frame: "pd.DataFrame", method: str | None) -> "pd.DataFrame":
    return _only(frame, "method", method, "pruning methods", "each method has its own law")


def _only(frame: "pd.DataFrame", column: str, value: str | None, what: str, why: str) -> "pd.DataFrame":
    """The rows whose ``column`` is ``value``; with no value, the input must hold one (a law is
    fitted to one kind of curve)."""
    present = sorted(map(str, frame[column].dropna().unique())) if column in frame.columns else []
    if value is None:
        if len(present) > 1:
            raise BadInput(f"the input mixes {what} {present}; choose one with --{column} ({why})")
        return frame
    if value not in present:
        raise BadInput(f"{column} {value!r} not in the input; allowed: {', '.join(present) or '(none)'}")
    return frame[frame[column] == value]


def _single(frame: "pd.DataFrame", column: str) -> str | None:
    if column not in frame.columns:
        return None
    values = sorted(map(str, frame[column].dropna().unique()))
    return ",".join(values) if values else None


def _numeric(frame: "pd.DataFrame", column: str, source: str) -> Array:
    """Column as floats; a cell that is not a number (a typo in a CSV) is bad input, named."""
    try:
        return frame[column].to_numpy(dtype=float)
    except (TypeError, ValueError):
        import pandas as pd

        parsed = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column][parsed.isna() & frame[column].notna()]
        raise BadInput(f"column {column!r} of {source!r} has a non-numeric value {bad.iloc[0]!r} "
                       f"(row {int(bad.index[0]) + 1}); expected numbers") from None


def _checked(law: Law, frame: "pd.DataFrame", source: str, notes: list[str]) -> FitData:
    """Column presence, NaN/inf losses dropped and counted, positivity of every axis."""
    missing = [c for c in law.axes + (law.target,) if c not in frame.columns]
    if missing:
        raise BadInput(f"input {source!r} lacks column(s) {missing}; law {law.name!r} needs "
                       f"{list(law.axes) + [law.target]}")
    y = _numeric(frame, law.target, source)
    finite = np.isfinite(y)
    if not finite.all():
        notes = notes + [f"dropped {int((~finite).sum())} rows with NaN/inf {law.target}"]
    if not finite.any():
        raise BadInput(f"no finite {law.target!r} values in {source!r} ({len(y)} rows, all NaN/inf)")
    frame = frame[finite]
    axes = {a: _numeric(frame, a, source) for a in law.axes}
    for axis, values in list(axes.items()) + [(law.target, y[finite])]:
        allowed = law.axis_domain(axis)
        bad = ~allowed.contains(values)
        if bad.any() and allowed == POSITIVE:
            raise BadInput(f"column {axis!r} has {int(bad.sum())} non-positive or non-finite values "
                           f"(e.g. {values[bad][0]!r}); {law.name!r} needs positive finite {axis}")
        if bad.any():
            raise BadInput(f"column {axis!r} has {int(bad.sum())} values outside {allowed} "
                           f"(e.g. {values[bad][0]!r}); allowed for {law.name!r}: {axis} in {allowed}")
    _check_offset(law, axes, y[finite], source)
    run_ids = (frame["run_id"].astype(str).to_numpy() if "run_id" in frame.columns
               else np.array([f"row{i}" for i in range(len(frame))]))
    data = FitData(law.name, axes, y[finite], run_ids, source, notes=tuple(notes))
    return collapse_duplicate_runs(data)


def _run_fingerprint(data: FitData, idx: Array) -> bytes:
    """A run's points, sorted, rounded to 12 significant digits (copies match exactly)."""
    cols = [data.axes[a][idx] for a in sorted(data.axes)] + [data.y[idx]]
    order = np.lexsort(cols[::-1])
    return np.round(np.stack([np.asarray(c)[order] for c in cols]), 12).tobytes()


def collapse_duplicate_runs(data: FitData) -> FitData:
    """Runs that repeat another run point for point are dropped, with a note naming both.

    A copied run (the same curve stored twice under two ids) weighs its curve double and
    moves the fit (one duplicate moved D_C by 23%), and the run bootstrap would count
    it as independent evidence. Single-point "runs" (tables without run ids) are left alone.
    """
    seen: dict[bytes, str] = {}
    dropped: dict[str, str] = {}
    _, first = np.unique(data.run_ids, return_index=True)
    for run in data.run_ids[np.sort(first)]:  # input order: the first copy is the one kept
        idx = np.flatnonzero(data.run_ids == run)
        if len(idx) < 2:
            continue
        key = _run_fingerprint(data, idx)
        if key in seen:
            dropped[run] = seen[key]
        else:
            seen[key] = run
    if not dropped:
        return data
    keep = ~np.isin(data.run_ids, list(dropped))
    named = ", ".join(f"{run!r} (copy of {orig!r})" for run, orig in dropped.items())
    note = f"duplicate runs collapsed (identical curves, kept once): {named}"
    return replace(data.subset(keep), notes=data.notes + (note,))


def _check_offset(law: Law, axes: dict[str, Array], y: Array, source: str) -> None:
    """A law with an offset (P2: ``L0``) models the loss above it: ``L - L0 > 0``."""
    if law.offset:
        below = y <= axes[law.offset]
        if below.any():
            raise BadInput(f"{int(below.sum())} points in {source!r} have {law.target} <= {law.offset} "
                           f"(e.g. {y[below][0]:.4g} <= {axes[law.offset][below][0]:.4g}); law "
                           f"{law.name!r} models a post-training loss above L0")
