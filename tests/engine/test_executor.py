"""The executor interface: registry, one job ordering, typed failure kinds, status truth."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from data.cli import BadInput
from data.runs import Failure, RunStore, failure_kind, failure_of
from engine.grid.executor import (
    EXECUTORS, executor_class, generations, get_executor, job_order, job_states, options_from_args, should_run,
)


def _job(run_id: str, depends: str | None = None, tokens: int = 1, parent: str = "") -> SimpleNamespace:
    return SimpleNamespace(run_id=run_id, depends=depends, kind="parent" if depends is None else "post",
                           config=SimpleNamespace(tokens=tokens, parent=parent))


def test_every_builtin_executor_meets_the_interface():
    for name in EXECUTORS:
        cls = executor_class(name)
        ex = get_executor(name)
        assert cls.name == name and isinstance(ex, cls)
        for method in ("check", "plan", "submit", "status", "cancel"):
            assert callable(getattr(ex, method)), (name, method)
        assert ex.procs >= 1


def test_unknown_executor_or_option_is_bad_input():
    with pytest.raises(BadInput, match="'ray' is not available; allowed: local, slurm"):
        executor_class("ray")
    with pytest.raises(BadInput, match="has no option 'partition'"):
        get_executor("local", partition="gpu")
    with pytest.raises(BadInput, match="--procs-per-job 0 must be between 1"):
        get_executor("local", procs_per_job=0)


def test_a_flag_of_another_executor_is_refused_not_ignored():
    parser = argparse.ArgumentParser()
    for name in EXECUTORS:
        executor_class(name).add_arguments(parser)
    defaults = {a.dest: parser.get_default(a.dest) for a in parser._actions}
    args = parser.parse_args(["--partition", "gpu"])
    with pytest.raises(BadInput, match="--partition is an option of --executor slurm, not local"):
        options_from_args("local", args, defaults)
    assert options_from_args("slurm", args, defaults)["partition"] == "gpu"
    assert get_executor("slurm", **options_from_args("slurm", args, defaults)).procs == 1


def test_one_order_parents_first_then_longest_first_then_grid_order():
    jobs = [_job("c-short", "p-small", tokens=1), _job("p-small", tokens=10, parent="tiny-llama"),
            _job("c-long", "p-big", tokens=5), _job("p-big", tokens=10, parent="ref-llama-3"),
            _job("c-tie", "p-small", tokens=1)]
    order = [j.run_id for j in job_order(jobs)]
    assert order[:2] == ["p-big", "p-small"]  # parents first, the bigger one first
    assert order[2:] == ["c-long", "c-short", "c-tie"]  # a child's cost is its parent's size x its tokens
    assert [[j.run_id for j in g] for g in generations(jobs)] == [["p-big", "p-small"], ["c-long", "c-short", "c-tie"]]
    with pytest.raises(BadInput, match="depends on itself"):
        job_order([_job("a", "b"), _job("b", "a")])


def test_retries_follow_the_stored_failure_kind_not_the_message(tmp_path):
    store = RunStore(tmp_path)
    for run_id, kind in (("bad", Failure.BAD_INPUT), ("nan", Failure.DIVERGED), ("oom", Failure.CRASHED)):
        store.write(run_id, {"status": "failed", "reason": "BadInput: looks deterministic", "failure": kind.value})
    store.write("old", {"status": "failed", "reason": "diverged: before kinds were stored"})
    assert failure_of(store.read("old")) is Failure.CRASHED  # never guessed from the text
    for run_id in ("bad", "nan", "oom", "old"):
        assert should_run(store, run_id, attempts=0, max_retries=1) == (True, "")  # a new launch tries again
    assert should_run(store, "bad", attempts=1, max_retries=5) == (False, "failed: bad_input")
    assert should_run(store, "nan", attempts=1, max_retries=5) == (False, "failed: diverged")
    assert should_run(store, "oom", attempts=1, max_retries=1) == (True, "")
    assert should_run(store, "oom", attempts=2, max_retries=1) == (False, "retries spent")
    assert failure_kind(BadInput("x")) is Failure.BAD_INPUT and failure_kind(RuntimeError()) is Failure.CRASHED
    assert failure_kind(KeyboardInterrupt()) is Failure.KILLED


def test_status_marks_killed_and_corrupt_runs(tmp_path):
    store = RunStore(tmp_path)
    grid = SimpleNamespace(jobs=[_job(r) for r in ("dead", "torn", "fine", "queued", "new")])
    store.write("dead", {"status": "running"})  # no launch holds the store: its process is gone
    store.write("torn", {"status": "done"})  # done, but no curve
    store.write("fine", {"status": "done"})
    store.append_curve("fine", [{"step": 1, "tokens": 8, "eval_loss": 3.0}])
    store.write("queued", {"status": "running"})
    states = {s.run_id: s for s in job_states(grid, tmp_path, {"queued": ("running", "12_0")})}
    assert states["dead"].status == "killed" and states["dead"].failure is Failure.KILLED
    assert states["torn"].status == "corrupt" and "no curve.parquet" in states["torn"].reason
    assert states["fine"].status == "done" and states["new"].status == "pending"
    assert states["queued"].status == "running" and states["queued"].handle == "12_0"


@pytest.mark.parametrize("damage, expect", [
    ("truncate", "curve.parquet is unreadable"), ("garbage", "curve.parquet is unreadable"),
    ("json", "run.json is not valid JSON"), ("nocurve", "no curve.parquet"),
    ("columns", "lacks column(s) eval_loss"), ("status", "run.json has no valid status"),
])
def test_every_kind_of_torn_run_is_found_by_the_one_check(tmp_path, damage, expect):
    import pandas as pd

    store = RunStore(tmp_path)
    store.write("r", {"status": "done"})
    curve = tmp_path / "r" / "curve.parquet"
    if damage != "nocurve":
        store.append_curve("r", [{"step": 1, "tokens": 8, "eval_loss": 3.0}])
    if damage == "truncate":
        curve.write_bytes(curve.read_bytes()[:-20])
    elif damage == "garbage":
        curve.write_bytes(os.urandom(200))
    elif damage == "json":
        (tmp_path / "r" / "run.json").write_text('{"status": "do')
    elif damage == "columns":
        pd.DataFrame({"step": [1], "tokens": [8]}).to_parquet(curve)
    elif damage == "status":
        (tmp_path / "r" / "run.json").write_text('{"status": "exploded"}')
    assert store.status("r") == "corrupt"
    assert expect in store.corrupt("r")
    assert should_run(store, "r") == (True, "")  # the next launch re-runs it


def test_local_plan_skips_done_runs_and_keeps_the_order(tmp_path):
    store = RunStore(tmp_path)
    grid = SimpleNamespace(jobs=[_job("c", "p"), _job("p")])
    store.write("p", {"status": "done"})
    store.append_curve("p", [{"step": 1, "tokens": 8, "eval_loss": 3.0}])
    plan = get_executor("local").plan(grid, tmp_path)
    assert [j.run_id for j in plan.todo] == ["c"] and plan.skipped == {"p": "done"}
    assert Path(plan.runs) == tmp_path
