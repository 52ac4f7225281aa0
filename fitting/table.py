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
              statuses: tuple[str, ...] = DEFAULT_STATUSES) -> FitData:
    """Read a run-store directory or a .csv/.parquet table for ``law``.

    From a store: runs whose ``init`` matches the law (P2: pruned, Chinchilla: random), with a
    status in ``statuses``, rows with ``tokens > 0``, one ``method`` (required when the store
    holds several: their laws differ). A table needs the law's axis names as columns; an
    optional ``run_id`` column groups points into runs (else each row is its own run).
    """
    law = law if isinstance(law, Law) else get_law(law)
    path = Path(path)
    if not path.exists():
        raise BadInput(f"input {str(path)!r} does not exist; expected a run-store directory or a .csv/.parquet table")
    if path.is_dir():
        frame, notes = _from_store(path, law, method, statuses)
    else:
        frame, notes = _read_table(path), []
        if method is not None and "method" in frame.columns:
            frame = _only_method(frame, method)
    data = _checked(law, frame, str(path), notes)
    family = _single(frame, "family")
    return replace(data, family=family, method=method or _single(frame, "method"))


def _read_table(path: Path) -> "pd.DataFrame":
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise BadInput(f"input {str(path)!r} has suffix {suffix!r}; allowed: a run-store directory, .csv, .parquet")
    try:
        return pd.read_parquet(path) if suffix != ".csv" else pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise BadInput(f"cannot read table {str(path)!r}: {exc}") from exc


def _from_store(path: Path, law: Law, method: str | None,
                statuses: tuple[str, ...]) -> tuple["pd.DataFrame", list[str]]:
    from data.runs import load

    table = load(path)
    if table.empty:
        raise BadInput(f"run store {str(path)!r} holds no curve points")
    notes = []
    kept = table[table["status"].isin(statuses)]
    skipped = table.loc[~table["status"].isin(statuses), "run_id"].nunique()
    if skipped:
        notes.append(f"skipped {skipped} runs whose status is not in {list(statuses)}")
    kept = kept[kept["init"] == law.store_init]
    if kept.empty:
        raise BadInput(f"run store {str(path)!r} has no {law.store_init}-init runs with status in "
                       f"{list(statuses)}; law {law.name!r} is fitted to {law.store_init}-init runs")
    kept = _only_method(kept, method)
    n_zero = int((kept["tokens"] <= 0).sum())
    kept = kept[kept["tokens"] > 0]
    if n_zero:
        notes.append(f"left out {n_zero} points at tokens == 0 (right after pruning: D^-beta is infinite)")
    frame = kept.rename(columns={col: axis for axis, col in law.store.items()})
    return frame, notes


def _only_method(frame: "pd.DataFrame", method: str | None) -> "pd.DataFrame":
    methods = sorted(map(str, frame["method"].dropna().unique()))
    if method is None:
        if len(methods) > 1:
            raise BadInput(f"the input mixes pruning methods {methods}; choose one with --method "
                           "(each method has its own law)")
        return frame
    if method not in methods:
        raise BadInput(f"method {method!r} not in the input; allowed: {', '.join(methods) or '(none)'}")
    return frame[frame["method"] == method]


def _single(frame: "pd.DataFrame", column: str) -> str | None:
    if column not in frame.columns:
        return None
    values = sorted(map(str, frame[column].dropna().unique()))
    return ",".join(values) if values else None


def _checked(law: Law, frame: "pd.DataFrame", source: str, notes: list[str]) -> FitData:
    """Column presence, NaN/inf losses dropped and counted, positivity of every axis."""
    missing = [c for c in law.axes + (law.target,) if c not in frame.columns]
    if missing:
        raise BadInput(f"input {source!r} lacks column(s) {missing}; law {law.name!r} needs "
                       f"{list(law.axes) + [law.target]}")
    y = frame[law.target].to_numpy(dtype=float)
    finite = np.isfinite(y)
    if not finite.all():
        notes = notes + [f"dropped {int((~finite).sum())} rows with NaN/inf {law.target}"]
    if not finite.any():
        raise BadInput(f"no finite {law.target!r} values in {source!r} ({len(y)} rows, all NaN/inf)")
    frame = frame[finite]
    axes = {a: frame[a].to_numpy(dtype=float) for a in law.axes}
    for axis, values in list(axes.items()) + [(law.target, y[finite])]:
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise BadInput(f"column {axis!r} has {int(bad.sum())} non-positive or non-finite values "
                           f"(e.g. {values[bad][0]!r}); {law.name!r} needs positive finite {axis}")
    _check_law_domain(law, axes, y[finite], source)
    run_ids = (frame["run_id"].astype(str).to_numpy() if "run_id" in frame.columns
               else np.array([f"row{i}" for i in range(len(frame))]))
    return FitData(law.name, axes, y[finite], run_ids, source, notes=tuple(notes))


def _check_law_domain(law: Law, axes: dict[str, Array], y: Array, source: str) -> None:
    """Law-specific domain: P2 models ``L - L0 > 0`` and ``0 < rho < 1``."""
    if "ratio" in axes and np.any(axes["ratio"] >= 1):
        raise BadInput(f"column 'ratio' has values >= 1 (max {axes['ratio'].max()!r}); allowed: 0 < ratio < 1")
    if law.offset:
        below = y <= axes[law.offset]
        if below.any():
            raise BadInput(f"{int(below.sum())} points in {source!r} have {law.target} <= {law.offset} "
                           f"(e.g. {y[below][0]:.4g} <= {axes[law.offset][below][0]:.4g}); law "
                           f"{law.name!r} models a post-training loss above L0")
