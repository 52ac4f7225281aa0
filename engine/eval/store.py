"""``engine eval --run RUN_DIR``: the results beside the run's curve.

``runs/<id>/eval.json`` holds one entry per task (metrics, standard errors, documents scored,
model, tokenizer, data identity, lm-eval version, time) and ``run.json`` gets an ``eval`` key
with the metrics alone, both through the run store's atomic writers. A task already recorded
for the run is replaced only with ``--force``; other tasks' entries are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data.cli import BadInput, read_json
from data.runs import RunStore, write_json_atomic
from engine.eval.harness import EvalReport

EVAL_FILE = "eval.json"


def _store(run_dir: str | Path) -> tuple[RunStore, str]:
    path = Path(run_dir)
    store, run_id = RunStore(path.parent), path.name
    if not store.exists(run_id):
        raise BadInput(f"--run {str(run_dir)!r} is not a run directory (no run.json); e.g. runs/<run_id>")
    return store, run_id


def _recorded(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    recorded = read_json(path, "run eval file")
    tasks = recorded.get("tasks") if isinstance(recorded, dict) else None
    if not isinstance(tasks, dict):
        raise BadInput(f"{str(path)!r} is not an engine eval file (no 'tasks'); move it aside")
    return tasks


def check_run(run_dir: str | Path, tasks: tuple[str, ...], *, force: bool) -> None:
    """Refuse, before any work, a run that is not there, still training, or already holds a task.

    Raises:
        BadInput: naming the run and the task, and ``--force`` where it applies.
    """
    store, run_id = _store(run_dir)
    status = store.status(run_id)
    if status in ("running", "corrupt"):
        raise BadInput(f"--run {str(run_dir)!r} is {status}; evaluate it once it is done or failed")
    clash = sorted(set(tasks) & set(_recorded(store.run_dir(run_id) / EVAL_FILE)))
    if clash and not force:
        raise BadInput(f"--run {str(run_dir)!r} already has {clash[0]!r} results in {EVAL_FILE}; "
                       "pass --force to replace them")


def record(run_dir: str | Path, report: EvalReport, *, force: bool) -> Path:
    """Merge ``report`` into the run's eval.json and run.json; returns the eval.json path."""
    check_run(run_dir, tuple(report.tasks), force=force)
    store, run_id = _store(run_dir)
    path = store.run_dir(run_id) / EVAL_FILE
    tasks = _recorded(path)
    common = {k: v for k, v in report.to_dict().items() if k not in ("tasks", "configs")}
    for name, result in report.to_dict()["tasks"].items():
        tasks[name] = {**result, **common, "config": report.configs.get(name)}
    write_json_atomic(path, {"tasks": tasks})
    previous = store.read(run_id).get("eval") or {}
    store.update(run_id, eval={**previous, **{name: r.metrics for name, r in report.tasks.items()}})
    return path
