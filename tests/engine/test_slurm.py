"""The SLURM executor of ``engine grid``.

Fast tests (always run) check the generated sbatch script by executing it with stub
``scontrol``/``deepspeed`` programs, and the bad-input paths. The ``slurm``-marked tests run a
tiny real grid (a pretrained parent and one pruned child) through a real single-node SLURM
(tests/slurm_cluster.py): a parent task requeued mid-run by the scheduler and a child task
cancelled mid-run and resubmitted both finish with no gap and no duplicated step, and the run
store equals the same grid run with the local executor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401 - the fixture

from data.runs import RunStore
from engine.__main__ import main as engine
from engine.grid.slurm import LEDGER, QUEUE_STATES, generations, queue_states, read_record
from engine.train.checkpoint import has_checkpoint

GRID = """\
name: slurmtiny
data: {{shards: {shards}}}
parents:
  - {{name: s, preset: tiny-llama-s, tokens: {parent_tokens}}}
methods: [width]
ratios: [0.5]
objectives: [lm]
tokens: {child_tokens}
pretrain: {{eval: {{points: 6, max_sequences: 16}}, deepspeed: {{micro_batch: 8}}}}
train: {{eval: {{points: 6, max_sequences: 16}}, deepspeed: {{micro_batch: 8}}}}
"""


def write_grid(path: Path, shards: Path, parent_tokens: str = "24K", child_tokens: str = "24K") -> Path:
    path.write_text(GRID.format(shards=shards, parent_tokens=parent_tokens, child_tokens=child_tokens))
    return path


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """Our own temporary directory: pytest prunes old ``tmp_path`` roots while other sessions
    run, which could pull a run store away from under a minutes-long SLURM test."""
    root = Path(tempfile.mkdtemp(prefix="prunelaw-slurm-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def shards(workdir: Path) -> Path:
    """Real token shards: Python stdlib source, a 512-token byte-level BPE, 32-token rows."""
    from data.corpus import build_corpus
    from data.prepare import prepare
    from data.tokenizers import train_bpe

    root = workdir / "data"
    corpus = build_corpus(root / "corpus", domains=["code"], max_docs=30, eval_fraction=0.2)
    return prepare(corpus, train_bpe(corpus, 512, root / "tok"), 32, root / "shards", num_proc=1)


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """Run ``engine ARGV`` in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = engine(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the script, without a cluster -------------------------------------------------------------

STUB_SCONTROL = '#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a17\\ngpu-a18\\n"\n'
STUB_DEEPSPEED = '#!/bin/sh\nprintf "%s\\n" "$@" > "$STUB_ARGS"\n'


def test_dry_run_script_runs_the_right_job_with_a_hostfile(tmp_path: Path, capsys, monkeypatch) -> None:
    """A 2-node, 16-GPU dry run: the printed script, executed as array task 1 of job 4242
    with stub scontrol/deepspeed, launches the second child with a two-node hostfile."""
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "shards", child_tokens="24K")
    grid.write_text(grid.read_text().replace("ratios: [0.5]", "ratios: [0.25, 0.5]"))
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, text in (("scontrol", STUB_SCONTROL), ("deepspeed", STUB_DEEPSPEED)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    monkeypatch.setenv("PRUNELAW_DEEPSPEED", str(stubs / "deepspeed"))
    runs = tmp_path / "runs"
    code, out, _ = cli(capsys, "grid", "launch", str(grid), "--runs", str(runs), "--executor", "slurm",
                       "--dry-run", "--gpus-per-job", "16", "--nodes-per-job", "2", "--partition", "gpu",
                       "--time", "4:00:00", "--account", "proj", "--max-parallel", "3", "--sbatch-extra=--qos=high")
    assert code == 0
    scripts = sorted((runs / "_slurm").glob("*.sbatch"))
    assert [s.name.split("-")[1] for s in scripts] == ["gen0", "gen1"]  # parents, then children
    parent_script, child_script = (s.read_text() for s in scripts)
    assert parent_script in out and child_script in out  # printed as written
    for line in ("#SBATCH --array=0-1%3", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --time=4:00:00", "#SBATCH --account=proj",
                 "#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --qos=high"):
        assert line in child_script
    assert "#SBATCH --array=0-0%3" in parent_script
    assert not list(runs.glob(f"*/{LEDGER}")), "a dry run submits (and records) nothing"

    env = {**os.environ, "PATH": f"{stubs}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_JOB_ID": "4241",
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-a[17-18]", "STUB_ARGS": str(tmp_path / "args")}
    subprocess.run(["bash", str(scripts[1])], env=env, check=True, capture_output=True, timeout=30)
    argv = (tmp_path / "args").read_text().split()
    child = sorted(p.parent.name for p in runs.glob("*/job.yaml") if "width_r0.5" in p.parent.name)[0]
    assert argv[argv.index("--config") + 1] == str(runs.resolve() / child / "job.yaml")
    assert argv[argv.index("--master_addr") + 1] == "gpu-a17"
    assert argv[argv.index("--master_port") + 1] == str(20000 + 4242 % 40000)
    assert argv[argv.index("--num_gpus") + 1] == "8"
    hostfile = Path(argv[argv.index("--hostfile") + 1])
    assert hostfile.read_text().splitlines() == ["gpu-a17 slots=8", "gpu-a18 slots=8"]
    assert (runs / child / "slurm-4241_1.out").is_file(), "the task's output goes next to its run"


def _two_node_dry_run(tmp_path: Path, capsys, *flags: str) -> tuple[Path, str]:
    """A 2-node, 16-GPU dry run of a bf16 ZeRO-2 grid; returns the run store and the child script."""
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "shards")
    grid.write_text(grid.read_text().replace(
        "train: {eval: {points: 6, max_sequences: 16}, deepspeed: {micro_batch: 8}}",
        "train: {eval: {points: 6, max_sequences: 16}, "
        "deepspeed: {micro_batch: 4, grad_accum: 8, zero_stage: 2, precision: bf16}}"))
    runs = tmp_path / "runs"
    code, _, err = cli(capsys, "grid", "launch", str(grid), "--runs", str(runs), "--executor", "slurm", "--dry-run",
                       "--gpus-per-job", "16", "--nodes-per-job", "2", *flags)
    assert code == 0, err
    return runs, sorted((runs / "_slurm").glob("*.sbatch"))[1].read_text()


def _stub(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)
    (folder / name).chmod(0o755)
    return folder / name


def test_two_node_script_carries_cpus_nccl_and_the_zero_config(tmp_path: Path, capsys, monkeypatch) -> None:
    """pdsh mode: 8 CPUs per GPU for the one launcher task per node, NCCL's async error handling
    exported and written to the DeepSpeed env file that pdsh carries to the second node, and
    the ZeRO-2 / bf16 / batch settings of each task in the script."""
    stubs = tmp_path / "stubs"
    _stub(stubs, "scontrol", STUB_SCONTROL)
    monkeypatch.setenv("PRUNELAW_DEEPSPEED", str(_stub(stubs, "deepspeed", STUB_DEEPSPEED)))
    runs, script = _two_node_dry_run(tmp_path, capsys)
    assert "#SBATCH --ntasks-per-node=1 " in script and "#SBATCH --cpus-per-task=64\n" in script  # 8 x 8 GPUs
    assert 'export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"' in script
    assert ('#   0) {"train_batch_size": 512, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 8, '
            '"zero_optimization": {"stage": 2}, "bf16": {"enabled": true}}') in script  # 4 x 8 x 16 ranks
    env = {**os.environ, "PATH": f"{stubs}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_JOB_ID": "78", "SLURM_JOB_NODELIST": "gpu-a[17-18]", "STUB_ARGS": str(tmp_path / "args")}
    env.pop("TORCH_NCCL_ASYNC_ERROR_HANDLING", None)
    script_path = sorted((runs / "_slurm").glob("*.sbatch"))[1]
    subprocess.run(["bash", str(script_path)], env=env, check=True, capture_output=True, timeout=30)
    argv = (tmp_path / "args").read_text().split()
    hostfile = Path(argv[argv.index("--hostfile") + 1])
    assert hostfile.read_text().splitlines() == ["gpu-a17 slots=8", "gpu-a18 slots=8"]
    ds_env = (hostfile.parent / "deepspeed_env-78").read_text().splitlines()
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in ds_env and "NCCL_ASYNC_ERROR_HANDLING=1" in ds_env


STUB_SRUN = """#!/bin/bash
printf "%s\\n" "$@" > "$STUB_ARGS"
while [[ "$1" == --* ]]; do [[ "$1" == *=* ]] && shift || shift 2; done
SLURM_PROCID=9 SLURM_LOCALID=1 SLURM_NTASKS=16 exec "$@"
"""
STUB_PYTHON = """#!/bin/sh
printf "%s\\n" "RANK=$RANK" "LOCAL_RANK=$LOCAL_RANK" "WORLD_SIZE=$WORLD_SIZE" "MASTER_ADDR=$MASTER_ADDR" \\
  "MASTER_PORT=$MASTER_PORT" "TORCH_NCCL=$TORCH_NCCL_ASYNC_ERROR_HANDLING" "$@" > "$STUB_RANK"
"""


def test_srun_launcher_starts_every_rank_without_ssh(tmp_path: Path, capsys, monkeypatch) -> None:
    """--launcher slurm: one SLURM task per GPU with 8 CPUs each and no hostfile; the srun
    line, run by a stub srun as rank 9 of 16, hands the trainer its rank and rendezvous."""
    stubs = tmp_path / "stubs"
    _stub(stubs, "scontrol", STUB_SCONTROL)
    _stub(stubs, "srun", STUB_SRUN)
    monkeypatch.setattr(sys, "executable", str(_stub(stubs, "python", STUB_PYTHON)))
    runs, script = _two_node_dry_run(tmp_path, capsys, "--launcher", "slurm")
    assert "#SBATCH --ntasks-per-node=8 " in script and "#SBATCH --cpus-per-task=8\n" in script
    assert "hostfile" not in script.lower() and "deepspeed" not in script.split("# Launch.")[1]
    env = {**os.environ, "PATH": f"{stubs}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_JOB_ID": "78", "SLURM_JOB_NODELIST": "gpu-a[17-18]", "STUB_ARGS": str(tmp_path / "args"),
           "STUB_RANK": str(tmp_path / "rank")}
    env.pop("TORCH_NCCL_ASYNC_ERROR_HANDLING", None)
    script_path = sorted((runs / "_slurm").glob("*.sbatch"))[1]
    subprocess.run(["bash", str(script_path)], env=env, check=True, capture_output=True, timeout=30)
    srun = (tmp_path / "args").read_text().splitlines()
    assert srun[:8] == ["--nodes", "2", "--ntasks-per-node", "8", "--cpus-per-task", "8", "--kill-on-bad-exit=1",
                        "--export=ALL"]
    child = sorted(p.parent.name for p in runs.glob("*/job.yaml") if "width_r0.5" in p.parent.name)[0]
    assert (tmp_path / "rank").read_text().splitlines() == [
        "RANK=9", "LOCAL_RANK=1", "WORLD_SIZE=16", "MASTER_ADDR=gpu-a17", f"MASTER_PORT={20000 + 78}",
        "TORCH_NCCL=1", "-m", "engine.train", "--config", str(runs.resolve() / child / "job.yaml")]


@pytest.mark.parametrize("flags, expected", [
    (["--cpus-per-gpu", "4"], "--cpus-per-gpu=4 needs --gpus-per-job"),
    (["--gpus-per-job", "8", "--cpus-per-gpu", "4", "--cpus-per-task", "2"], "give CPUs per GPU, or per task"),
])
def test_cpus_per_gpu_conflicts_exit_2(tmp_path: Path, capsys, flags: list[str], expected: str) -> None:
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "shards")
    code, _, err = cli(capsys, "grid", "launch", str(grid), "--runs", str(tmp_path / "runs"),
                       "--executor", "slurm", "--dry-run", *flags)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_generations_put_parents_before_their_children() -> None:
    """Each generation becomes one array; a parent already done (absent) holds nothing back."""
    from types import SimpleNamespace as Job

    jobs = [Job(run_id="child", depends="parent"), Job(run_id="parent", depends=None),
            Job(run_id="grandchild", depends="child"), Job(run_id="other", depends="done-elsewhere")]
    assert [[j.run_id for j in g] for g in generations(jobs)] == [["parent", "other"], ["child"], ["grandchild"]]


def test_no_sbatch_on_path_is_bad_input(tmp_path: Path, capsys, monkeypatch) -> None:
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "shards")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    code, _, err = cli(capsys, "grid", "launch", str(grid), "--runs", str(tmp_path / "runs"), "--executor", "slurm")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "'sbatch' not found on PATH" in err and "--dry-run" in err
    assert not (tmp_path / "runs").exists(), "nothing written when nothing can be submitted"


@pytest.mark.parametrize("flags, expected", [
    (["--gpus-per-job", "3", "--nodes-per-job", "2"], "--gpus-per-job=3 must be a multiple of --nodes-per-job=2"),
    (["--max-parallel", "0"], "--max-parallel=0 must be >= 1"),
    (["--sbatch-extra", "qos=high"], "--sbatch-extra='qos=high' is not one sbatch option"),
    (["--sbatch-extra=--qos=high\nrm -rf ~"], "--sbatch-extra='--qos=high\\nrm -rf ~' is not one sbatch option"),
    (["--sbatch-extra=--comment=$(id)"], "is not one sbatch option"),
    (["--sbatch-extra=--qos=high --x=y"], "is not one sbatch option"),
])
def test_bad_options_exit_2(tmp_path: Path, capsys, flags: list[str], expected: str) -> None:
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "shards")
    code, _, err = cli(capsys, "grid", "launch", str(grid), "--runs", str(tmp_path / "runs"),
                       "--executor", "slurm", "--dry-run", *flags)
    assert code == 2 and expected in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.sbatch")), "a refused option writes no script"


@pytest.mark.parametrize("extra", ["--qos=high", "--qos high", "--constraint=a100,h100", "--exclusive"])
def test_one_sbatch_option_becomes_one_line(tmp_path: Path, capsys, extra: str) -> None:
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "shards")
    code, _, err = cli(capsys, "grid", "launch", str(grid), "--runs", str(tmp_path / "runs"),
                       "--executor", "slurm", "--dry-run", f"--sbatch-extra={extra}")
    assert code == 0, err
    script = next((tmp_path / "runs").rglob("*.sbatch")).read_text()
    assert f"#SBATCH {extra}\n" in script


def test_a_runs_dir_an_sbatch_line_cannot_hold_is_refused(tmp_path: Path, capsys) -> None:
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "shards")
    runs = tmp_path / "runs\nrm -rf ~"
    code, _, err = cli(capsys, "grid", "launch", str(grid), "--runs", str(runs), "--executor", "slurm", "--dry-run")
    assert code == 2 and "--runs" in err and "#SBATCH line cannot hold" in err
    assert not runs.exists()


# -- a real single-node SLURM ------------------------------------------------------------------

def wait_for(predicate, timeout: float, what: str, cluster: SlurmCluster, runs: Path):
    """Poll ``predicate`` (0.2 s) until truthy; on timeout fail with the queue and the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted(runs.glob("*/slurm-*.out")))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; queue {cluster.queue()}\n{logs}\n"
                f"{cluster.logs()}")


def curve_rows(runs: Path, run_id: str) -> int:
    return len(RunStore(runs).read_curve(run_id))


def checkpoint_step(runs: Path, run_id: str) -> int | None:
    """Step of the run's latest complete checkpoint (tag ``step00000042``), None if none."""
    if not has_checkpoint(runs / run_id):
        return None
    return int((runs / run_id / "checkpoint" / "latest").read_text().strip().removeprefix("step"))


def resumable(runs: Path, run_id: str) -> bool:
    """The moment to kill a task: a checkpoint at the curve's last row, past the first
    (log-spaced, closely packed) eval points, so the kill lands mid-training, not mid-save."""
    step = checkpoint_step(runs, run_id)
    curve = RunStore(runs).read_curve(run_id)
    return step is not None and step >= 10 and not curve.empty and step == int(curve["step"].max())


def snapshot(runs: Path, run_id: str) -> pd.DataFrame:
    """The curve rows a resume must keep as they are (up to the checkpoint's step)."""
    step = checkpoint_step(runs, run_id)
    curve = RunStore(runs).read_curve(run_id)
    return curve[curve["step"] <= step].reset_index(drop=True)


def task_state(cluster: SlurmCluster, task: str) -> str:
    return cluster.queue().get(task, ("", ""))[0]


def our_tasks_gone(cluster: SlurmCluster, tasks: list[str]) -> bool:
    return not any(task_state(cluster, t) in QUEUE_STATES for t in tasks)


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster: SlurmCluster, shards: Path, workdir: Path) -> Iterator[dict]:  # noqa: F811
    """The tiny grid through SLURM: the parent requeued mid-run, the child cancelled mid-run
    and resubmitted. The same grid runs meanwhile through the local executor. Returns what
    was observed along the way."""
    grid = write_grid(workdir / "grid.yaml", shards)
    runs, cluster = workdir / "runs", slurm_cluster
    # Every deepspeed process JIT-loads a shared-memory comm op from TORCH_EXTENSIONS_DIR; two
    # ninja versions sharing one build dir (Debian's 1.11, pip's 1.13) rebuild it on every
    # switch (minutes on a busy machine, blocking all waiters). A directory of our own, used
    # with one PATH, is built once and then only loaded. Exported to the SLURM tasks too.
    monkey = pytest.MonkeyPatch()
    monkey.setenv("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "prunelaw-test-torch-extensions"))
    log = (workdir / "local.log").open("w")
    local = subprocess.Popen([sys.executable, "-m", "engine", "grid", "launch", str(grid), "--runs",
                              str(workdir / "local"), "--executor", "local"], stdout=log,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, "SLURM_CONF": ""})
    seen: dict = {"states": set(), "runs": runs, "grid": grid, "local": workdir / "local"}
    try:
        _drive(seen, cluster, grid, runs)
        seen["local_rc"] = local.wait(timeout=300)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait()
        log.close()
        monkey.undo()
        seen["local_out"] = (workdir / "local.log").read_text()
    yield seen


def _drive(seen: dict, cluster: SlurmCluster, grid: Path, runs: Path) -> None:
    launch = ["grid", "launch", str(grid), "--runs", str(runs), "--executor", "slurm",
              "--partition", cluster.partition, "--time", "10:00", "--max-parallel", "2"]
    seen["launch1"] = engine(launch)
    rec = {rid: read_record(runs, rid) for rid in RunStore(runs).run_ids()}
    parent, child = sorted(rec, key=lambda r: rec[r]["generation"])
    seen.update(parent=parent, child=child, first=rec)

    def observe(predicate):
        def poll():
            seen["states"] |= set(queue_states(runs).items())
            return predicate()
        return poll

    # The scheduler requeues the parent mid-run (as on preemption). SLURM holds a requeued
    # job back for two minutes; once it is pending again, let it start at once.
    task = rec[parent]["job_id"]
    wait_for(observe(lambda: resumable(runs, parent)), 300, "the parent to checkpoint", cluster, runs)
    cluster.run("scontrol", "requeue", task)
    seen["parent_kept"] = snapshot(runs, parent)
    wait_for(lambda: task_state(cluster, task) == "PENDING", 60, "the parent to be requeued", cluster, runs)
    job_id = cluster.run("squeue", "--noheader", "--format=%A", f"--jobs={task}").stdout.strip()
    slurmd_log = cluster.root / "log" / "slurmd.log"
    wait_for(lambda: f"[{job_id}.batch] done with job" in slurmd_log.read_text(), 60, "the first attempt to end",
             cluster, runs)
    time.sleep(2)  # slurmd refuses a credential issued in the second its predecessor was revoked
    cluster.run("scontrol", "update", f"jobid={task}", "StartTime=now")
    # The child is cancelled mid-run through `engine grid cancel`, then the grid is relaunched.
    wait_for(observe(lambda: resumable(runs, child)), 300, "the child to checkpoint", cluster, runs)
    seen["cancel"] = engine(["grid", "cancel", str(grid), "--runs", str(runs), "--executor", "slurm"])
    wait_for(lambda: our_tasks_gone(cluster, [rec[child]["job_id"]]), 60, "the cancel", cluster, runs)
    seen["child_kept"] = snapshot(runs, child)
    seen["child_status_after_cancel"] = RunStore(runs).status(child)
    seen["launch2"] = engine(launch)
    seen["second"] = read_record(runs, child)
    wait_for(observe(lambda: RunStore(runs).status(child) in ("done", "failed")), 300, "the resubmitted child",
             cluster, runs)
    # The run store says done a moment before the task itself ends (final save, launcher exit).
    wait_for(lambda: our_tasks_gone(cluster, [seen["second"]["job_id"]]), 60, "the last task to end", cluster, runs)


@pytest.mark.slow
@pytest.mark.slurm
def test_requeued_and_resubmitted_tasks_resume_without_gaps_or_duplicates(slurm_run: dict) -> None:
    runs, parent, child = slurm_run["runs"], slurm_run["parent"], slurm_run["child"]
    assert slurm_run["launch1"] == 0 and slurm_run["cancel"] == 0 and slurm_run["launch2"] == 0
    store = RunStore(runs)
    assert store.status(parent) == "done" and store.status(child) == "done"
    assert slurm_run["child_status_after_cancel"] == "running"  # killed, so never marked done
    for run_id, kept in ((parent, slurm_run["parent_kept"]), (child, slurm_run["child_kept"])):
        curve = store.read_curve(run_id)
        steps = curve["step"].tolist()
        assert steps == sorted(set(steps)) and len(steps) == 7, f"{run_id}: steps {steps}"  # 0 + 6 points
        # Killed mid-run for real, then resumed, not restarted: the rows up to the checkpoint
        # are the first attempt's own (a fresh start would re-time them).
        assert 2 <= len(kept) < 7
        pd.testing.assert_frame_equal(curve.iloc[:len(kept)].reset_index(drop=True), kept)
    # The parent ran again inside its array task (attempt 2); the child in a new array.
    parent_log = Path(slurm_run["first"][parent]["log"]).read_text()
    assert "attempt 2" in parent_log
    second = slurm_run["second"]
    assert second["array_job_id"] != slurm_run["first"][child]["array_job_id"]
    assert second["history"][-1]["job_id"] == slurm_run["first"][child]["job_id"]
    assert second["dependency"] == [], "the parent was done: the resubmitted child waits for nothing"


@pytest.mark.slow
@pytest.mark.slurm
def test_children_wait_for_their_parent_and_status_shows_the_queue(slurm_run: dict) -> None:
    first, parent, child = slurm_run["first"], slurm_run["parent"], slurm_run["child"]
    assert first[child]["dependency"] == [first[parent]["job_id"]]
    states = slurm_run["states"]
    assert (parent, "running") in states and (child, "running") in states
    assert (child, "queued") in states, "the child is queued while its parent runs"


@pytest.mark.slow
@pytest.mark.slurm
def test_a_done_grid_submits_nothing(slurm_run: dict, slurm_cluster: SlurmCluster, capsys) -> None:
    code, out, _ = cli(capsys, "grid", "launch", str(slurm_run["grid"]), "--runs", str(slurm_run["runs"]),
                       "--executor", "slurm")
    assert code == 0 and "all 2 jobs are done: nothing submitted" in out
    assert not [t for t, (s, _) in slurm_cluster.queue().items() if s in QUEUE_STATES]


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_store_equals_local_store(slurm_run: dict) -> None:
    assert slurm_run["local_rc"] == 0, slurm_run["local_out"]
    slurm_store, local_store = RunStore(slurm_run["runs"]), RunStore(slurm_run["local"])
    assert slurm_store.run_ids() == local_store.run_ids()
    for run_id in local_store.run_ids():
        a, b = slurm_store.read_curve(run_id), local_store.read_curve(run_id)
        pd.testing.assert_series_equal(a["step"], b["step"])
        pd.testing.assert_series_equal(a["tokens"], b["tokens"])
        pd.testing.assert_series_equal(a["eval_loss"], b["eval_loss"], rtol=2e-3, atol=2e-3)
        meta_slurm, meta_local = slurm_store.read(run_id)["meta"], local_store.read(run_id)["meta"]
        assert meta_slurm.keys() == meta_local.keys()
        for key, value in meta_local.items():
            if key == "source":  # a run:<id> parent lives in each store's own directory
                rel = {k: str(v).replace(str(slurm_run["runs"]), "STORE") for k, v in meta_slurm[key].items()}
                assert rel == {k: str(v).replace(str(slurm_run["local"]), "STORE") for k, v in value.items()}
            elif key == "precision_reason":  # the timing behind it is measured per process
                assert meta_slurm[key].split(" (")[0] == value.split(" (")[0], key
            elif isinstance(value, float):
                assert meta_slurm[key] == pytest.approx(value, rel=1e-3), key
            else:
                assert meta_slurm[key] == value, key


@pytest.mark.slow
@pytest.mark.slurm
def test_unknown_partition_passes_slurms_message(slurm_cluster: SlurmCluster, tmp_path: Path, capsys) -> None:
    grid = write_grid(tmp_path / "g.yaml", tmp_path / "shards")
    before = set(slurm_cluster.queue())
    code, _, err = cli(capsys, "grid", "launch", str(grid), "--runs", str(tmp_path / "runs"),
                       "--executor", "slurm", "--partition", "nosuchpart")
    assert code == 2
    assert "invalid partition specified: nosuchpart" in err.lower()
    assert not list((tmp_path / "runs").glob(f"*/{LEDGER}")), "nothing recorded for a refused submission"
    assert set(slurm_cluster.queue()) == before, "no orphan (held) array left behind"
