"""Job configs, the DeepSpeed JSON, the eval schedule: torch-free checks a user would hit."""

import pytest
import yaml

from data.cli import BadInput
from engine.train.config import job_from_dict, load_job
from engine.train.dsconfig import build_ds_config, optimizer_steps
from engine.train.schedule import eval_steps

BASE = {"parent": "tiny-llama", "tokens": "64K", "data": {"shards": "shards/x"}}


def test_unknown_key_lists_allowed_keys(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**BASE, "learning_rate": 1e-3}))
    with pytest.raises(BadInput, match=r"unknown key\(s\) learning_rate in job; allowed: parent, tokens, data"):
        load_job(path)


def test_unknown_nested_key_names_the_section():
    with pytest.raises(BadInput, match=r"deepspeed; allowed: zero_stage, precision, micro_batch, grad_accum"):
        job_from_dict({**BASE, "deepspeed": {"stage": 2}})


def test_missing_key_lists_required_and_allowed():
    with pytest.raises(BadInput, match=r"missing key\(s\) tokens in job; required: parent, tokens, data"):
        job_from_dict({"parent": "tiny-llama", "data": {"shards": "x"}})


@pytest.mark.parametrize("override, message", [
    ({"deepspeed": {"precision": "bf16", "zero_stage": 0}}, "bf16 needs deepspeed.zero_stage >= 1"),
    ({"objective": "distill"}, "objective='distill' is not allowed; allowed: lm, kd, recon"),
    ({"method": "width", "ratio": 1.5}, "ratio=1.5 must be in"),
    ({"method": "magic", "ratio": 0.5}, "method='magic' is not allowed"),
    ({"objective": "kd"}, "needs a pruned model"),
    ({"tokens": "lots"}, "bad tokens 'lots'"),
    ({"optim": {"lr": "fast"}}, "optim.lr='fast' must be of type float"),
])
def test_illegal_values_are_rejected(override, message):
    with pytest.raises(BadInput, match=message):
        job_from_dict({**BASE, **override})


def test_run_id_is_readable_and_deterministic():
    a = job_from_dict({**BASE, "method": "width", "ratio": 0.25, "parent": "tiny-llama-s"})
    b = job_from_dict({**BASE, "method": "width", "ratio": 0.25, "parent": "tiny-llama-s", "runs_dir": "elsewhere"})
    c = job_from_dict({**BASE, "method": "width", "ratio": 0.5, "parent": "tiny-llama-s"})
    assert a.run_id.startswith("tiny-llama-s_width_r0.25_lm_pruned_s0_")
    assert a.run_id == b.run_id  # where the store lives is not part of the identity
    assert a.run_id != c.run_id
    assert a.tokens == 64_000


def test_ds_config_carries_every_knob():
    job = job_from_dict({**BASE, "tokens": 100 * 4 * 2 * 2 * 32,
                         "deepspeed": {"zero_stage": 3, "precision": "bf16", "micro_batch": 4, "grad_accum": 2},
                         "optim": {"schedule": "cosine", "warmup_frac": 0.1, "grad_clip": 0.5}})
    cfg = build_ds_config(job, world_size=2, seq_len=32)
    assert cfg["train_batch_size"] == 16 and cfg["gradient_accumulation_steps"] == 2
    assert cfg["zero_optimization"] == {"stage": 3, "stage3_param_persistence_threshold": 0,
                                        "stage3_gather_16bit_weights_on_model_save": True}
    assert cfg["bf16"] == {"enabled": True} and cfg["gradient_clipping"] == 0.5
    assert cfg["scheduler"]["type"] == "WarmupCosineLR"
    assert cfg["scheduler"]["params"]["total_num_steps"] == optimizer_steps(job, 2, 32) == 100
    assert cfg["scheduler"]["params"]["warmup_num_steps"] == 10
    assert "optimizer" not in cfg  # a torch AdamW is passed in: nothing JIT-compiles


def test_eval_schedule_is_log_then_linear():
    steps = eval_steps(1000, 8)
    assert steps[0] == 0 and steps[-1] == 1000
    assert steps == sorted(set(steps))
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert gaps[0] < gaps[2] < gaps[-1] + 1  # dense early
    assert steps[-4:] == [250, 500, 750, 1000]  # regular later
    assert eval_steps(3, 12) == [0, 1, 2, 3]


def test_the_log_spaced_evals_start_after_the_warm_up():
    """A 10,000-step pilot with a 2% warm-up (the planner's recipe): no eval on the ramp but
    step 0, the log-spaced half from the first step at the peak rate; a warm-up that reaches
    the evenly spaced half leaves the schedule as it was."""
    steps = eval_steps(10_000, 16, start=201)
    assert steps[:2] == [0, 201] and len(steps) == 17 and steps[-8:] == [1250 * i for i in range(1, 9)]
    assert eval_steps(1000, 8, start=400) == eval_steps(1000, 8)


def test_zero_stage_auto_resolves_by_device_and_keeps_the_run_id():
    """An unset stage is ``auto``: ZeRO-1 on a GPU (where precision auto takes bf16, which needs
    it), 0 on a CPU (fp32 there, as before); the run id hashes it as the 0 it replaced."""
    from engine.probe import choose_precision
    from engine.train.dsconfig import resolve_zero_stage

    plain = job_from_dict(BASE)
    assert plain.deepspeed.zero_stage == "auto"
    assert plain.run_id == job_from_dict({**BASE, "deepspeed": {"zero_stage": 0}}).run_id
    assert plain.run_id != job_from_dict({**BASE, "deepspeed": {"zero_stage": 1}}).run_id
    cuda, cpu = resolve_zero_stage(plain.deepspeed, "cuda"), resolve_zero_stage(plain.deepspeed, "cpu")
    assert cuda[0] == 1 and cuda[1].startswith("auto: 1 on cuda") and cpu[0] == 0
    assert choose_precision("auto", "cuda", True, None, zero_stage=cuda[0])[0] == "bf16"
    assert choose_precision("auto", "cpu", True, None, zero_stage=cpu[0])[0] == "fp32"
    bf16 = job_from_dict({**BASE, "deepspeed": {"precision": "bf16"}})  # no longer needs an explicit stage
    assert resolve_zero_stage(bf16.deepspeed, "cpu")[0] == 1
    assert resolve_zero_stage(job_from_dict({**BASE, "deepspeed": {"zero_stage": 3}}).deepspeed, "cuda") == \
        (3, "3 as requested")
    assert build_ds_config(plain, 1, 32, "cuda")["zero_optimization"] == {"stage": 1}
    assert build_ds_config(plain, 1, 32)["zero_optimization"] == {"stage": 0}
    with pytest.raises(BadInput, match="zero_stage='two' must be 0, 1, 2, 3 or auto"):
        job_from_dict({**BASE, "deepspeed": {"zero_stage": "two"}})
