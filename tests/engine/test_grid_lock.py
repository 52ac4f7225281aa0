"""The run-store lock: concurrent launches run each job once; kill -9 then status tells the truth.

The deepspeed launcher is replaced (``PRUNELAW_DEEPSPEED``) by a small script that records
which jobs it was asked to run and writes their run.json like the trainer would, so these
tests exercise the real ``engine grid launch`` / ``status`` processes in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from data.runs import RunStore
from engine.grid.lock import LOCK_FILE, acquire, owner_state

ROOT = Path(__file__).resolve().parents[2]

FAKE_LAUNCHER = """#!{python}
import json, os, sys, time
import yaml
from data.runs import RunStore
files = sys.argv[sys.argv.index("--config") + 1:]
for path in files:
    job = yaml.safe_load(open(path))
    store = RunStore(job["runs_dir"])
    with open(os.environ["FAKE_LOG"], "a") as fh:
        fh.write(job["run_id"] + "\\n")
    store.write(job["run_id"], {{"status": "running", "meta": {{}}}})
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    store.append_curve(job["run_id"], [{{"step": 1, "tokens": 8, "eval_loss": 3.0}}])
    store.write(job["run_id"], {{"status": "done", "meta": {{}}}})
"""


@pytest.fixture
def setup(tmp_path):
    from train_fakes import MemData, write_shards

    shards = write_shards(tmp_path / "shards", MemData(seq_len=32))
    grid = {"name": "lock", "data": {"shards": str(shards)},
            "parents": [{"name": "p", "preset": "tiny-llama", "tokens": 8192}],
            "methods": ["depth-last", "width"], "ratios": [0.3], "objectives": ["lm"], "tokens": 4096}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    launcher = tmp_path / "fake-deepspeed"
    launcher.write_text(FAKE_LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    env = {**os.environ, "PRUNELAW_DEEPSPEED": str(launcher), "FAKE_LOG": str(tmp_path / "ran.log"),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return path, tmp_path / "runs", env, tmp_path / "ran.log"


def _grid(action: str, path: Path, runs: Path, env: dict, *extra: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "grid", action, str(path), "--runs", str(runs), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_concurrent_launches_run_each_job_once(setup):
    path, runs, env, log = setup
    env = {**env, "FAKE_SLEEP": "1.5"}
    first = _grid("launch", path, runs, env)
    _wait_for(lambda: (runs / LOCK_FILE).is_file() and owner_state(runs)[0] == "live")
    second = _grid("launch", path, runs, env)
    out2, err2 = second.communicate(timeout=120)
    out1, err1 = first.communicate(timeout=120)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 2, out2 + err2
    assert len(err2.strip().splitlines()) == 1 and "is locked by a running launch: pid" in err2
    ran = log.read_text().split()
    assert len(ran) == 3 and len(set(ran)) == 3  # parent + two children, each exactly once
    store = RunStore(runs)
    assert all(store.status(r) == "done" for r in ran)
    assert owner_state(runs)[0] == "none"  # released on exit


def test_kill_9_leaves_a_stale_lock_status_shows_killed_and_the_next_launch_resumes(setup):
    path, runs, env, log = setup
    victim = _grid("launch", path, runs, {**env, "FAKE_SLEEP": "120"}, start_new_session=True)
    store = RunStore(runs)
    _wait_for(lambda: any(store.status(r) == "running" for r in store.run_ids()))
    os.killpg(victim.pid, signal.SIGKILL)  # the launch and its launcher, no chance to clean up
    victim.wait(timeout=30)
    assert owner_state(runs)[0] == "stale"
    status = _grid("status", path, runs, env, "--json")
    out, err = status.communicate(timeout=60)
    rows = {r["id"]: r["status"] for r in json.loads(out)}
    assert sorted(rows.values()) == ["killed", "pending", "pending"], rows
    text = _grid("status", path, runs, env)
    out, _ = text.communicate(timeout=60)
    assert "lock: stale: pid" in out and "killed" in out
    again = _grid("launch", path, runs, {**env, "FAKE_SLEEP": "0"})
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err  # the stale lock is taken over, not refused
    assert all(store.status(r) == "done" for r in store.run_ids())


def test_a_corrupt_run_is_reported_skipped_by_loaders_and_rerun(tmp_path):
    import warnings

    from data.runs import CorruptRunWarning, load

    store = RunStore(tmp_path)
    meta = {"method": "depth", "init": "pruned"}
    for run_id in ("good", "torn"):
        store.write(run_id, {"status": "done", "meta": meta})
        store.append_curve(run_id, [{"step": 1, "tokens": 10, "eval_loss": 3.0}])
    curve = tmp_path / "torn" / "curve.parquet"
    curve.write_bytes(curve.read_bytes()[:20])  # truncated by a full disk or a kill mid-copy
    assert store.status("torn") == "corrupt" and store.status("good") == "done"
    assert "curve.parquet is unreadable" in store.check("torn")["corrupt"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = load(tmp_path)
    assert set(table["run_id"]) == {"good"}
    assert any(issubclass(w.category, CorruptRunWarning) and "'torn'" in str(w.message) for w in caught)
    moved = store.quarantine("torn")
    assert not store.exists("torn") and all(p.exists() for p in moved)  # kept aside, re-runnable


def test_the_lock_is_exclusive_within_one_machine(tmp_path):
    from data.cli import BadInput

    held = acquire(tmp_path, "g")
    try:
        with pytest.raises(BadInput, match="locked by a running launch"):
            acquire(tmp_path, "g")
    finally:
        held.release()
    acquire(tmp_path, "g").release()
