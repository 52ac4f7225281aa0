"""Grid tables: what ``engine grid plan`` and ``engine grid status`` print (torch-free)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from data.runs import CURVE_FILE, RunStore
from data.units import format_count
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


def shown_status(record: dict[str, Any], queued: str, lock: str) -> str:
    """The status a user should see: run.json's, corrected by what is known to be true now.

    ``running`` with no live launch holding the store and no SLURM task for it means its
    process died (``kill -9``, a crash, a reboot): ``killed`` (the next launch resumes it).
    A run whose files are torn shows ``corrupt`` (the next launch re-runs it).
    """
    status = record.get("status", "pending")
    if record.get("corrupt"):
        return "corrupt"
    if status == "running" and not queued and lock != "live":
        return "killed"
    return status


def rows(grid: Grid, runs_dir: str | os.PathLike[str], queue: dict[str, str] | None = None,
         detail: bool = False, lock: str = "live") -> list[dict[str, Any]]:
    """One row per job, parents first: the plan columns, plus progress when ``detail``.

    ``lock`` is the store's lock state (``engine.grid.lock.owner_state``); it turns ``running``
    rows of a dead launch into ``killed``.
    """
    store = RunStore(runs_dir)
    out = []
    for job in grid.jobs:
        cfg = job.config
        record = store.check(job.run_id) if store.exists(job.run_id) else {}
        row = {"id": job.run_id, "parent": parent_label(cfg.parent),
               "method": cfg.method, "ratio": cfg.ratio, "objective": cfg.objective, "init": cfg.init,
               "tokens": cfg.tokens, "status": shown_status(record, (queue or {}).get(job.run_id, ""), lock)}
        if detail:
            tokens, loss = (None, None) if row["status"] == "corrupt" else _last_point(store.run_dir(job.run_id))
            row.update(done_tokens=tokens, eval_loss=loss, queue=(queue or {}).get(job.run_id, ""),
                       reason=record.get("reason") or "", stop=stop_cell(record))
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
