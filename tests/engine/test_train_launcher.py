"""``engine train`` through the real ``deepspeed`` launcher: N processes, kill + resume, bad input."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from data.runs import RunStore
from engine.train.config import job_from_dict
from train_fakes import MemData, write_shards

ROOT = Path(__file__).resolve().parents[2]
SEQ = 32


def clean_env(**extra):
    """The test process may hold a process group of its own: never leak its rank variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", **extra)
    return env


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), MemData(seq_len=SEQ))


def job_file(path, runs, shards, **over):
    raw = {"parent": "tiny-llama", "tokens": 30 * 8 * SEQ, "runs_dir": str(runs), "data": {"shards": str(shards)},
           "init": "random", "eval": {"points": 5, "max_sequences": 16}, "deepspeed": {"micro_batch": 8},
           "optim": {"lr": 3e-3}, **over}
    job = job_from_dict(raw)
    path.write_text(yaml.safe_dump(job.to_dict()))
    return path, job


def engine_train(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "engine", "train", *args], capture_output=True, text=True,
                          cwd=ROOT, env=clean_env(), timeout=timeout)


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_processes_match_one_process_at_the_same_global_batch(tmp_path, shards):
    one, job1 = job_file(tmp_path / "one.yaml", tmp_path / "r1", shards, tokens=16 * 8 * SEQ)
    two, job2 = job_file(tmp_path / "two.yaml", tmp_path / "r2", shards, tokens=16 * 8 * SEQ,
                         deepspeed={"micro_batch": 4})
    for path, procs in ((one, "1"), (two, "2")):
        done = engine_train("--config", str(path), "--procs", procs)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    c1 = RunStore(tmp_path / "r1").read_curve(job1.run_id)
    c2 = RunStore(tmp_path / "r2").read_curve(job2.run_id)
    assert RunStore(tmp_path / "r2").read(job2.run_id)["world_size"] == 2
    assert c1["tokens"].tolist() == c2["tokens"].tolist()  # tokens are summed over ranks
    assert c1["eval_loss"].iloc[-1] < c1["eval_loss"].iloc[0] - 0.2
    for col in ("eval_loss", "eval_loss.code", "train_loss"):
        a, b = c1[col].to_numpy(), c2[col].to_numpy()
        assert abs(a - b)[1:].max() < 2e-3 * abs(a[1:]).max(), (col, a, b)


@pytest.mark.slow
@pytest.mark.multiproc
def test_sigkill_mid_run_resumes_without_gaps_or_duplicates(tmp_path, shards):
    path, job = job_file(tmp_path / "job.yaml", tmp_path / "runs", shards, tokens=150 * 8 * SEQ,
                         eval={"points": 8, "max_sequences": 16})
    cmd = [sys.executable, "-m", "engine", "train", "--config", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = job.run_dir / "checkpoint" / "latest"
    deadline = time.time() + 180
    while not latest.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers, mid-run
    proc.wait()
    store = RunStore(tmp_path / "runs")
    assert store.status(job.run_id) == "running"
    killed = store.read_curve(job.run_id)["step"].tolist()
    done = engine_train("--config", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    curve = store.read_curve(job.run_id)
    from engine.train.dsconfig import warmup_steps
    from engine.train.schedule import eval_steps

    # every point once, in order; the log-spaced ones start after the warm-up
    expected = eval_steps(150, 8, start=warmup_steps(job.optim, 150) + 1)
    assert curve["step"].tolist() == expected
    assert set(killed) <= set(curve["step"]) and store.status(job.run_id) == "done"
    assert (curve["elapsed_s"].diff().dropna() > 0).all()


@pytest.mark.multiproc
@pytest.mark.parametrize("over, message", [
    ({"tokens": 100}, "tokens=100 is smaller than one optimizer step (256 tokens"),
    ({"parent": "/no/such/model"}, "neither a model directory"),
    ({"data": {"shards": "SHARDS", "seq_len": 64}}, "data.seq_len=64 exceeds the shards' sequence length"),
])
def test_bad_jobs_exit_2_with_one_line(tmp_path, shards, over, message):
    if "data" in over:
        over = {"data": {"shards": str(shards), "seq_len": 64}}
    raw = {"parent": "tiny-llama", "tokens": 10_000, "runs_dir": str(tmp_path / "runs"),
           "data": {"shards": str(shards)}, **over}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(raw))
    done = engine_train("--config", str(tmp_path / "job.yaml"), timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_unknown_key_and_missing_launcher_exit_2(tmp_path, shards):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"parent": "tiny-llama", "tokens": "1M",
                                                        "data": {"shards": str(shards)}, "zero": 2}))
    done = engine_train("--config", str(tmp_path / "job.yaml"), timeout=60)
    assert done.returncode == 2 and "unknown key(s) zero in job; allowed: parent, tokens, data" in done.stderr
    path, _ = job_file(tmp_path / "ok.yaml", tmp_path / "runs", shards)
    env = clean_env(PRUNELAW_DEEPSPEED="/nonexistent/deepspeed")
    done = subprocess.run([sys.executable, "-m", "engine", "train", "--config", str(path)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 2 and "deepspeed launcher" in done.stderr
