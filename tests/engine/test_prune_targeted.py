"""Targeted pruning (learned hard-concrete masks, Sheared-LLaMA) and the Minitron shape search.

Tiny in-memory Llama / Qwen2 models (GQA, Qwen biases, tied embeddings); every training run
goes through the real ``deepspeed.initialize`` on CPU.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from engine.__main__ import main as engine_main
from engine.models import build_model, save_model
from engine.pruning import targeted
from engine.pruning.targeted_masks import MaskSet, attach, detach
from engine.pruning.targeted_shape import Parent, parse_target
from engine.train.stage import StageTrainer
from train_fakes import MemData, MemStream

VOCAB, SEQ = 96, 32
TEXT = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"


@pytest.fixture(scope="module")
def data() -> MemData:
    return MemData(vocab=VOCAB, seq_len=SEQ)


def _random_extras(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial biases and norm gains, so that slicing them wrongly would show in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(0.5 + 0.3 * torch.randn(p.shape, generator=g))


def _hard_masked_then_cut(model, target: str, seed: int = 0):
    """(logits of the hard-masked model, the cut model's choices, ids) for random mask scores."""
    parent = Parent.of(model)
    masks = MaskSet(parent.shape, parse_target(target, parent))
    torch.manual_seed(seed)
    with torch.no_grad():
        for a in masks.log_alpha.values():
            a.normal_()
    masks.eval()
    masks()
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(seed))
    handles = attach(model, masks, parent.head_dim)
    with torch.no_grad():
        masked = model(input_ids=ids).logits
    detach(handles)
    return masked, targeted.cut(model, masks), ids


CASES = [
    ("tiny-llama", "layers=1,heads=2,kv_heads=1,ffn=64,hidden=32"),  # drops a layer and a whole KV group
    ("tiny-llama", "heads=2,kv_heads=2,ffn=96"),                      # one query head per group
    ("tiny-qwen", "layers=1,heads=2,kv_heads=2,ffn=80,hidden=48"),    # qkv biases sliced
    ("tiny-llama-l", "tiny-llama-s"),                                 # a preset as the target
]


@pytest.mark.parametrize("preset,target", CASES)
def test_cut_model_has_the_target_shape_and_the_hard_masked_logits(tmp_path, preset, target):
    model = build_model(preset, vocab=VOCAB)
    _random_extras(model)
    parent = Parent.of(model).shape
    want = parse_target(target, Parent.of(model)).to_dict()
    masked, choices, ids = _hard_masked_then_cut(model, target)
    cfg = model.config
    got = {"layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads,
           "ffn": cfg.intermediate_size, "hidden": cfg.hidden_size}
    assert got == want and choices["shape"]["head_dim"] == 16
    layer = model.model.layers[-1]
    assert layer.self_attn.q_proj.weight.shape == (want["heads"] * 16, want["hidden"])
    assert layer.mlp.down_proj.weight.shape == (want["hidden"], want["ffn"])
    assert [l.self_attn.layer_idx for l in model.model.layers] == list(range(want["layers"]))
    with torch.no_grad():
        cut_logits = model(input_ids=ids).logits
    torch.testing.assert_close(cut_logits, masked, atol=1e-5, rtol=1e-5)
    # GQA: kept query heads come from kept KV groups only, the same number from each.
    q0 = parent.heads // parent.kv_heads
    for kept in choices["layers"]:
        if "heads" in kept:
            groups = [h // q0 for h in kept["heads"]]
            assert sorted(set(groups)) == sorted(kept["kv_heads"])
            assert {groups.count(g) for g in set(groups)} == {want["heads"] // want["kv_heads"]}
    save_model(model, tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, cut_logits, atol=1e-5, rtol=1e-5)
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()  # still tied
    if preset == "tiny-qwen":
        assert again.model.layers[0].self_attn.k_proj.bias.shape == (want["kv_heads"] * 16,)


def test_lagrangian_drives_the_expected_shape_to_the_target(data):
    model = build_model("tiny-llama", vocab=VOCAB)
    steps = 40
    report = targeted.prune(model, None, data.train[:64], args={
        "target": "heads=2,kv_heads=2,ffn=64,hidden=48", "tokens": steps * 2 * SEQ, "micro_batch": 2, "lr": 1e-3,
        "log_points": 8, "trainer": StageTrainer()})
    run = report.choices["targeted"]
    first, last = run["trajectory"][0], run["trajectory"][-1]
    target = {"heads": 2, "ffn": 64, "hidden": 48}
    for key, want in target.items():
        start_gap = {"heads": 4, "ffn": 128, "hidden": 64}[key] - want
        assert abs(last["expected"][key] - want) < 0.3 * start_gap, (key, last["expected"])
    assert last["expected_params"] < first["expected_params"]
    assert any(abs(v) > 0.1 for v in last["multipliers"].values())
    assert [t["step"] for t in run["trajectory"]][-1] == steps and report.choices["prune_tokens"] == steps * 2 * SEQ
    assert model.config.intermediate_size == 64 and model.config.hidden_size == 48  # exact after the cut
    assert abs(report.ratio - (1 - report.params_after / report.params_before)) < 1e-12


class _Killed(MemStream):
    """A stream that dies after ``limit`` batches (as a kill mid-run would) and logs what it served."""

    def __init__(self, train, rows, seed, limit=None, served=None):
        super().__init__(train, rows, seed)
        self.limit, self.served = limit, served if served is not None else []

    def __next__(self):
        if self.limit is not None and len(self.served) >= self.limit:
            raise KeyboardInterrupt("killed")
        self.served.append(self.pos // self.rows)  # the index of the global batch handed out
        return super().__next__()


def _resumable(data, state_dir, factory):
    model = build_model("tiny-llama", vocab=VOCAB)
    args = {"target": "heads=2,kv_heads=2,ffn=64", "tokens": 10 * 2 * SEQ, "micro_batch": 2, "lr": 1e-3,
            "checkpoint_every": 3, "state_dir": str(state_dir), "stream_factory": factory, "seq_len": SEQ,
            "trainer": StageTrainer()}
    return targeted.prune(model, None, None, args=args)


def test_killed_pruning_run_resumes_where_it_stopped(tmp_path, data):
    clean = _resumable(data, tmp_path / "clean", lambda rows, seed: MemStream(data.train, rows, seed))
    with pytest.raises(KeyboardInterrupt):  # killed in step 8, after the checkpoint of step 6
        _resumable(data, tmp_path / "s", lambda rows, seed: _Killed(data.train, rows, seed, limit=7))
    assert (tmp_path / "s" / "checkpoint" / "step00000006").is_dir()
    served: list[int] = []
    resumed = _resumable(data, tmp_path / "s", lambda rows, seed: _Killed(data.train, rows, seed, served=served))
    assert served == [6, 7, 8, 9]  # continued from the saved step's stream position, not from batch 0
    steps = [t["step"] for t in resumed.choices["targeted"]["trajectory"]]
    assert steps == list(range(1, 11))  # steps 1..6 from the checkpoint, recorded once
    assert resumed.choices["targeted"]["trajectory"][:6] == clean.choices["targeted"]["trajectory"][:6]
    assert resumed.choices["targeted"]["hard_kept"] == clean.choices["targeted"]["hard_kept"]
    for (name, a), (_, b) in zip(clean.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    # A finished stage is reused (a resumed grid job re-enters pruning): no data is read.
    again = _resumable(data, tmp_path / "s", lambda rows, seed: _Killed(data.train, rows, seed, limit=0))
    assert again.params_after == resumed.params_after and not (tmp_path / "s" / "checkpoint").exists()


def _search(data, state_dir=None, factory=None, model=None):
    from engine.pruning import search

    model = model if model is not None else build_model("tiny-llama-m", vocab=VOCAB)
    extra = {"state_dir": str(state_dir), "stream_factory": factory, "seq_len": SEQ} if factory else {}
    return search.prune(model, 0.4, data.train[:48], args={"candidates": 3, "tokens": 6 * 4 * SEQ, "lr": 1e-3,
                                                            "trainer": StageTrainer(), **extra})


def test_a_trained_method_without_a_trainer_says_what_to_pass(data):
    from data.cli import BadInput

    with pytest.raises(BadInput, match="StageTrainer"):
        targeted.prune(build_model("tiny-llama", vocab=VOCAB), None, data.train[:8],
                       args={"target": "heads=2,kv_heads=2,ffn=64", "tokens": 2 * SEQ, "micro_batch": 2})


def test_search_ranks_same_size_shapes_and_keeps_the_best(data):
    parent = build_model("tiny-llama-m", vocab=VOCAB)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    report = _search(data, model=parent)
    # The parent is every candidate's source and the KD teacher: left as it was, trainable.
    assert all(p.requires_grad for p in parent.parameters())
    assert all(torch.equal(v, before[k]) for k, v in parent.state_dict().items())
    ranking = report.choices["search"]["ranking"]
    assert [r["rank"] for r in ranking] == [1, 2, 3]
    assert [r["loss_after_kd"] for r in ranking] == sorted(r["loss_after_kd"] for r in ranking)
    assert len({tuple(r["shape"].values()) for r in ranking}) == 3 and all(abs(r["ratio"] - 0.4) <= 0.02 for r in ranking)
    best, cfg = ranking[0]["shape"], report.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (
        best["layers"], best["hidden"], best["ffn"], best["heads"])
    assert report.choices["prune_tokens"] == 3 * 6 * 4 * SEQ


def test_killed_search_resumes_at_the_candidate_it_was_in(tmp_path, data):
    def streams(limits: list[int | None], made: list[int]):
        def factory(rows, seed):  # one stream per candidate's KD
            made.append(len(made))
            return _Killed(data.train, rows, seed, limit=limits[len(made) - 1] if len(made) <= len(limits) else None)
        return factory

    clean = _search(data, tmp_path / "clean", streams([], []))
    with pytest.raises(KeyboardInterrupt):  # candidate 0 ranked, killed in candidate 1's KD
        _search(data, tmp_path / "s", streams([None, 3], []))
    assert [r["candidate"] for r in json.loads((tmp_path / "s" / "ranking.json").read_text())] == [0]
    made: list[int] = []
    resumed = _search(data, tmp_path / "s", streams([], made))
    assert made == [0, 1]  # only candidates 1 and 2 were trained again
    assert resumed.choices["search"]["ranking"] == clean.choices["search"]["ranking"]
    assert resumed.choices["prune_tokens"] == clean.choices["prune_tokens"]
    for (name, a), (_, b) in zip(clean.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_grid_job_counts_pruning_tokens_in_its_curve(tmp_path, data):
    from data.runs import RunStore
    from engine.train.config import job_from_dict
    from engine.train.recipe import run_job
    from engine.train.runtime import init_distributed

    job = job_from_dict({"parent": "tiny-llama", "tokens": 4 * 8 * SEQ, "runs_dir": str(tmp_path), "method": "targeted",
                         "ratio": 0.3, "data": {"shards": "mem"}, "eval": {"points": 2, "max_sequences": 8},
                         "deepspeed": {"micro_batch": 8, "precision": "fp32"},
                         "prune_args": {"target": "heads=2,kv_heads=2,ffn=64", "tokens": 640, "micro_batch": 2}})
    assert run_job(job, init_distributed(), data) == "done"
    record = RunStore(tmp_path).read(job.run_id)
    curve = RunStore(tmp_path).read_curve(job.run_id)
    assert record["meta"]["prune_tokens"] == 640 and curve["tokens"].iloc[0] == 640
    assert curve["tokens"].iloc[-1] == 640 + 4 * 8 * SEQ
    assert record["pruning"]["choices"]["targeted"]["trajectory"][-1]["step"] == 10
    assert not (tmp_path / job.run_id / "prune_stage").exists()  # done: the stage's resume point is gone
    # The reports' "loss right after pruning" is the step-0 row, wherever the curve's tokens start.
    from data.runs import load
    from reports.tables import pruning_points

    after = pruning_points(load(tmp_path))
    assert list(after["tokens"]) == [640] and list(after["eval_loss"]) == [curve["eval_loss"].iloc[0]]


# -- the CLI -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A saved tiny-qwen with a real byte-level BPE tokenizer (vocab 512) beside it."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train([str(TEXT)], vocab_size=512, min_frequency=2, special_tokens=["<|endoftext|>"])
    out = tmp_path_factory.mktemp("parent") / "tiny-qwen"
    model = build_model("tiny-qwen")
    _random_extras(model)
    save_model(model, out)
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(str(out))
    return out


def test_cli_targeted_writes_a_dense_model_of_the_target_shape(tmp_path, tiny_dir, capsys):
    out = tmp_path / "sheared"
    code = engine_main(["prune", "--model", str(tiny_dir), "--method", "targeted", "--target",
                        "layers=1,heads=2,kv_heads=1,ffn=96,hidden=48", "--prune-tokens", "256",
                        "--mask-lr", "0.05", "--prune-lr", "2e-4", "--calib", str(TEXT),
                        "--calib-samples", "8", "--calib-seq-len", "32", "--eval", str(TEXT), "--eval-samples", "4",
                        "--out", str(out), "--json"])
    assert code == 0
    report = json.loads((out / "prune_report.json").read_text())
    assert json.loads(capsys.readouterr().out)["ratio"] == report["ratio"]
    assert report["shape_after"] | {"arch": None} == report["shape_after"] | {
        "arch": None, "layers": 1, "heads": 2, "kv_heads": 1, "ffn": 96, "hidden": 48}
    assert report["choices"]["targeted"]["trajectory"] and report["loss_after"] > 0
    assert (report["choices"]["targeted"]["mask_lr"], report["choices"]["targeted"]["lr"]) == (0.05, 2e-4)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 1 and model.model.layers[0].self_attn.q_proj.bias.shape == (32,)
    assert not (tmp_path / ".sheared.targeted").exists()


def test_cli_search_saves_its_ranking_in_the_prune_report(tmp_path, tiny_dir):
    out = tmp_path / "searched"
    code = engine_main(["prune", "--model", str(tiny_dir), "--method", "width", "--ratio", "0.3", "--search", "2",
                        "--search-tokens", "128", "--calib", str(TEXT), "--calib-samples", "8", "--calib-seq-len", "32",
                        "--out", str(out)])
    assert code == 0
    report = json.loads((out / "prune_report.json").read_text())
    ranking = report["choices"]["search"]["ranking"]
    assert report["method"] == "width-search" and [r["rank"] for r in ranking] == [1, 2]
    cfg = AutoModelForCausalLM.from_pretrained(out).config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == tuple(
        ranking[0]["shape"][k] for k in ("layers", "hidden", "ffn"))
    assert not (tmp_path / ".searched.targeted").exists()  # saved: the resume point is spent


BAD_TARGETS = [
    ("hidden=128", "hidden=128 exceeds the parent's 64; allowed: 1..64"),
    ("heads=3,kv_heads=2", "heads=3 breaks GQA with kv_heads=2"),
    ("tiny-llama", "another family: arch llama (parent: qwen2)"),
    ("ffn=1.5", "ffn='1.5' must be an integer; allowed: 1..160"),
]


BAD_LRS = [
    (["--method", "targeted", "--target", "layers=1", "--mask-lr", "0"], "--mask-lr 0.0 must be a positive learning rate"),
    (["--method", "targeted", "--target", "layers=1", "--prune-lr", "nan"], "--prune-lr nan must be a positive"),
    (["--method", "width", "--ratio", "0.3", "--mask-lr", "0.1"], "--mask-lr only applies to --method targeted"),
]


@pytest.mark.parametrize("args,message", BAD_LRS)
def test_cli_bad_targeted_lr_exits_2_naming_it(tmp_path, tiny_dir, args, message, capsys):
    code = engine_main(["prune", "--model", str(tiny_dir), *args, "--calib", str(TEXT), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("target,message", BAD_TARGETS)
def test_cli_bad_target_exits_2_naming_the_field(tmp_path, tiny_dir, target, message, capsys):
    code = engine_main(["prune", "--model", str(tiny_dir), "--method", "targeted", "--target", target,
                        "--calib", str(TEXT), "--calib-samples", "2", "--calib-seq-len", "16", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_grid_accepts_targeted_and_checks_its_target_at_plan_time(tmp_path):
    import yaml

    from data.cli import BadInput
    from engine.grid.spec import load_grid, validate

    grid = {"name": "t", "data": {"shards": str(tmp_path / "none"), "seq_len": 32},
            "parents": [{"name": "p", "preset": "tiny-llama-m", "tokens": "20K"}], "methods": ["width", "targeted"],
            "ratios": [0.3], "tokens": "10K", "train": {"deepspeed": {"micro_batch": 4}},
            "method_args": {"targeted": {"target": "layers=3,heads=2,kv_heads=2,ffn=96,hidden=48", "tokens": "2K"}}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    jobs = [j.config for j in load_grid(path).jobs if j.config.method == "targeted"]
    assert len(jobs) == 1 and jobs[0].prune_args["target"].startswith("layers=3")
    validate(load_grid(path), tmp_path / "runs")
    grid["method_args"]["targeted"]["target"] = "hidden=999"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(BadInput, match="hidden=999 exceeds the parent's 64"):
        validate(load_grid(path), tmp_path / "runs")
    grid["method_args"]["targeted"] = {"tokens": "2K", "mask_rate": 1}
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(BadInput, match="unknown targeted option"):
        load_grid(path)
