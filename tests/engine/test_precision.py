"""Precision by measurement: ``auto`` times fp32 against bf16 at the job's shape (engine.probe).

The decision rule is a pure function of the timings, tested without timing anything; the
timed worker runs once (slow). bf16 training (DeepSpeed's bf16 mode: fp32 masters and
optimizer state) must track the fp32 curve, and bf16 pruning forwards (statistics in fp32)
must leave the loss after pruning within 0.5% of the fp32 result.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import pytest
import torch

from data.runs import RunStore
from engine import probe
from engine.models import build_model
from engine.pruning import get_method
from engine.pruning.common import eval_loss, forward_precision
from engine.train.config import job_from_dict
from engine.train.recipe import build_engine, run_job
from train_fakes import MemData

SEQ, MB = 32, 8
STEP_TOKENS = SEQ * MB


def _timing(fp32_s: float, bf16_s: float) -> probe.PrecisionTiming:
    return probe.PrecisionTiming(fp32_s, bf16_s, 2, "probe")


# -- the decision rule ------------------------------------------------------------------------

@pytest.mark.parametrize("fp32_s, bf16_s, expect", [(22.3, 7.4, "bf16"), (1.0, 2.7, "fp32"), (1.0, 0.98, "fp32")])
def test_auto_on_a_cpu_takes_bf16_only_where_it_measured_faster(fp32_s, bf16_s, expect):
    precision, why = probe.choose_precision("auto", "cpu", True, _timing(fp32_s, bf16_s), zero_stage=1)
    assert precision == expect and why.startswith(f"auto: {expect} on CPU (")
    assert f"{fp32_s / bf16_s:.2f}x" in why and f"fp32 {fp32_s:.3g} s" in why  # the user sees the numbers


@pytest.mark.parametrize("device, zero, native, expect, says", [
    ("cpu", 0, True, "fp32", "needs ZeRO stage >= 1"),
    ("cpu", 1, False, "fp32", "emulated"),
    ("cuda", 1, True, "bf16", "native"),
    ("cuda", 0, True, "fp32", "needs ZeRO stage >= 1"),
    ("cuda", None, True, "bf16", "native"),  # pruning forwards: no optimizer, no ZeRO condition
    ("cpu", None, False, "fp32", "emulated"),
])
def test_auto_without_a_timing_follows_the_device(device, zero, native, expect, says):
    precision, why = probe.choose_precision("auto", device, native, None, zero_stage=zero)
    assert precision == expect and says in why


def test_an_explicit_choice_is_kept_and_an_emulated_bf16_is_flagged():
    assert probe.choose_precision("fp32", "cpu", True, _timing(9.0, 1.0), 1) == ("fp32", "fp32 as requested")
    precision, why = probe.choose_precision("bf16", "cpu", False, None, 1)
    assert precision == "bf16" and "emulates it" in why


def test_timing_is_measured_once_per_shape_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("PRUNELAW_CACHE", str(tmp_path))
    monkeypatch.setattr(probe, "native_bf16", lambda _device: True)
    calls = []

    def fake_measure(workload, threads, seconds=probe.PRECISION_SECONDS):
        calls.append((workload.batch, threads))
        return _timing(3.0, 1.0)

    monkeypatch.setattr(probe, "measure_precision", fake_measure)
    config = build_model("tiny-llama", seed=0).config
    work = probe.Workload.of(config, SEQ, MB, "train")
    first = probe.resolve_precision("auto", "cpu", 1, work)
    second = probe.resolve_precision("auto", "cpu", 1, work)
    assert first[0] == second[0] == "bf16" and "(probe)" in first[1] and "(cache)" in second[1]
    probe.resolve_precision("auto", "cpu", 1, probe.Workload.of(config, SEQ, 2 * MB, "train"))
    assert len(calls) == 2  # another batch is another shape
    probe.resolve_precision("auto", "cpu", 0, work)  # stage 0 cannot train bf16: nothing to time
    assert len(calls) == 2
    next(tmp_path.glob("precision-probe-*.json")).write_text("{torn")
    probe.resolve_precision("auto", "cpu", 1, work)
    assert len(calls) == 3  # a torn cache is measured again


@pytest.mark.slow
@pytest.mark.parametrize("mode", probe.MODES)
def test_the_worker_times_both_dtypes_at_the_models_shape(mode):
    small = probe.Workload.of(build_model("tiny-llama", seed=0).config, SEQ, MB, mode)
    deep = probe.Workload(small.config, 8 * small.layers, SEQ, MB, mode)
    t_small, t_deep = (probe.measure_precision(w, 1, seconds=0.3) for w in (small, deep))
    for t in (t_small, t_deep):
        assert 0 < t.fp32_s < 10 and 0 < t.bf16_s < 10
    assert t_deep.fp32_s > t_small.fp32_s  # the layers the worker did not build are counted


# -- training: bf16 keeps fp32 masters and tracks the fp32 curve --------------------------------

@pytest.fixture(scope="module")
def data():
    return MemData(seq_len=SEQ)


def _job(runs: Path, precision: str, **over):
    return job_from_dict({"parent": "tiny-llama", "init": "random", "tokens": 60 * STEP_TOKENS, "runs_dir": str(runs),
                          "data": {"shards": "mem"}, "eval": {"points": 6, "max_sequences": 16},
                          "deepspeed": {"micro_batch": MB, "zero_stage": 1, "precision": precision},
                          "optim": {"lr": 3e-3, "warmup_frac": 0.05}, **over})


def test_deepspeed_bf16_keeps_fp32_master_weights_and_optimizer_state(tmp_path, dist):
    job = _job(tmp_path, "bf16")
    engine, ds_json = build_engine(job, build_model("tiny-llama", seed=0), dist, SEQ)
    try:
        assert ds_json["bf16"] == {"enabled": True} and ds_json["zero_optimization"]["stage"] == 1
        ids = MemData(seq_len=SEQ).train_batches(MB, 0).__next__()
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()
        assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}
        masters = engine.optimizer.single_partition_of_fp32_groups
        assert masters and {m.dtype for m in masters} == {torch.float32}
        states = [s for s in engine.optimizer.optimizer.state.values()]
        assert states and {v.dtype for s in states for k, v in s.items() if k.startswith("exp_avg")} == {torch.float32}
    finally:
        engine.destroy()


def test_bf16_training_tracks_the_fp32_loss_curve(tmp_path, dist, data):
    """60 steps of a tiny Llama from scratch: every eval point of the bf16 run within 2% of the
    fp32 run's (a curve that drifts, e.g. bf16 optimizer state, leaves this band), the last
    within 1%, and both learn (the loss falls by over a third)."""
    curves = {}
    for precision in ("fp32", "bf16"):
        job = _job(tmp_path / precision, precision)
        assert run_job(job, dist, data) == "done"
        record = RunStore(job.runs_dir).read(job.run_id)
        assert record["config"]["deepspeed"]["precision"] == precision
        curves[precision] = RunStore(job.runs_dir).read_curve(job.run_id).sort_values("step")
    fp32, bf16 = curves["fp32"], curves["bf16"]
    assert list(fp32["step"]) == list(bf16["step"]) and len(fp32) >= 5
    rel = ((bf16["eval_loss"].to_numpy() - fp32["eval_loss"].to_numpy()) / fp32["eval_loss"].to_numpy())
    assert abs(rel).max() < 0.02 and abs(rel[-1]) < 0.01, rel
    for curve in (fp32, bf16):
        assert curve["eval_loss"].iloc[-1] < 0.66 * curve["eval_loss"].iloc[0]


def test_auto_trains_in_what_the_timing_picks_and_records_why(tmp_path, dist, data, monkeypatch):
    monkeypatch.setattr(probe, "native_bf16", lambda _device: True)
    shapes = []

    def timed(workload, threads, refresh=False):
        shapes.append((workload.layers, workload.seq, workload.batch, workload.config["hidden_size"]))
        return _timing(3.0, 1.0)

    monkeypatch.setattr(probe, "precision_timing", timed)
    job = _job(tmp_path, "auto", tokens=8 * STEP_TOKENS)
    assert run_job(job, dist, data) == "done"
    record = RunStore(tmp_path).read(job.run_id)
    assert shapes == [(2, SEQ, MB, 64)]  # the job's own model, sequence and micro-batch
    assert record["config"]["deepspeed"]["precision"] == "bf16" and record["deepspeed_json"]["bf16"]["enabled"]
    assert record["meta"]["precision_reason"].startswith("auto: bf16 on CPU (measured 3.00x faster")


# -- pruning: bf16 forwards, fp32 statistics, the same loss ------------------------------------

def _text_ids(module, n: int, seq: int) -> torch.Tensor:
    """Real text as token ids: the bytes of a stdlib module (ids < 256 fit the tiny vocab)."""
    data = Path(module.__file__).read_bytes()
    return torch.tensor(list(data[: n * seq]), dtype=torch.long).view(n, seq)


@pytest.fixture(scope="module")
def trained():
    """A tiny Llama that has learnt some Python source (pruning a random model changes nothing
    measurable), with calibration and held-out text."""
    torch.manual_seed(0)
    model = build_model("tiny-llama", seed=0)
    train = _text_ids(inspect, 256, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        ids = train[(step * 16) % 256:(step * 16) % 256 + 16]
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), train[:32], _text_ids(json.decoder, 16, 64)


@pytest.mark.parametrize("method, ratio", [("width", 0.5), ("2:4-sparsegpt", None), ("unstructured-sparsegpt", 0.5),
                                           ("unstructured", 0.4)])
def test_bf16_pruning_forwards_lose_under_half_a_percent_against_fp32(trained, method, ratio):
    import copy

    model, calib, held = trained
    losses, weights = {}, {}
    for dtype in ("fp32", "bf16"):
        m = copy.deepcopy(model)
        if ratio is None:  # 2:4 reaches one ratio only: what its coverage allows
            from engine.pruning.sparse_common import Pattern, removable_count, total_params
            ratio = removable_count(m, Pattern("n:m")) / total_params(m)
        with forward_precision(dtype, "cpu"):
            report = get_method(method)(m, ratio, calib)
        pruned = report.model if report.model is not None else m
        losses[dtype] = eval_loss(pruned, held)
        weights[dtype] = torch.cat([p.detach().flatten() for p in pruned.parameters()])
        assert {p.dtype for p in pruned.parameters()} == {torch.float32}  # bf16 computes, fp32 is kept
    before = eval_loss(model, held)
    assert losses["fp32"] > before + 0.003  # the pruning did cost something to compare
    assert abs(losses["bf16"] - losses["fp32"]) < 0.005 * losses["fp32"], (before, losses)
    if method == "2:4-sparsegpt":  # its weight updates read the Hessian: the bf16 forwards were real
        assert not torch.equal(weights["fp32"], weights["bf16"])
    assert math.isfinite(losses["bf16"])


# -- engine prune --device / --dtype --------------------------------------------------------------

TEXT = Path(inspect.__file__)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama with a real byte-level BPE (vocab 512) trained on stdlib source."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from engine.models import save_model

    bpe = ByteLevelBPETokenizer()
    bpe.train([str(TEXT)], vocab_size=512, min_frequency=2, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    out = tmp_path_factory.mktemp("parent") / "tiny-llama"
    tok_dir = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(str(tok_dir))
    save_model(build_model("tiny-llama", seed=0), out, tokenizer_from=tok_dir)
    return out


def _prune(tmp_path: Path, model: Path, *extra: str) -> int:
    from engine.__main__ import main as engine_main

    return engine_main(["prune", "--model", str(model), "--method", "2:4-sparsegpt", "--sparsity", "0.5",
                        "--out", str(tmp_path / "out"), "--calib", str(TEXT), "--calib-samples", "4",
                        "--calib-seq-len", "32", *extra])


@pytest.mark.parametrize("extra, message", [
    (("--dtype", "fp16"), "--dtype 'fp16' is not allowed; allowed: --device auto|cpu|cuda, --dtype auto|fp32|bf16"),
    (("--device", "tpu"), "--device 'tpu' is not allowed"),
])
def test_prune_refuses_an_unknown_device_or_dtype_in_one_line(tmp_path, tiny_dir, extra, message, capsys):
    assert _prune(tmp_path, tiny_dir, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_prune_on_cuda_without_a_gpu_is_bad_input(tmp_path, tiny_dir, capsys):
    assert _prune(tmp_path, tiny_dir, "--device", "cuda") == 2
    assert "--device cuda: torch sees no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_prune_records_where_and_in_what_its_forwards_ran(tmp_path, tiny_dir, dtype):
    assert _prune(tmp_path, tiny_dir, "--device", "cpu", "--dtype", dtype) == 0
    report = json.loads((tmp_path / "out" / "prune_report.json").read_text())
    assert report["choices"]["forward"] == {"device": "cpu", "dtype": dtype, "why": f"{dtype} as requested"}
    assert report["job"]["dtype"] == dtype


def test_a_bf16_students_kd_teacher_is_held_in_bf16_once(trained):
    """The teacher is cast in place to the student's precision (half the memory of an fp32
    copy, and no per-forward weight casts), and its KD loss matches the fp32 teacher's."""
    import copy

    from engine.train.config import KDConfig
    from engine.train.objectives import make_kd

    parent, _, held_out = trained
    student = copy.deepcopy(parent).to(torch.bfloat16)
    fp32_loss = make_kd(copy.deepcopy(parent), KDConfig())(student, held_out[:4])
    teacher = copy.deepcopy(parent)
    bf16_loss = make_kd(teacher, KDConfig(), torch.bfloat16)(student, held_out[:4])
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in teacher.parameters())
    assert float(bf16_loss) == pytest.approx(float(fp32_loss), abs=0.02)
