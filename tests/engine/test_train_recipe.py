"""The recipe in one process: prune -> train through deepspeed.initialize -> eval curve.

Tiny transformers Llama (2 layers, hidden 64, GQA) on a structured in-memory corpus that a
model this size learns within a few dozen steps; every job runs the real DeepSpeed engine.
"""


import pandas as pd
import pytest

from data.runs import META_COLUMNS, RunStore
from engine.train.config import job_from_dict
from engine.train.recipe import run_job
from train_fakes import MemData

SEQ, MB = 32, 8
STEP_TOKENS = SEQ * MB


@pytest.fixture(scope="module")
def dist():
    from engine.train.runtime import init_distributed

    return init_distributed()


@pytest.fixture(scope="module")
def data():
    return MemData(seq_len=SEQ)


def make_job(runs, **over):
    base = {"parent": "tiny-llama", "tokens": 40 * STEP_TOKENS, "runs_dir": str(runs), "data": {"shards": "mem"},
            "eval": {"points": 4, "max_sequences": 16}, "deepspeed": {"micro_batch": MB},
            "optim": {"lr": 3e-3, "warmup_frac": 0.05}}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return job_from_dict(base)


@pytest.fixture(scope="module")
def parent(tmp_path_factory, dist, data):
    """A tiny parent pretrained by the recipe itself and saved with save_pretrained."""
    runs = tmp_path_factory.mktemp("runs")
    job = make_job(runs, init="random", tokens=80 * STEP_TOKENS, save_model=True)
    assert run_job(job, dist, data) == "done"
    return runs, job


def test_pretraining_saves_a_parent_and_logs_its_curve(parent):
    runs, job = parent
    store = RunStore(runs)
    record = store.read(job.run_id)
    assert record["status"] == "done" and (runs / job.run_id / "model" / "config.json").is_file()
    curve = store.read_curve(job.run_id)
    assert curve["tokens"].tolist()[0] == 0 and curve["tokens"].iloc[-1] == 80 * STEP_TOKENS
    assert curve["eval_loss"].iloc[-1] < curve["eval_loss"].iloc[0] - 1.0  # it learnt the rule
    assert not (runs / job.run_id / "checkpoint").exists()  # done runs drop their resume point


def test_pruned_lm_job_fills_every_metadata_column(parent, dist, data):
    runs, pre = parent
    job = make_job(runs, parent=f"run:{pre.run_id}", method="width", ratio=0.3)
    assert run_job(job, dist, data) == "done"
    store = RunStore(runs)
    meta = store.read(job.run_id)["meta"]
    assert all(meta.get(c) is not None for c in META_COLUMNS), meta
    assert meta["params_after"] < meta["params_before"] and 0.15 < meta["ratio"] < 0.45
    parent_final = store.read_curve(pre.run_id)["eval_loss"].iloc[-1]
    assert meta["loss_before"] == pytest.approx(parent_final, rel=1e-5)  # L0 = the parent's own final loss
    curve = store.read_curve(job.run_id)
    assert curve["step"].is_unique and list(curve["tokens"]) == [s * STEP_TOKENS for s in curve["step"]]
    assert {"eval_loss.code", "eval_loss.books"} <= set(curve.columns)
    row0 = curve.iloc[0]
    assert row0["tokens"] == 0 and row0["eval_loss"] > meta["loss_before"]  # pruning hurt
    assert curve["eval_loss"].iloc[-1] < row0["eval_loss"]  # post-training recovers
    lo, hi = sorted([row0["eval_loss.code"], row0["eval_loss.books"]])
    assert lo <= row0["eval_loss"] <= hi  # token-weighted mean of the domains


def test_random_init_has_the_pruned_shape_and_fresh_weights(parent, dist, data):
    runs, pre = parent
    pruned = make_job(runs, parent=f"run:{pre.run_id}", method="depth-last", ratio=0.4, tokens=4 * STEP_TOKENS,
                      save_model=True)
    scratch = make_job(runs, parent=f"run:{pre.run_id}", method="depth-last", ratio=0.4, tokens=4 * STEP_TOKENS,
                       save_model=True, init="random")
    assert run_job(pruned, dist, data) == run_job(scratch, dist, data) == "done"
    store = RunStore(runs)
    a, b = store.read(pruned.run_id)["meta"], store.read(scratch.run_id)["meta"]
    assert a["params_after"] == b["params_after"] and a["init"] == "pruned" and b["init"] == "random"
    from transformers import AutoModelForCausalLM

    ma = AutoModelForCausalLM.from_pretrained(runs / pruned.run_id / "model")
    mb = AutoModelForCausalLM.from_pretrained(runs / scratch.run_id / "model")
    assert ma.config.num_hidden_layers == mb.config.num_hidden_layers == 1
    assert [p.shape for p in ma.parameters()] == [p.shape for p in mb.parameters()]
    # the scratch control starts near log(vocab), far above the pruned model
    assert store.read_curve(scratch.run_id)["eval_loss"].iloc[0] > store.read_curve(pruned.run_id)["eval_loss"].iloc[0]


def test_two_four_masks_survive_training(parent, dist, data):
    from engine.pruning.sparse_common import check_n_m, target_weights

    runs, pre = parent
    job = make_job(runs, parent=f"run:{pre.run_id}", method="2:4-magnitude", ratio=0.45, tokens=10 * STEP_TOKENS,
                   prune_args={"tolerance": 0.5}, save_model=True)
    assert run_job(job, dist, data) == "done"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(runs / job.run_id / "model")
    weights = target_weights(model)
    assert weights and all(check_n_m(w != 0) for w in weights.values())


def test_kd_loss_goes_down(parent, dist, data):
    runs, pre = parent
    job = make_job(runs, parent=f"run:{pre.run_id}", method="width", ratio=0.3, objective="kd",
                   kd={"temperature": 2.0}, tokens=30 * STEP_TOKENS, eval={"points": 3})
    assert run_job(job, dist, data) == "done"
    curve = RunStore(runs).read_curve(job.run_id)
    train = curve["train_loss"].dropna()
    assert train.iloc[-1] < 0.7 * train.iloc[0]  # the KL to the teacher shrinks
    assert curve["eval_loss"].iloc[-1] < curve["eval_loss"].iloc[0]


def test_recon_trains_kept_blocks_towards_the_parent(parent, dist, data):
    runs, pre = parent
    job = make_job(runs, parent=f"run:{pre.run_id}", method="unstructured-magnitude", ratio=0.3,
                   objective="recon", tokens=20 * STEP_TOKENS, eval={"points": 3})
    assert run_job(job, dist, data) == "done"
    curve = RunStore(runs).read_curve(job.run_id)
    train = curve["train_loss"].dropna()
    assert train.iloc[-1] < train.iloc[0]  # block-output MSE falls


def test_divergence_ends_as_failed_with_reason(parent, dist, data):
    runs, pre = parent
    job = make_job(runs, parent=f"run:{pre.run_id}", method="width", ratio=0.3, tokens=12 * STEP_TOKENS,
                   optim={"lr": 50.0, "warmup_frac": 0.0, "grad_clip": 0.0}, eval={"points": 6})
    assert run_job(job, dist, data) == "failed"
    record = RunStore(runs).read(job.run_id)
    assert record["status"] == "failed" and record["reason"].startswith("diverged: ")


def test_done_run_is_never_rerun(parent, dist, data):
    runs, pre = parent
    before = RunStore(runs).read(pre.run_id)
    assert run_job(pre, dist, data) == "skipped"
    assert RunStore(runs).read(pre.run_id) == before


def test_resume_after_interruption_has_no_gap_or_duplicate(tmp_path, parent, dist, data, monkeypatch):
    runs, pre = parent
    job = make_job(tmp_path, parent=str(runs / pre.run_id / "model"), method="width", ratio=0.3,
                   tokens=24 * STEP_TOKENS, eval={"points": 6})
    from engine.train import recipe

    real_step, calls = recipe._train_step, {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt  # the "kill": no chance to finish the eval interval
        return real_step(*args, **kwargs)

    monkeypatch.setattr(recipe, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, dist, data)
    store = RunStore(tmp_path)
    assert store.status(job.run_id) == "failed"
    killed_steps = store.read_curve(job.run_id)["step"].tolist()
    monkeypatch.setattr(recipe, "_train_step", real_step)
    assert run_job(job, dist, data) == "done"
    curve = store.read_curve(job.run_id)
    reference = make_job(tmp_path / "ref", parent=job.parent, method="width", ratio=0.3,
                         tokens=24 * STEP_TOKENS, eval={"points": 6})
    assert run_job(reference, dist, data) == "done"
    ref = RunStore(tmp_path / "ref").read_curve(reference.run_id)
    assert set(killed_steps) < set(curve["step"]) and curve["step"].is_unique
    assert curve["step"].tolist() == ref["step"].tolist()
    pd.testing.assert_series_equal(curve["eval_loss"], ref["eval_loss"], rtol=1e-4)


def test_no_eval_point_before_the_weights_move(tmp_path, dist, data):
    """DeepSpeed's warm-up runs the first step at lr 0: an eval there would repeat the step-0
    loss and hand the fit a fake flat point. The first eval after step 0 must come
    after an update with lr > 0, and no row may repeat the step-0 loss."""
    job = make_job(tmp_path, tokens=12 * STEP_TOKENS, eval={"points": 6})
    assert run_job(job, dist, data) == "done"
    curve = RunStore(tmp_path).read_curve(job.run_id).sort_values("step")
    start = curve["eval_loss"].iloc[0]
    later = curve[curve["step"] > 0]
    assert curve["step"].iloc[0] == 0 and len(later) >= 3
    assert later["step"].min() >= 2  # step 1 ran at lr 0 and is never an eval point
    assert (later["eval_loss"] - start).abs().min() > 1e-6


def test_precision_auto_trains_fp32_on_cpu_and_says_why(tmp_path, dist, data, capfd):
    job = make_job(tmp_path, tokens=4 * STEP_TOKENS, deepspeed={"zero_stage": 1})
    assert job.deepspeed.precision == "auto"
    assert run_job(job, dist, data) == "done"
    record = RunStore(tmp_path).read(job.run_id)
    assert record["config"]["deepspeed"]["precision"] == "fp32"
    assert "bf16" not in record["deepspeed_json"]
    assert "precision auto: fp32 on CPU" in capfd.readouterr().out


def test_zero_stage_auto_is_resolved_recorded_and_kept_on_resume(tmp_path, dist, data):
    """On this CPU an unset stage trains at 0 (run.json says so and why); on a GPU (the device
    kind injected: no CUDA needed) it would be 1; a resumed run keeps what its first attempt chose."""
    import dataclasses

    import torch

    from engine.train.recipe import with_resolved_zero_stage

    job = make_job(tmp_path, tokens=4 * STEP_TOKENS)
    gpu = dataclasses.replace(dist, device=torch.device("cuda", 0))
    resolved, why = with_resolved_zero_stage(job, gpu, None)
    assert resolved.deepspeed.zero_stage == 1 and why.startswith("auto: 1 on cuda")
    assert resolved.run_id == job.run_id
    assert run_job(job, dist, data) == "done"
    record = RunStore(tmp_path).read(job.run_id)
    assert record["config"]["deepspeed"]["zero_stage"] == 0
    assert record["deepspeed_json"]["zero_optimization"]["stage"] == 0
    assert record["meta"]["zero_stage_reason"] == "auto: 0 on CPU (precision auto trains fp32 there)"
    kept, why = with_resolved_zero_stage(job, gpu, record)  # its checkpoint is laid out for 0
    assert kept.deepspeed.zero_stage == 0 and "first attempt" in why


def test_a_kill_between_shards_and_latest_or_a_lost_shard_resumes_from_a_complete_tag(
        tmp_path, parent, dist, data, monkeypatch):
    """``latest`` moves only once every file of a tag is written; a tag whose files no longer
    match its manifest is skipped for the newest complete one, and the curve ends as if the run
    had never been interrupted."""
    import json

    from deepspeed.runtime.engine import DeepSpeedEngine

    from engine.train import checkpoint

    runs, pre = parent
    kw = dict(parent=str(runs / pre.run_id / "model"), method="width", ratio=0.3, tokens=24 * STEP_TOKENS,
              eval={"points": 6}, deepspeed={"zero_stage": 1})
    job = make_job(tmp_path, **kw)
    real_save, saves = DeepSpeedEngine.save_checkpoint, []

    def killed_after_second_save(self, *args, **kwargs):
        assert kwargs.get("save_latest") is False  # DeepSpeed would write latest before the last rank's shard
        done = real_save(self, *args, **kwargs)
        saves.append(kwargs["tag"])
        if len(saves) == 2:
            raise KeyboardInterrupt  # the shards are on disk; the manifest and latest are not
        return done

    monkeypatch.setattr(DeepSpeedEngine, "save_checkpoint", killed_after_second_save)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, dist, data)
    monkeypatch.setattr(DeepSpeedEngine, "save_checkpoint", real_save)
    root = checkpoint.checkpoint_dir(job.run_dir)
    first, second = saves
    assert (root / "latest").read_text() == first and checkpoint.resume_tag(job.run_dir) == first
    assert not (root / second / checkpoint.MANIFEST).exists()
    # Now the torn case the old order allowed: latest names a tag one of whose shards is gone.
    manifest = {p.name: p.stat().st_size for p in (root / second).iterdir()}
    (root / second / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    (root / "latest").write_text(second)
    assert checkpoint.resume_tag(job.run_dir) == second
    (root / second / "zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    assert checkpoint.resume_tag(job.run_dir) == first
    assert run_job(job, dist, data) == "done"
    curve = RunStore(tmp_path).read_curve(job.run_id)
    reference = make_job(tmp_path / "ref", **kw)
    assert run_job(reference, dist, data) == "done"
    ref = RunStore(tmp_path / "ref").read_curve(reference.run_id)
    assert curve["step"].is_unique and curve["step"].tolist() == ref["step"].tolist()
    pd.testing.assert_series_equal(curve["eval_loss"], ref["eval_loss"], rtol=1e-4)


def _live_tensors() -> dict[int, tuple[int, tuple, "object"]]:
    """Every tensor storage Python can reach: data pointer -> (bytes, a shape, dtype)."""
    import gc
    import warnings

    import torch

    live = {}
    with warnings.catch_warnings():  # isinstance on some library objects warns of deprecations
        warnings.simplefilter("ignore")
        objects = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in objects:
        if obj.device.type == "cpu" and obj.numel():
            storage = obj.untyped_storage()
            live[storage.data_ptr()] = (storage.nbytes(), tuple(obj.shape), obj.dtype)
    return live


def parent_copies_and_bytes(parent_shapes: list[tuple]) -> tuple[int, int]:
    """(how many full copies of the parent are alive, bytes of all live tensors): a copy is one
    tensor of each of the parent's parameter shapes, so a pruned student (narrower) is none."""
    from collections import Counter

    live = _live_tensors()
    shapes = Counter(shape for _, shape, _ in live.values())
    needed = Counter(parent_shapes)
    return min(shapes[s] // n for s, n in needed.items()), sum(b for b, _, _ in live.values())


def test_a_kd_job_never_holds_two_copies_of_the_parent(tmp_path, parent, dist, data, monkeypatch):
    """Sampled at pruning, at deepspeed.initialize and at the first training step: at most one
    full parent is alive (the one being pruned, later the teacher), and the teacher trains in
    the student's precision."""
    import torch

    from engine.models import load_model
    from engine.train import recipe

    runs, pre = parent
    full = load_model(runs / pre.run_id / "model")
    shapes = [tuple(p.shape) for p in full.parameters()]
    parent_bytes = sum(p.numel() * 4 for p in full.parameters())
    del full
    _, before = parent_copies_and_bytes(shapes)  # the corpus and whatever else is already alive
    samples: dict[str, tuple[int, int]] = {}

    def sampled(name, fn):
        def wrapper(*args, **kwargs):
            samples.setdefault(name, parent_copies_and_bytes(shapes))
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(recipe, "prune", sampled("pruning", recipe.prune))
    monkeypatch.setattr(recipe, "build_engine", sampled("initialize", recipe.build_engine))
    real_objective, teachers = recipe.make_objective, []

    def objective(job, teacher, student, choices):
        teachers.append((teacher.dtype, next(student.parameters()).dtype))  # as it was loaded
        return sampled("training", real_objective(job, teacher, student, choices))

    monkeypatch.setattr(recipe, "make_objective", objective)
    job = make_job(tmp_path, parent=str(runs / pre.run_id / "model"), method="width", ratio=0.3, objective="kd",
                   tokens=2 * STEP_TOKENS, eval={"points": 1}, deepspeed={"precision": "bf16", "zero_stage": 1})
    assert run_job(job, dist, data) == "done"
    grown = {k: round((b - before) / parent_bytes, 2) for k, (_, b) in samples.items()}
    print("full parent copies, live bytes / fp32 parent:", {k: (c, grown[k]) for k, (c, _) in samples.items()})
    assert teachers == [(torch.bfloat16, torch.bfloat16)]
    assert {k: copies for k, (copies, _) in samples.items()} == {"pruning": 1, "initialize": 0, "training": 1}
    # Measured on the tiny parent: before the teacher was loaded after initialize, a deep copy of
    # the fp32 parent sat next to it: pruning 2.0x, initialize 1.69x, training 1.56x; now 1.0x,
    # 0.69x (the pruned student alone) and 1.56x (its bf16 weights, fp32 masters, a bf16 teacher).
    assert grown["pruning"] < 1.1 and grown["initialize"] < 1.0 and max(grown.values()) < 1.8


def test_a_failure_is_recorded_once_and_before_run_json_exists(tmp_path, dist, data, monkeypatch):
    """A job that cannot start (a missing run:<id> parent) gets a run.json saying why, written
    once by its run log; the worker reports it without writing the run again."""
    from data.cli import BadInput
    from engine.train import worker

    job = make_job(tmp_path, parent="run:nowhere", tokens=4 * STEP_TOKENS)
    writes = []
    real_write = RunStore.write
    monkeypatch.setattr(RunStore, "write", lambda self, run_id, record: (writes.append(record["status"]),
                                                                        real_write(self, run_id, record)))
    with pytest.raises(BadInput):
        run_job(job, dist, data)
    record = RunStore(tmp_path).read(job.run_id)
    assert writes == ["failed"] and record["failure"] and record["config"]["parent"] == "run:nowhere"
    monkeypatch.setattr("engine.train.recipe.run_job", lambda job, dist: (_ for _ in ()).throw(BadInput("no")))
    assert worker._run_one(job, dist) == "failed" and writes == ["failed"]


def test_a_kill_between_eval_points_resumes_from_the_wall_clock_checkpoint(tmp_path, parent, dist, data, monkeypatch):
    """``checkpoint_every_s`` saves between the log-spaced eval points; a run killed there
    resumes from that step and its curve is the uninterrupted run's, row for row."""
    from engine.train import checkpoint, recipe
    from engine.train.schedule import eval_steps

    runs, pre = parent
    over = dict(parent=str(runs / pre.run_id / "model"), method="width", ratio=0.3, tokens=24 * STEP_TOKENS,
                eval={"points": 4})
    job = make_job(tmp_path, checkpoint_every_s=1e-6, **over)  # due at every step boundary
    assert job.run_id == make_job(tmp_path, **over).run_id  # when it saves is not part of the run id
    real_step, calls = recipe._train_step, {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(recipe, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, dist, data)
    assert 19 not in eval_steps(24, 4)
    assert checkpoint.resume_tag(job.run_dir) == "step00000019"
    monkeypatch.setattr(recipe, "_train_step", real_step)
    assert run_job(job, dist, data) == "done"
    reference = make_job(tmp_path / "ref", **over)
    assert run_job(reference, dist, data) == "done"
    curve = RunStore(tmp_path).read_curve(job.run_id)
    ref = RunStore(tmp_path / "ref").read_curve(reference.run_id)
    assert curve["step"].tolist() == ref["step"].tolist() and curve["step"].is_unique
    pd.testing.assert_series_equal(curve["eval_loss"], ref["eval_loss"], rtol=1e-4)
    pd.testing.assert_series_equal(curve["train_loss"], ref["train_loss"], rtol=1e-4)
