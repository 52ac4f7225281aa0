"""Grid tables: what ``engine grid plan`` and ``engine grid status`` print (torch-free)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data.runs import CORRUPT, CURVE_FILE, RunStore
from data.units import format_count
from engine.grid.executor import JobState
from engine.grid.spec import Grid
from engine.train.config import parent_label

PLAN_COLUMNS = ("id", "parent", "method", "ratio", "objective", "init", "tokens", "status")
STATUS_COLUMNS = PLAN_COLUMNS + ("done_tokens", "eval_loss", "queue", "reason", "stop")


def _last_point(run_dir: Path) -> tuple[int | None, float | None]:
    """(tokens, eval_loss) of a run's last curve row, without pandas (plan must stay fast)."""
    curve = run_dir / CURVE_FILE
    if not curve.is_file():
        return None, None
    import pyarrow.parquet as pq

    table = pq.read_table(curve, columns=["tokens", "eval_loss"])
    if table.num_rows == 0:
        return None, None
    return int(table["tokens"][-1].as_py()), float(table["eval_loss"][-1].as_py())


def rows(grid: Grid, runs_dir: str | os.PathLike[str], states: Sequence[JobState] | None = None,
         detail: bool = False) -> list[dict[str, Any]]:
    """One row per job, parents first: the plan columns, plus progress when ``detail``.

    ``states`` is an executor's ``status()`` (the store merged with its lock and queue); without
    it the stored status is shown (``engine grid plan``).
    """
    store = RunStore(runs_dir)
    by_id = {s.run_id: s for s in states or ()}
    out = []
    for job in grid.jobs:
        cfg = job.config
        state = by_id.get(job.run_id)
        status = state.status if state is not None else store.status(job.run_id)
        row = {"id": job.run_id, "parent": parent_label(cfg.parent),
               "method": cfg.method, "ratio": cfg.ratio, "objective": cfg.objective, "init": cfg.init,
               "tokens": cfg.tokens, "status": status}
        if detail:
            record = store.read(job.run_id) if store.exists(job.run_id) and status != CORRUPT else {}
            tokens, loss = (None, None) if status == CORRUPT else _last_point(store.run_dir(job.run_id))
            row.update(done_tokens=tokens, eval_loss=loss, queue=state.handle if state else "",
                       reason=(state.reason if state else "") or "", stop=stop_cell(record))
        out.append(row)
    return out


def stop_cell(record: dict[str, Any]) -> str:
    """The online budget's state (``engine.train.stop``): the stop, or the latest prediction."""
    stop = record.get("stop") or {}
    last = (stop.get("history") or [None])[-1]
    if stop.get("decision"):
        d = stop["decision"]
        return f"stopped at {format_count(d['tokens'])} (D* {format_count(d['d_star'])})"
    if last is not None and last.get("d_star") is not None:
        lo, hi = last.get("low"), last.get("high")
        span = f" [{format_count(lo)}, {format_count(hi)}]" if lo is not None and hi is not None else ""
        return f"D* {format_count(last['d_star'])}{span}"
    return ""


def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("tokens", "done_tokens"):
        return format_count(value)
    if column == "eval_loss":
        return f"{value:.4f}"
    if column == "ratio":
        return f"{value:g}"
    return str(value)


def render(table: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> str:
    """A fixed-width text table with a status summary line under it."""
    if not table:
        return "(no jobs)"
    columns = columns or tuple(table[0])
    cells = [[_cell(r.get(c), c) for c in columns] for r in table]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    counts: dict[str, int] = {}
    for r in table:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines.append(f"{len(table)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)
