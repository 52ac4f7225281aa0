"""Distributed correctness on CPU (gloo): 2 processes through the ``deepspeed`` launcher train
the same curve as 1 process at the same global batch, at ZeRO-1/2/3, with KD under ZeRO-3,
across a SIGKILL + resume, and with activation checkpointing on.

The recipe reads the GLOBAL micro-batch stream (micro_batch x world rows per draw) on every
rank and keeps its slice (``engine.train.sources.ShardData.train_batches``), so 1 process at
micro_batch 4 and 2 processes at micro_batch 2 read the same sequences by construction, both
with grad_accum 2: rank 0 trains on rows 0-1 and rank 1 on rows 2-3 of what the single
process trains on. What differs is only the order of float sums (all-reduce, sharded eval).
The pairing must keep micro_batch x world equal, not only the global batch: the loader draws
each draw's domain mix for the rows it is asked for (``data.loader``), so two draws of 4 rows
are other sequences than one draw of 8 (measured: 0.7% apart in eval_loss after 12 steps).

One fixture runs every reference job in this process (world 1) and every 2-process job in
ONE launch (the worker runs a list of jobs in one process group); the kill/resume case adds
two launches (killed, resumed) and compares with its uninterrupted twin from the first.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data.runs import RunStore
from engine.train.config import dump_job
from engine.train.recipe import run_job
from engine.train.runtime import SHM_BUFFER, shm_buffer_path
from test_train_launcher import ROOT, SEQ, clean_env, engine_train, job_file, shards  # noqa: F401 (fixture)

GLOBAL = 8
"""Sequences per optimizer step, equal in every pairing (micro_batch x grad_accum x world)."""
STEPS = 12
STAGES = (1, 2, 3)
LONG_STEPS = 40
"""The kill/resume job: long enough that a kill after its first checkpoint lands mid-run."""
CURVE_RTOL = 1e-4
"""Measured (fp32, this file's jobs, 2-core CPU): the largest relative difference between the
1- and 2-process curves was 1.0e-6 (KD train_loss at ZeRO-3); LM eval/train losses at ZeRO-1/2/3
differed by <= 7e-8, and the resumed and activation-checkpointed curves were bitwise equal to
their twins. 100x margin for other CPUs' summation orders, still far below a real error: a
different set of sequences moves eval_loss by 7e-3 after 12 steps (module docstring)."""


def _ds(stage: int, micro_batch: int, grad_accum: int, **extra) -> dict:
    return {"zero_stage": stage, "precision": "fp32", "micro_batch": micro_batch, "grad_accum": grad_accum, **extra}


def _one_and_two(root, shards, name: str, stage: int, steps: int = STEPS, ds: dict | None = None, **over):
    """The same job for 1 process (micro-batch 4) and 2 processes (2 each), both accumulating 2."""
    common = {"tokens": steps * GLOBAL * SEQ, "eval": {"points": 4, "max_sequences": 16}, **over}
    one = job_file(root / f"{name}-1.yaml", root / "one", shards, deepspeed=_ds(stage, 4, 2, **(ds or {})), **common)
    two = job_file(root / f"{name}-2.yaml", root / "two", shards, deepspeed=_ds(stage, 2, 2, **(ds or {})), **common)
    return one, two


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shards, dist):
    """name -> (1-process job, 2-process job), every job run to completion."""
    root = tmp_path_factory.mktemp("distributed")
    pairs = {f"zero{s}": _one_and_two(root, shards, f"zero{s}", s, save_model=s == 1) for s in STAGES}
    parent = pairs["zero1"][0][1]  # the 1-process ZeRO-1 pretraining run is the KD parent
    pairs["kd"] = _one_and_two(root, shards, "kd", 3, parent=str(parent.run_dir / "model"), init="pruned",
                               method="width", ratio=0.3, objective="kd", kd={"temperature": 2.0})
    for (_, job), _ in pairs.values():  # in order: the parent is saved before the KD job loads it
        assert run_job(job, dist) == "done", job.run_id
    # Same jobs, other stores (their run ids are the same): the activation-checkpointing twin
    # of the 2-process ZeRO-3 job, and the uninterrupted twin of the kill/resume job.
    ac = job_file(root / "ac.yaml", root / "ac", shards, tokens=STEPS * GLOBAL * SEQ,
                  eval={"points": 4, "max_sequences": 16}, deepspeed=_ds(3, 2, 2, activation_checkpointing=True))
    long = job_file(root / "long.yaml", root / "twin", shards, tokens=LONG_STEPS * GLOBAL * SEQ,
                    eval={"points": 4, "max_sequences": 16}, deepspeed=_ds(3, 2, 2))
    paths = [str(two[0]) for _, two in pairs.values()] + [str(ac[0]), str(long[0])]
    before = _shm_segments()
    done = engine_train("--config", *paths, "--procs", "2", timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"pairs": {k: (one[1], two[1]) for k, (one, two) in pairs.items()}, "ac": ac[1], "long": long,
            "root": root, "shm_left": _shm_segments() - before}


def _shm_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(f"{SHM_BUFFER}_*")} if Path("/dev/shm").is_dir() else set()


def _curve(job):
    return RunStore(job.runs_dir).read_curve(job.run_id).sort_values("step").reset_index(drop=True)


def _rel_diff(a, b, column: str) -> float:
    """Largest |a - b| / |a| over the rows where both are defined (train_loss is NaN at step 0)."""
    x, y = a[column].to_numpy(float), b[column].to_numpy(float)
    both = ~(np.isnan(x) | np.isnan(y))
    assert (np.isnan(x) == np.isnan(y)).all() and both.any(), (column, x, y)
    return float(np.max(np.abs(x[both] - y[both]) / np.abs(x[both])))


def _assert_same_curve(a, b) -> None:
    assert a["step"].tolist() == b["step"].tolist() and a["tokens"].tolist() == b["tokens"].tolist()
    for column in ("eval_loss", "eval_loss.code", "eval_loss.books", "train_loss"):
        assert _rel_diff(a, b, column) < CURVE_RTOL, (column, a[column].tolist(), b[column].tolist())


@pytest.mark.multiproc
@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_two_processes_match_one_at_every_zero_stage(trained, stage):
    one, two = trained["pairs"][f"zero{stage}"]
    record = RunStore(two.runs_dir).read(two.run_id)
    assert record["status"] == "done" and record["world_size"] == 2
    assert record["deepspeed_json"]["zero_optimization"]["stage"] == stage
    a, b = _curve(one), _curve(two)
    assert a["eval_loss"].iloc[-1] < a["eval_loss"].iloc[0] - 0.1  # the curve moves: equality means something
    _assert_same_curve(a, b)


@pytest.mark.multiproc
@pytest.mark.slow
def test_kd_under_zero3_on_two_processes_matches_one(trained):
    one, two = trained["pairs"]["kd"]
    record = RunStore(two.runs_dir).read(two.run_id)
    assert record["meta"]["objective"] == "kd" and record["world_size"] == 2
    a, b = _curve(one), _curve(two)
    assert a["train_loss"].dropna().iloc[-1] < a["train_loss"].dropna().iloc[0]  # the KL to the teacher falls
    _assert_same_curve(a, b)


@pytest.mark.multiproc
@pytest.mark.slow
def test_activation_checkpointing_keeps_the_loss(trained):
    _, plain = trained["pairs"]["zero3"]
    ac = trained["ac"]
    assert ac.run_id == plain.run_id  # a memory option, not a different run
    assert RunStore(ac.runs_dir).read(ac.run_id)["config"]["deepspeed"]["activation_checkpointing"] is True
    _assert_same_curve(_curve(plain), _curve(ac))


def _optimizer_shards(tag_dir) -> int:
    return len(list(tag_dir.glob("*optim_states.pt"))) if tag_dir.is_dir() else 0


@pytest.mark.multiproc
@pytest.mark.slow
def test_sigkill_after_a_checkpoint_resumes_to_the_uninterrupted_curve(trained, shards):
    _, twin = trained["long"]
    runs = trained["root"] / "killed"
    job = dataclasses.replace(twin, runs_dir=str(runs))
    killed_yaml = dump_job(job, trained["root"] / "killed.yaml")
    cmd = [sys.executable, "-m", "engine", "train", "--config", str(killed_yaml), "--procs", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = job.run_dir / "checkpoint" / "latest"
    deadline = time.time() + 240
    # Both ranks' ZeRO shards of the tag must be on disk: rank 0 writes `latest` without waiting
    # for rank 1 (deepspeed's save_checkpoint), so an earlier kill tests a different race.
    while time.time() < deadline and proc.poll() is None and not (
            latest.is_file() and _optimizer_shards(latest.parent / latest.read_text().strip()) == 2):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both workers, mid-run
    proc.wait()
    store = RunStore(runs)
    assert store.status(job.run_id) == "running", "the run finished before the kill: lengthen LONG_STEPS"
    killed = store.read_curve(job.run_id)["step"].tolist()
    done = engine_train("--config", str(killed_yaml), "--procs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed, reference = _curve(job), _curve(twin)
    assert store.status(job.run_id) == "done" and resumed["step"].is_unique
    assert set(killed) < set(resumed["step"])  # rows kept, the rest recomputed, none twice
    _assert_same_curve(reference, resumed)


def test_activation_checkpointing_recomputes_the_layers(dist, mem_data):
    """The option reaches the model: with it, a decoder layer runs again in the backward pass."""
    from engine.models import load_model
    from engine.train.config import job_from_dict
    from engine.train.objectives import lm_loss
    from engine.train.recipe import build_engine

    calls = {}
    for on in (False, True):
        job = job_from_dict({"parent": "tiny-llama", "tokens": 10_000, "data": {"shards": "mem"},
                             "deepspeed": {"micro_batch": 4, "activation_checkpointing": on}})
        engine, _ = build_engine(job, load_model("tiny-llama", vocab=mem_data.vocab_size, seed=0), dist, SEQ)
        count = []
        # transformers checkpoints the layer's forward, not its __call__ (its own hooks run once):
        # the layer's first submodule is called again when the backward pass recomputes it
        engine.module.model.layers[0].input_layernorm.register_forward_pre_hook(lambda *_: count.append(1))
        engine.train()
        engine.backward(lm_loss(engine, mem_data.train[:4]))
        calls[on] = len(count)
        engine.destroy()
    assert calls == {False: 1, True: 2}


@pytest.mark.multiproc
@pytest.mark.slow
def test_jobs_leave_no_shared_memory_behind(trained, dist):
    """DeepSpeed's CPU all-reduce segments (69 MB each) are unlinked once mapped: neither this
    process's nor a 2-process launch's stay in /dev/shm, where they would hold RAM for good."""
    assert trained["shm_left"] == set()
    assert not shm_buffer_path(dist.rank).exists()
