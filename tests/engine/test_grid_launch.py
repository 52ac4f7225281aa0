"""A whole tiny grid through the local executor: parents first, then prune jobs; twice; a kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from data.runs import RunStore, load
from engine.grid.lock import process_alive, process_start, writer_state
from train_fakes import MemData, write_shards

ROOT = Path(__file__).resolve().parents[2]


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    return env


def grid_cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", "grid", *args], capture_output=True, text=True,
                          cwd=ROOT, env=clean_env(), timeout=400)


@pytest.mark.slow
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


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


def _processes_naming(text: str) -> list[str]:
    """Command lines of the live processes that mention ``text`` (a run store's path)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and process_alive(int(proc.name)):
            found.append(cmd)
    return found


def _status_rows(path: Path, runs: Path) -> dict[str, dict]:
    out = grid_cli("status", str(path), "--runs", str(runs), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    return {r["id"]: r for r in json.loads(out.stdout)}


@pytest.mark.slow
@pytest.mark.multiproc
def test_kill_9_of_the_launch_stops_its_jobs_and_the_next_launch_is_the_only_writer(tmp_path):
    """kill -9 of ``engine grid launch`` mid-pretraining: its training process ends too, status
    tells the truth at each step, and the next launch resumes the run as its only writer."""
    shards = write_shards(tmp_path / "shards", MemData(seq_len=32))
    grid = {"name": "k", "data": {"shards": str(shards)},
            "parents": [{"name": "p", "preset": "tiny-llama", "tokens": 400 * 8 * 32}],
            "methods": ["width"], "ratios": [0.3], "objectives": ["lm"], "tokens": 10 * 8 * 32,
            "pretrain": {"optim": {"lr": 3.0e-3}, "eval": {"points": 8, "max_sequences": 16}},
            "train": {"eval": {"points": 3, "max_sequences": 16}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    runs = tmp_path / "runs"
    with (tmp_path / "first.log").open("w") as log:
        victim = subprocess.Popen([sys.executable, "-m", "engine", "grid", "launch", str(path), "--runs", str(runs)],
                                  cwd=ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
    store = RunStore(runs)
    _wait_for(lambda: any((d / "checkpoint" / "latest").is_file() for d in runs.glob("p_pretrain_*")), 300,
              "the parent's first checkpoint")
    run_dir = next(d for d in runs.glob("p_pretrain_*") if (d / "checkpoint" / "latest").is_file())
    parent = run_dir.name
    state, writer = writer_state(run_dir)
    assert state == "live" and writer is not None and writer.pid != victim.pid  # the trainer holds it
    writer_start = process_start(writer.pid)

    os.kill(victim.pid, signal.SIGKILL)  # the launch alone, as `kill -9 <pid>` does
    victim.wait(timeout=30)
    alive_before = process_alive(writer.pid, writer_start)
    rows = _status_rows(path, runs)
    if alive_before and process_alive(writer.pid, writer_start):  # still dying: status names it
        assert rows[parent]["status"] == "running" and rows[parent]["queue"] == f"pid {writer.pid}"
    elif not alive_before:
        assert rows[parent]["status"] == "killed"

    _wait_for(lambda: not process_alive(writer.pid, writer_start), 60, "the orphaned trainer to end itself")
    _wait_for(lambda: not _processes_naming(str(runs)), 60, "the deepspeed launcher processes to exit")
    assert writer_state(run_dir)[0] != "live"
    rows = _status_rows(path, runs)
    assert rows[parent]["status"] == "killed" and "resumes" in rows[parent]["reason"]
    assert [r["status"] for r in rows.values()].count("pending") == 1
    rows_before = len(store.read_curve(parent))

    again = grid_cli("launch", str(path), "--runs", str(runs))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "progress: 2/2 done, 0 running, 0 failed, 0 waiting" in again.stdout
    for run_id in store.run_ids():
        record = store.read(run_id)
        assert record["status"] == "done" and "failure" not in record
        steps = store.read_curve(run_id)["step"].tolist()
        assert steps == sorted(set(steps)), (run_id, steps)  # no (run_id, step) twice
    assert len(store.read_curve(parent)) >= rows_before  # resumed: the rows before the kill kept
    rows = _status_rows(path, runs)
    assert [r["status"] for r in rows.values()] == ["done", "done"]
