"""The cost model (data.compute) and ``engine grid plan --estimate``, against hand arithmetic."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data.cli import BadInput

ROOT = Path(__file__).resolve().parents[2]
GIB = 2.0 ** 30
# Qwen2.5-0.5B's config.json shape fields (the hub file's values): planning reads nothing else.
QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
            "tie_word_embeddings": True, "max_position_embeddings": 32768}


def test_compute_cost_is_6ND_at_mfu_of_peak():
    from data.compute import GPUS, compute_cost, flops_cost, get_gpu

    c = compute_cost(1e9, 1e10, get_gpu("H100"), mfu=0.4)
    assert c.flops == 6e19
    hours = 6e19 / (989e12 * 0.4) / 3600  # = 42.13 GPU-hours
    assert c.gpu_hours == pytest.approx(hours, rel=1e-12) and c.cost_usd == pytest.approx(hours * 2.50)
    assert flops_cost(6e19, GPUS["a100"], 0.5, price=1.0).gpu_hours == pytest.approx(6e19 / (312e12 * 0.5) / 3600)
    with pytest.raises(BadInput, match=r"unknown --gpu 'v100'; allowed: h100, h200, a100"):
        get_gpu("v100")
    with pytest.raises(BadInput, match="bad --mfu 0.0: model FLOPs utilisation must be in"):
        compute_cost(1e9, 1e9, GPUS["h100"], mfu=0.0)


def _grid(tmp_path, micro_batch=2, **train):
    parent = tmp_path / "qwen2.5-0.5b"
    parent.mkdir(exist_ok=True)
    (parent / "config.json").write_text(json.dumps(QWEN_05B))
    spec = {"name": "est", "data": {"shards": str(tmp_path / "shards"), "seq_len": 1024},
            "parents": [{"name": "q", "path": str(parent), "family": "qwen2.5"}],
            "methods": ["depth"], "ratios": [0.25], "objectives": ["kd"], "tokens": "1B",
            "train": {"deepspeed": {"micro_batch": micro_batch, "grad_accum": 1, "zero_stage": 2,
                                    "precision": "bf16"},
                      "eval": {"points": 4, "max_sequences": 16}, "calib_sequences": 32, **train}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _plan(*args):
    return subprocess.run([sys.executable, "-m", "engine", "grid", "plan", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_estimate_of_one_job_matches_hand_arithmetic(tmp_path):
    done = _plan(str(_grid(tmp_path)), "--estimate", "--executor", "slurm", "--gpus-per-job", "4",
                 "--runs", str(tmp_path / "runs"), "--json")
    assert done.returncode == 0, done.stderr
    (job,) = json.loads(done.stdout)
    # Qwen2.5-0.5B: one layer is q 896*896 + k,v 2*896*128 + o 896*896 + qkv bias (14+2*2)*64
    # + MLP 3*896*4864 + two norms 2*896 = 14,912,384; N0 = 494,032,768 (the published count).
    layer, n0 = 802816 + 229376 + 802816 + 1152 + 13074432 + 1792, 494_032_768
    assert layer == 14_912_384 and job["params_parent"] == n0
    # depth 0.25 drops round(0.25 * N0 / layer) = round(8.28) = 8 of 24 layers
    n = n0 - 8 * layer
    assert job["params_trained"] == n == 374_733_696
    # FLOPs: 6 N D + the KD teacher 2 N0 D + calibration 2 N0 (32 x 1024) + eval 2 N (4 x 16 x 1024)
    assert job["flops"] == {"train": 6 * n * 1e9, "teacher": 2 * n0 * 1e9, "calibration": 2 * n0 * 32 * 1024,
                            "eval": 2 * n * 4 * 16 * 1024}
    total = 6 * n * 1e9 + 2 * n0 * 1e9 + 2 * n0 * 32 * 1024 + 2 * n * 65536
    assert job["gpu_hours"] == pytest.approx(total / (989e12 * 0.4) / 3600, rel=1e-12)  # 2.21 GPU-h
    # bf16 ZeRO-2 on 4 GPUs: weights 2N whole, gradients 2N / 4, Adam + fp32 master 12N / 4;
    # the teacher 2 N0 bytes on every rank
    mem = job["memory_gib"]
    assert mem["weights"] * GIB == 2 * n and mem["grads"] * GIB == 2 * n / 4 and mem["optim"] * GIB == 12 * n / 4
    assert mem["teacher"] * GIB == 2 * n0
    # activations per token per layer: 2 bytes x (2 q + 2 kv + 4 ffn) = 2 (1792 + 256 + 19456);
    # two RMSNorms, each an fp32 input, two bf16 copies and a 4-byte 1/rms: 2 (4 + 2 + 2) 896 + 8;
    # SDPA's fp32 log-sum-exp per head: 4 x 14
    per_token = 2 * (2 * 896 + 2 * 128 + 4 * 4864) + 2 * (8 * 896 + 4) + 4 * 14
    assert per_token == 57408
    tokens = 2 * 1024  # micro-batch 2 x seq_len 1024
    logits = (2 + 4 + 4) * 151936 * tokens + (2 + 4) * 151936 * tokens  # student + teacher
    assert mem["activations"] * GIB == 16 * per_token * tokens + logits
    assert mem["activations_ckpt"] * GIB == 16 * 2 * 896 * tokens + per_token * tokens + logits
    train = 2 * n + 2 * n / 4 + 12 * n / 4 + 2 * n0 + 16 * per_token * tokens + logits  # 9.2 GiB
    # a held-out evaluation: 16 sequences x 1024 tokens of bf16 logits, their fp32 upcast and
    # log-softmax (no activations then); setup: the fp32 parent and its L0 logits + log-softmax
    eval_tokens = 16 * 1024
    assert mem["eval_logits"] * GIB == (2 + 4 + 4) * 151936 * eval_tokens
    assert mem["setup"] * GIB == 4 * n0 + (4 + 4) * 151936 * eval_tokens  # 20.4 GiB
    peak = 2 * n + 2 * n / 4 + 12 * n / 4 + 2 * n0 + (2 + 4 + 4) * 151936 * eval_tokens
    assert peak > max(train, mem["setup"] * GIB)  # the eval batch's logits set this job's peak
    assert job["peak_gib_by_stage"]["2"] == pytest.approx(peak / GIB, rel=1e-12)  # 26.0 GiB
    assert job["peak_gib_by_stage"]["0"] * GIB == pytest.approx(peak + 2 * n * 3 / 4 + 12 * n * 3 / 4)
    assert job["fits"] is True and job["teacher_placement"].startswith("replicated on every rank")
    assert job["parent_placement"].startswith("the whole parent in fp32 on every rank")


def test_zero_stage_auto_is_estimated_as_on_a_gpu(tmp_path):
    """An unset ZeRO stage resolves to 1 on a GPU: bf16 (16-bit states), optimizer sharded."""
    from data.compute import GPUS
    from engine.grid.estimate import estimate_grid
    from engine.grid.spec import load_grid

    grid = load_grid(_grid(tmp_path, deepspeed={"micro_batch": 2, "precision": "auto"}))
    (job,) = estimate_grid(grid, GPUS["h100"], 0.4, None, 4)
    assert job.zero_stage == 1 and job.precision_bits == 16
    assert job.memory.optim == 12 * job.params_trained / 4 and job.memory.grads == 2 * job.params_trained


def test_a_job_too_big_for_the_gpu_is_flagged_before_submitting(tmp_path):
    grid = str(_grid(tmp_path, micro_batch=32))  # ~109 GiB per GPU (79 with ckpt): over an H100, under an H200
    done = _plan(grid, "--estimate", "--runs", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert "DOES NOT FIT h100" in done.stdout and "1 job(s) will not fit: raise the GPU count" in done.stdout
    assert "1 jobs: 1 fits" in _plan(grid, "--estimate", "--gpu", "h200", "--runs", str(tmp_path / "runs")).stdout
    assert not (tmp_path / "runs").exists()  # an estimate writes nothing


def test_an_unknown_gpu_exits_2_with_one_line_naming_the_known_ones(tmp_path):
    done = _plan(str(_grid(tmp_path)), "--estimate", "--gpu", "v100", "--runs", str(tmp_path / "runs"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == ["engine grid: error: unknown --gpu 'v100'; allowed: h100, h200, a100"]


@pytest.mark.parametrize("name, parents", [("p2-llama3", 2), ("p2-qwen2.5", 3)])
def test_the_shipped_p2_grids_fit_80_gb_at_8_gpus_from_the_model_table(name, parents):
    """Hub parents not in any cache plan from the model table: every job fits an H100."""
    from data.compute import GPUS
    from engine.grid.estimate import estimate_grid
    from engine.grid.spec import load_grid

    grid = load_grid(ROOT / "grids" / f"{name}.yaml")
    estimates = estimate_grid(grid, GPUS["h100"], 0.4, None, 8)
    assert len({e.parent for e in estimates}) == parents
    assert all(e.fits for e in estimates), [(e.run_id, e.memory.peak() / GIB) for e in estimates if not e.fits]
    assert all(e.tokens == 10 ** 9 and e.objective == "kd" for e in estimates)
    assert {e.ratio for e in estimates} == {0.15, 0.25, 0.35, 0.5}


def test_the_cuda_pins_are_the_cpu_pins_without_the_cpu_tag():
    """install.sh installs one stack on CPU and GPU: the versions the CPU machine tested."""
    def pins(name):
        lines = (ROOT / "constraints" / name).read_text().splitlines()
        return dict(ln.split("==") for ln in lines if ln.strip() and not ln.startswith("#"))

    cpu, cuda = pins("cpu.txt"), pins("cuda.txt")
    assert {k: v.removesuffix("+cpu") for k, v in cpu.items()} == cuda
    assert int(cuda["transformers"].split(".")[0]) >= 5  # config.rope_parameters
    assert "-c constraints/cuda.txt" in (ROOT / "install.sh").read_text()


def test_estimate_outside_plan_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "engine", "grid", "launch", str(_grid(tmp_path)), "--estimate"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and "--estimate goes with 'engine grid plan', not 'launch'" in done.stderr


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_layer_activations_are_what_transformers_saves_for_backward(arch):
    """The per-layer activation bytes of the estimate equal the bytes of the tensors a bf16
    transformers decoder layer (SDPA attention, GQA) saves for backward, parameters excluded:
    measured as the difference between a 3- and a 2-layer model."""
    import dataclasses

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from data.models import MODELS
    from engine.grid.estimate import layer_activation_bytes

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_class, model_class = classes[arch]
    shape = {"hidden_size": 128, "intermediate_size": 352, "num_attention_heads": 4, "num_key_value_heads": 2,
             "head_dim": 48, "vocab_size": 256}

    def saved_bytes(layers: int) -> int:
        torch.manual_seed(0)
        model = model_class(config_class(num_hidden_layers=layers, attn_implementation="sdpa", **shape))
        model = model.to(torch.bfloat16).train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        saved: dict[int, int] = {}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        ids = torch.randint(0, 256, (2, 64))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids)
        return sum(saved.values())

    spec = dataclasses.replace(MODELS["tiny-qwen" if arch == "qwen2" else "tiny-llama"], hidden=128, ffn=352, heads=4,
                               kv_heads=2, head_dim=48, vocab=256)
    assert saved_bytes(3) - saved_bytes(2) == layer_activation_bytes(spec, 2 * 64, 16)
