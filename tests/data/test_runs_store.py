"""The run store: atomic writes, one row per (run_id, step), the loader's columns."""

import json

import pandas as pd
import pytest

from data.cli import BadInput
from data.runs import COLUMNS, Failure, RunStore, failure_of, load

META = {"family": "tiny", "parent": "tiny-llama-s", "method": "width", "ratio_target": 0.25,
        "ratio": 0.247, "params_before": 459328, "params_after": 345000, "nonembed_before": 197184,
        "nonembed_after": 120000, "loss_before": 3.2, "init": "pruned", "objective": "lm", "seed": 0}


def _rows(steps, domain=False):
    rows = []
    for s in steps:
        row = {"step": s, "tokens": s * 1024, "eval_loss": 5.0 / (1 + s), "train_loss": 5.1 / (1 + s),
               "lr": 1e-3, "elapsed_s": float(s)}
        if domain:
            row["eval_loss.books"] = 4.0 / (1 + s)
        rows.append(row)
    return rows


def test_append_replaces_rows_of_the_same_step(tmp_path):
    store = RunStore(tmp_path)
    store.write("r1", {"status": "running", "meta": META})
    store.append_curve("r1", _rows([0, 10, 20]))
    store.append_curve("r1", _rows([20, 30]))  # a resumed run re-evaluates step 20
    curve = store.read_curve("r1")
    assert curve["step"].tolist() == [0, 10, 20, 30]


def test_truncate_then_append_has_no_gaps_or_duplicates(tmp_path):
    store = RunStore(tmp_path)
    store.write("r1", {"status": "running", "meta": META})
    store.append_curve("r1", _rows([0, 10, 20, 30]))
    assert store.truncate_curve("r1", 10) == 2
    store.append_curve("r1", _rows([20, 30, 40]))
    assert store.read_curve("r1")["step"].tolist() == [0, 10, 20, 30, 40]


def test_load_returns_design_columns_with_metadata(tmp_path):
    store = RunStore(tmp_path)
    for run_id, status in (("a", "done"), ("b", "failed")):
        store.write(run_id, {"status": status, "meta": META})
        store.append_curve(run_id, _rows([0, 5], domain=True))
    frame = load(tmp_path)
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert "eval_loss.books" in frame.columns
    assert len(frame) == 4 and set(frame["status"]) == {"done", "failed"}
    assert (frame["params_before"] == META["params_before"]).all()
    assert len(load(tmp_path, statuses=["done"])) == 2
    assert len(load(tmp_path / "a")) == 2  # a single run directory works too


def test_failed_write_leaves_previous_file_intact(tmp_path):
    store = RunStore(tmp_path)
    store.write("r1", {"status": "running", "meta": META})
    before = (tmp_path / "r1" / "run.json").read_text()
    with pytest.raises(ValueError):
        store.write("r1", {"status": "exploded"})
    assert (tmp_path / "r1" / "run.json").read_text() == before
    assert not [p for p in (tmp_path / "r1").iterdir() if p.name.endswith(".tmp")]


def test_update_merges_meta_and_keeps_other_fields(tmp_path):
    store = RunStore(tmp_path)
    store.write("r1", {"status": "running", "meta": META, "config": {"lr": 1e-3}})
    store.update("r1", meta={"loss_before": 3.1}, slurm={"array_job_id": "42"})
    record = json.loads((tmp_path / "r1" / "run.json").read_text())
    assert record["meta"]["loss_before"] == 3.1 and record["meta"]["method"] == "width"
    assert record["config"] == {"lr": 1e-3} and record["slurm"]["array_job_id"] == "42"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_load_refuses_missing_or_empty_store(tmp_path, make):
    path = tmp_path / "store"
    if make == "empty":
        path.mkdir()
    with pytest.raises(BadInput, match="store"):
        load(path)


def test_parquet_is_plain_pyarrow(tmp_path):
    store = RunStore(tmp_path)
    store.write("r1", {"status": "done", "meta": META})
    store.append_curve("r1", _rows([0, 1]))
    table = pd.read_parquet(tmp_path / "r1" / "curve.parquet", engine="pyarrow")
    assert table["tokens"].dtype == "int64"


def test_parents_whose_loss_does_not_fall_with_size_are_named():
    import pandas as pd

    from data.runs import size_order_violations

    rows = [("tiny", "none", 3e4, 6.2), ("tiny", "width", 3e4, 5.3), ("tiny", "depth", 6e4, 4.9),
            ("tiny", "width", 1.2e5, 5.1), ("qwen", "width", 3e4, 5.4), ("qwen", "width", 6e4, 4.8)]
    frame = pd.DataFrame(rows, columns=["family", "method", "params_before", "loss_before"])
    problems = size_order_violations(frame)
    assert len(problems) == 1 and "120,000 params has loss 5.1000" in problems[0] and "tiny" in problems[0]
    assert size_order_violations(frame[frame["params_before"] < 1e5]) == []


def test_a_run_that_resumes_or_finishes_drops_the_failure_of_an_earlier_attempt(tmp_path):
    store = RunStore(tmp_path)
    store.write("r", {"status": "failed", "reason": "RuntimeError: oom", "failure": "crashed", "meta": {}})
    store.update("r", status="running", reason=None)
    assert "failure" not in store.read("r")
    store.set_status("r", "failed", "x", Failure.KILLED)
    assert store.read("r")["failure"] == "killed"
    store.update("r", status="done", reason=None)
    record = store.read("r")
    assert record["status"] == "done" and "failure" not in record and failure_of(record) is None
