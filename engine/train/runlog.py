"""The one writer of a run: its ``run.json`` and ``curve.parquet`` (``data.runs.RunStore``).

A job builds one :class:`RunLog` and every write of its run goes through it: the record at
the start, each eval row, the online stop's history, and the end (done, or failed once). Only
rank 0 writes; every rank may read the run's earlier attempt (a resume keeps its choices).
The log keeps the curve and the record it wrote in memory, so the monitor and the online stop
read them from here, not back from the files just written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.runs import CORRUPT, RunStore

if TYPE_CHECKING:
    import pandas as pd


class RunLog:
    """Run ``run_id`` of the store at ``runs_dir``, written by rank 0 (``is_main``) alone."""

    def __init__(self, runs_dir: str | Path, run_id: str, is_main: bool) -> None:
        self.store = RunStore(runs_dir)
        self.run_id = run_id
        self.is_main = is_main
        self.rows: list[dict[str, Any]] = []
        """The curve so far (rank 0): what curve.parquet holds."""
        self.record: dict[str, Any] = {}
        """run.json as last written (rank 0)."""
        self._ended = False

    # -- reading what an earlier attempt left -------------------------------------------------

    def status(self) -> str:
        """The run's status in the store; a torn run (``CORRUPT``) has its pieces moved aside."""
        status = self.store.status(self.run_id)
        if status == CORRUPT:
            self.store.quarantine(self.run_id)
        return status

    def exists(self) -> bool:
        return self.store.exists(self.run_id)

    def earlier(self) -> dict[str, Any]:
        """run.json of the run's earlier attempt (a resume keeps the choices it recorded)."""
        return self.store.read(self.run_id)

    def other(self, run_id: str) -> dict[str, Any] | None:
        """run.json of another run of the store (a ``run:<id>`` parent), None when absent."""
        return self.store.read(run_id) if self.store.exists(run_id) else None

    # -- writing ------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """One line of the run's progress on stdout, from rank 0 (``[engine.train] <run_id>: ...``)."""
        if self.is_main:
            print(f"[engine.train] {self.run_id}: {message}", flush=True)

    def start(self, record: Mapping[str, Any]) -> None:
        """A fresh attempt: run.json is ``record``; a stale curve of an earlier attempt goes."""
        self.rows = []
        if not self.is_main:
            return
        self.store.write(self.run_id, record)
        self.store.truncate_curve(self.run_id, -1)
        self.record = dict(record)

    def resume(self, step: int) -> None:
        """Continue the earlier attempt at its checkpoint ``step``: later rows go, status running."""
        if not self.is_main:
            return
        self.store.truncate_curve(self.run_id, step)
        self.rows = self.store.read_curve(self.run_id).to_dict("records")
        self.record = self.store.update(self.run_id, status="running", reason=None)

    def append(self, row: Mapping[str, Any]) -> None:
        """One eval row, written before the checkpoint of its step (docs/design-contract.md)."""
        if not self.is_main:
            return
        self.store.append_curve(self.run_id, [row])
        self.rows = [r for r in self.rows if r["step"] != row["step"]] + [dict(row)]

    def curve(self) -> "pd.DataFrame":
        """The curve so far, as ``RunStore.read_curve`` would read it."""
        import pandas as pd

        return pd.DataFrame(self.rows).sort_values("step", kind="stable").reset_index(drop=True)

    @property
    def meta(self) -> dict[str, Any]:
        return self.record.get("meta") or {}

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json (``meta`` merged, other keys replaced)."""
        if self.is_main:
            self.record = self.store.update(self.run_id, **fields)

    def done(self) -> None:
        self.update(status="done", reason=None)
        self._ended = True

    def fail(self, reason: str, kind: str, config: Mapping[str, Any]) -> None:
        """Record the run as failed, once (a failure caught again further up is not rewritten);
        a run that failed before writing run.json gets one with its ``config``."""
        if self._ended or not self.is_main:
            return
        self._ended = True
        if self.exists():
            self.update(status="failed", reason=reason, failure=kind)
        else:
            self.store.write(self.run_id, {"status": "failed", "reason": reason, "failure": kind,
                                           "config": dict(config)})
