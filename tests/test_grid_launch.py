"""A whole tiny grid through the local executor: parents first, then prune jobs; twice."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data.runs import RunStore, load
from train_fakes import MemData, write_shards

ROOT = Path(__file__).resolve().parents[1]


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    return env


def grid_cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", "grid", *args], capture_output=True, text=True,
                          cwd=ROOT, env=clean_env(), timeout=400)


@pytest.mark.multiproc
def test_grid_runs_once_and_a_second_launch_does_no_work(tmp_path):
    shards = write_shards(tmp_path / "shards", MemData(seq_len=32))
    grid = {"name": "t", "data": {"shards": str(shards)},
            "parents": [{"name": "p", "preset": "tiny-llama", "tokens": 30 * 8 * 32}],
            "methods": ["width", "depth-last"], "ratios": [0.3], "objectives": ["lm"], "tokens": 10 * 8 * 32,
            "pretrain": {"optim": {"lr": 3.0e-3}, "eval": {"points": 3, "max_sequences": 16}},
            "train": {"eval": {"points": 3, "max_sequences": 16}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    runs = tmp_path / "runs"
    first = grid_cli("launch", str(path), "--runs", str(runs), "--executor", "local")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 jobs, " in first.stdout and "running up to" in first.stdout  # the probe's choice is printed
    store = RunStore(runs)
    ids = store.run_ids()
    assert len(ids) == 3 and all(store.status(i) == "done" for i in ids)
    stamps = {i: (runs / i / "run.json").stat().st_mtime_ns for i in ids}
    second = grid_cli("launch", str(path), "--runs", str(runs), "--executor", "local")
    assert second.returncode == 0 and "3 jobs, 0 launch(es)" in second.stdout
    assert stamps == {i: (runs / i / "run.json").stat().st_mtime_ns for i in ids}
    table = load(runs)
    post = table[table["method"] != "none"]
    assert set(post["parent"]) == {"tiny-llama"} and post["loss_before"].notna().all()
    status = grid_cli("status", str(path), "--runs", str(runs), "--json")
    rows = json.loads(status.stdout)
    assert [r["status"] for r in rows] == ["done"] * 3 and all(r["done_tokens"] for r in rows)
