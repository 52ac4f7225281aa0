"""A run has one writer: the writer lock, the launch watchdog, status truth, GPU slots, progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from data.cli import BadInput
from data.runs import RunStore
from engine.grid.executor import job_states
from engine.grid.local import (
    LocalExecutor, LocalOptions, device_groups, launch_env, parse_visible_devices, plan_slots,
)
from engine.grid.lock import WRITER_FILE, Lock, process_start, try_hold, writer_state
from engine.grid.progress import Progress, count

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pathlib import Path
from engine.grid.lock import try_hold
lock = try_hold(Path(sys.argv[1]), "r")
print("held", flush=True)
time.sleep(600)
"""


def _job(run_id: str, depends: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(run_id=run_id, depends=depends, kind="parent" if depends is None else "post",
                           config=SimpleNamespace(tokens=1, parent=""))


@pytest.fixture
def holder(tmp_path):
    """A live process holding run r's writer lock (what a training process does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "r" / WRITER_FILE)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_status_names_the_live_writer_and_calls_the_run_killed_once_it_is_gone(tmp_path, holder):
    store = RunStore(tmp_path)
    store.write("r", {"status": "running", "meta": {}})
    grid = SimpleNamespace(jobs=[_job("r")])
    (state,) = job_states(grid, tmp_path)  # no launch holds the store: only the writer lock tells
    assert state.status == "running" and state.handle == f"pid {holder.pid}"
    assert f"written by pid {holder.pid} on " in state.reason
    rival = try_hold(tmp_path / "r" / WRITER_FILE, "r")
    assert not isinstance(rival, Lock) and rival.pid == holder.pid  # a second writer is refused
    holder.kill()
    holder.wait()
    (state,) = job_states(grid, tmp_path)
    assert state.status == "killed" and "resumes" in state.reason
    taken = try_hold(tmp_path / "r" / WRITER_FILE, "r")  # the kernel freed it: the next writer takes it
    assert isinstance(taken, Lock)
    taken.release()
    assert writer_state(tmp_path / "r")[0] == "none"


def test_a_worker_does_not_start_a_run_another_process_writes(tmp_path, holder):
    from engine.train.worker import hold_run

    job = SimpleNamespace(run_id="r", run_dir=tmp_path / "r")
    lock, busy = hold_run(job, SimpleNamespace(is_main=True, world=1))
    assert lock is None and busy.startswith(f"pid {holder.pid} on ")
    free = SimpleNamespace(run_id="s", run_dir=tmp_path / "s")
    lock, busy = hold_run(free, SimpleNamespace(is_main=True, world=1))
    assert busy == "" and isinstance(lock, Lock) and writer_state(tmp_path / "s")[0] == "live"
    lock.release()


def test_a_training_process_ends_itself_when_its_launch_dies():
    launch = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    start = process_start(launch.pid)
    code = ("import sys, time\nfrom engine.train.worker import watch_launch\n"
            f"watch_launch('{launch.pid}:{start}')\ntime.sleep(60)\nsys.exit(5)\n")
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, text=True)
    launch.wait()
    out, _ = worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGTERM and "the launch (pid" in out


def test_a_reused_pid_is_not_taken_for_the_launch():
    from engine.train.worker import watch_launch

    assert watch_launch("") is None  # not started by a launch: nothing to watch
    from engine.grid.lock import process_alive

    assert process_alive(os.getpid(), process_start(os.getpid()))
    assert not process_alive(os.getpid(), "1")  # same pid, another start time: another process


# -- GPUs -------------------------------------------------------------------------------------

def test_cuda_visible_devices_are_parsed_as_the_indices_deepspeed_includes():
    assert parse_visible_devices("2,3") == [2, 3]
    assert parse_visible_devices("") == [] and parse_visible_devices("-1") == []
    assert parse_visible_devices("1,-1,2") == [1]  # CUDA stops at the first negative entry
    with pytest.raises(BadInput, match="'GPU-5e3f' is not a GPU index"):
        parse_visible_devices("GPU-5e3f")


def test_gpu_discovery_keeps_the_cpu_path_on_a_cpu_machine_and_honours_cuda_visible_devices(monkeypatch):
    import engine.grid.local as local

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert local.visible_gpus() == []  # DeepSpeed told to use the CPU: the machine probe decides
    monkeypatch.delenv("DS_ACCELERATOR")
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    monkeypatch.setattr(local.os.path, "isdir", lambda path: False)
    assert local.visible_gpus() == []  # no NVIDIA driver: a stray CUDA_VISIBLE_DEVICES changes nothing
    monkeypatch.setattr(local.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    assert local.visible_gpus() == [1, 3]


def test_each_concurrent_job_gets_its_own_gpus():
    assert device_groups([0, 1, 2, 3], 1) == [(0,), (1,), (2,), (3,)]
    assert device_groups([4, 5, 6, 7, 1], 2) == [(4, 5), (6, 7)]  # the odd one out idles
    assert device_groups([0, 1, 2, 3], 1, parallel=2) == [(0,), (1,)]
    with pytest.raises(BadInput, match="--procs-per-job 4 needs 4 GPUs; 2 visible"):
        device_groups([0, 1], 4)
    with pytest.raises(BadInput, match="--parallel 3 needs 6 GPUs"):
        device_groups([0, 1, 2, 3], 2, parallel=3)
    slots = plan_slots([2, 3], 1, None)
    assert slots.devices == [(2,), (3,)] and slots.describe.endswith("2 job(s) at a time on GPUs 2, 3")


def test_a_gpu_launcher_gets_include_and_no_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    env = launch_env(4, (3,))
    assert "CUDA_VISIBLE_DEVICES" not in env and env["OMP_NUM_THREADS"] == "4"
    assert env["PRUNELAW_LAUNCH"] == f"{os.getpid()}:{process_start(os.getpid())}"
    assert launch_env(1, None)["CUDA_VISIBLE_DEVICES"] == "2,3"  # CPU: left as the user set it


FAKE_LAUNCHER = """#!{python}
import json, os, sys, time
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "start": time.time(),
                         "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}}) + "\\n")
time.sleep(1.0)
with open(os.environ["FAKE_LOG"], "a") as fh:
    fh.write(json.dumps({{"end": time.time(), "argv": sys.argv[1:]}}) + "\\n")
"""


def test_concurrent_launchers_are_given_disjoint_gpus(tmp_path, monkeypatch):
    """Four GPUs, two processes per job: two launchers at once, on GPUs 0+1 and 2+3."""
    from train_fakes import MemData, write_shards

    from engine.grid.spec import load_grid

    shards = write_shards(tmp_path / "shards", MemData(seq_len=32))
    spec = {"name": "g", "data": {"shards": str(shards)}, "parents": [{"name": "p", "preset": "tiny-llama", "tokens": 8192}],
            "methods": ["width", "depth-last"], "ratios": [0.2, 0.3], "objectives": ["lm"], "tokens": 4096}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec))
    grid = load_grid(tmp_path / "grid.yaml")
    grid.jobs[:] = [j for j in grid.jobs if j.kind != "parent"]  # children only: all ready at once
    for job in grid.jobs:
        job.depends = None
    launcher = tmp_path / "deepspeed"
    launcher.write_text(FAKE_LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    monkeypatch.setenv("PRUNELAW_DEEPSPEED", str(launcher))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    ex = LocalExecutor(LocalOptions(procs_per_job=2, max_retries=0), gpus=lambda: [0, 1, 2, 3])
    lines: list[str] = []
    ex.submit(ex.plan(grid, tmp_path / "runs"), lines.append)
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    starts = [c for c in calls if "start" in c]
    assert len(starts) == 2 and all(c["visible"] is None for c in starts)
    includes = sorted(c["argv"][c["argv"].index("--include") + 1] for c in starts)
    assert includes == ["localhost:0,1", "localhost:2,3"]
    assert not any("--num_gpus" in c["argv"] for c in starts)
    ends = {tuple(c["argv"]): c["end"] for c in calls if "end" in c}
    first, second = starts
    assert second["start"] < ends[tuple(first["argv"])]  # they ran side by side
    assert "2 job(s) at a time on GPUs 0+1, 2+3" in lines[0]


# -- progress ---------------------------------------------------------------------------------

def test_progress_prints_plain_counts_and_the_time_left_in_a_log():
    statuses = {"p": "running", "a": "pending", "b": "pending", "c": "done"}
    clock = [0.0]
    lines: list[str] = []
    progress = Progress(lambda: dict(statuses), {"p": 10.0, "a": 2.0, "b": 2.0, "c": 2.0}, lines.append,
                        bar=False, clock=lambda: clock[0])
    progress.refresh({"p"})
    assert lines == ["progress: 1/4 done, 1 running, 0 failed, 2 waiting; time left known after the first job ends"]
    clock[0] = 100.0
    statuses["p"] = "done"
    progress.refresh({"a", "b"})  # one batch holds both; its process has not started either yet
    assert lines[-1] == "progress: 2/4 done, 0 running, 0 failed, 2 waiting; about 00:40 left"  # 4 of 14 at 10/100 s
    statuses["a"] = "running"
    progress.refresh({"a", "b"})
    assert lines[-1] == "progress: 2/4 done, 1 running, 0 failed, 1 waiting; about 00:40 left"
    progress.refresh({"a", "b"})
    assert len(lines) == 3  # nothing moved: no new line
    clock[0] = 120.0
    statuses.update(a="failed", b="done")
    progress.refresh(set())
    assert lines[-1] == "progress: 3/4 done, 0 running, 1 failed, 0 waiting; about 00:00 left"
    progress.say("launch 2: 2 job(s) in 20.0 s")
    assert lines[-1] == "launch 2: 2 job(s) in 20.0 s"


def test_time_left_is_unknown_until_a_job_of_this_launch_ends():
    counts = count({"a": "done", "b": "pending"}, set(), {"a": 1.0, "b": 1.0}, start_left=1.0, elapsed_s=50.0)
    assert counts.left_s is None and counts.done == 1 and counts.waiting == 1


DONE_LAUNCHER = """#!{python}
import os, sys, time, yaml
from pathlib import Path
from data.runs import RunStore
from engine.grid.lock import WRITER_FILE, try_hold
for path in sys.argv[sys.argv.index("--config") + 1:]:
    job = yaml.safe_load(open(path))
    lock = try_hold(Path(job["runs_dir"]) / job["run_id"] / WRITER_FILE, job["run_id"])
    print(f"[engine.train] {{job['run_id']}}: started", flush=True)
    time.sleep(1.0)  # the launch follows the log every 0.2 s: it sees this job running
    with open(os.environ["FAKE_LOG"], "a") as fh:
        fh.write(f"{{job['run_id']}} {{time.time()}}\\n")
    store = RunStore(job["runs_dir"])
    store.append_curve(job["run_id"], [{{"step": 1, "tokens": 8, "eval_loss": 3.0}}])
    store.write(job["run_id"], {{"status": "done", "meta": {{}}}})
    lock.release()
    print(f"[engine.train] {{job['run_id']}}: done in 0.1 s", flush=True)
"""


@pytest.fixture
def fake_grid(tmp_path, monkeypatch):
    """A parent + one child grid whose launcher (a fake ``deepspeed``) marks each job done."""
    from train_fakes import MemData, write_shards

    from engine.grid.spec import load_grid

    shards = write_shards(tmp_path / "shards", MemData(seq_len=32))
    spec = {"name": "w", "data": {"shards": str(shards)}, "parents": [{"name": "p", "preset": "tiny-llama",
                                                                       "tokens": 8192}],
            "methods": ["width"], "ratios": [0.3], "objectives": ["lm"], "tokens": 4096}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec))
    launcher = tmp_path / "deepspeed"
    launcher.write_text(DONE_LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    monkeypatch.setenv("PRUNELAW_DEEPSPEED", str(launcher))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "ran.log"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return load_grid(tmp_path / "grid.yaml"), tmp_path / "runs"


@pytest.mark.slow
def test_a_launch_waits_for_a_run_another_process_still_writes(fake_grid, tmp_path):
    """What a launch right after a kill -9 of the previous one meets: that launch's job still
    holds its run for a moment. The new launch says so, waits, and only then runs it."""
    grid, runs = fake_grid
    parent = grid.jobs[0].run_id
    code = HOLDER.replace("time.sleep(600)", "time.sleep(3)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(runs / parent / WRITER_FILE)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    ex = LocalExecutor(LocalOptions(parallel=1), gpus=lambda: [])
    lines: list[str] = []
    result = ex.submit(ex.plan(grid, runs), lines.append)
    holder.wait()
    assert any(line.startswith(f"{parent}: pid {holder.pid} on ") and "waiting for it" in line for line in lines)
    ran = [line.split() for line in (tmp_path / "ran.log").read_text().splitlines()]
    assert [r[0] for r in ran] == [parent, grid.jobs[1].run_id]  # each once, the parent first
    assert result.ok and set(result.statuses.values()) == {"done"}
    progress = [line for line in lines if line.startswith("progress: ")]
    assert progress[0].startswith("progress: 0/2 done, 0 running, 0 failed, 2 waiting")  # held by the other
    assert progress[1].startswith("progress: 0/2 done, 1 running, 0 failed, 1 waiting")  # this launch's own
    assert progress[-1] == "progress: 2/2 done, 0 running, 0 failed, 0 waiting; about 00:00 left"


class _WriterEndsMidPass:
    """A scheduler whose one job's foreign writer exits right after ``next_batch`` passed the
    job over: the interleaving that once ended a launch with the job never run."""

    def __init__(self) -> None:
        self.live, self.launched = True, False

    def foreign(self) -> dict:
        return {"p": None} if self.live else {}

    def next_batch(self, free_slots: int) -> list:
        if self.live:
            self.live = False  # the writer exits now, after this pass saw it live
            return []
        if self.launched:
            return []
        self.launched = True
        return [SimpleNamespace(run_id="p")]

    def finished(self, batch: list) -> None:
        pass


def test_a_launch_runs_a_job_whose_other_writer_ends_mid_pass(monkeypatch):
    import engine.grid.local as local

    ran: list[str] = []
    monkeypatch.setattr(local, "WRITER_POLL_S", 0.01)
    monkeypatch.setattr(local, "_run_batch", lambda state, lock, batch: ran.extend(j.run_id for j in batch))
    said: list[str] = []
    state = SimpleNamespace(refresh=lambda: None, progress=SimpleNamespace(say=said.append))
    local._drive(_WriterEndsMidPass(), state, slots=1)
    assert ran == ["p"] and "waiting for it" in said[0]


def test_a_writer_is_not_refused_because_a_status_probe_held_its_lock_for_a_moment(tmp_path):
    import fcntl
    import threading
    import time

    path = tmp_path / "r" / WRITER_FILE
    path.parent.mkdir()
    probe = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what file_state does, for microseconds
    threading.Thread(target=lambda: (time.sleep(0.05), os.close(probe))).start()
    lock = try_hold(path, "r")
    assert isinstance(lock, Lock)
    lock.release()


def test_the_demo_grid_step_prints_progress_as_it_goes(fake_grid, capsys):
    from workflow.demo import Timings, grid_step

    grid, runs = fake_grid
    result = grid_step(SimpleNamespace(procs_per_job=1, grid=grid.path), grid, runs, Timings())
    out = capsys.readouterr().out
    assert result.ok
    assert "    progress: 0/2 done, 1 running, 0 failed, 1 waiting; time left known after the first job ends" in out
    assert "    progress: 2/2 done, 0 running, 0 failed, 0 waiting; about 00:00 left" in out
