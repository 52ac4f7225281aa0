"""Hub ids wherever a model or tokenizer is named, offline, against a hub cache built here.

Each test stores tiny real checkpoints in huggingface_hub's cache layout (``tests/hub_cache.py``)
under a fresh HF_HOME with HF_HUB_OFFLINE=1, then drives the commands a user types.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from data.cli import BadInput
from data.hub import parse_hub_id, parse_model_source
from engine.__main__ import main as engine_main
from hub_cache import COMMIT, add_to_cache, hub_cache, save_tiny, tiny_tokenizer  # noqa: F401  (fixture)

OTHER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture
def cached_llama(hub_cache, tmp_path) -> str:
    """``acme/tiny-llama`` (a tiny LlamaForCausalLM with its tokenizer) in the hub cache."""
    add_to_cache(hub_cache, "acme/tiny-llama", save_tiny(tmp_path / "src-llama"))
    return "acme/tiny-llama"


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_model_names_are_classified_without_reading_weights(tmp_path) -> None:
    assert parse_model_source(str(tmp_path)).kind == "dir"
    hub = parse_model_source("Qwen/Qwen2.5-0.5B@v1.0")
    assert (hub.kind, hub.hub.repo_id, hub.hub.revision) == ("hub", "Qwen/Qwen2.5-0.5B", "v1.0")
    assert hub.preset.name == "qwen2.5-0.5b"  # the table knows its shape: plans need no download
    real = parse_model_source("Llama-3.2-1B")  # a real checkpoint's table name means that checkpoint
    assert (real.kind, real.hub.repo_id) == ("hub", "meta-llama/Llama-3.2-1B")
    explicit = parse_model_source("random:llama-3.2-1b")
    assert (explicit.kind, explicit.preset.name) == ("random", "llama-3.2-1b")
    assert parse_model_source("tiny-llama").kind == "random"  # a test shape has no checkpoint
    assert parse_hub_id("work/pruned/depth25") is None and parse_hub_id("./x/y") is None
    with pytest.raises(BadInput, match="random:NAME takes one of"):
        parse_model_source("random:llama-9000")
    with pytest.raises(BadInput, match="neither a model directory nor a known preset"):
        parse_model_source("llama-9000")
    with pytest.raises(BadInput, match="names revision 'a' but --revision is 'b'"):
        parse_model_source("acme/x@a", revision="b")


def test_prune_a_cached_hub_model_offline_records_its_commit(cached_llama, tmp_path, capsys) -> None:
    out = tmp_path / "pruned"
    code = engine_main(["prune", "--model", cached_llama, "--method", "depth-last", "--ratio", "0.4",
                        "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "prune_report.json").read_text())
    assert report["source"] == {"kind": "hub", "hub_id": "acme/tiny-llama", "revision": "main", "commit": COMMIT}
    assert (out / "tokenizer.json").is_file()  # the snapshot's tokenizer travels with the model
    assert f"hub acme/tiny-llama at commit {COMMIT[:12]}" in capsys.readouterr().err


def test_a_revision_picks_its_own_commit(hub_cache, tmp_path) -> None:
    from engine.models import load_model, resolve_model

    add_to_cache(hub_cache, "acme/m", save_tiny(tmp_path / "a", seed=0))
    add_to_cache(hub_cache, "acme/m", save_tiny(tmp_path / "b", seed=1), commit=OTHER, ref="v2")
    assert resolve_model("acme/m").record()["commit"] == COMMIT
    assert resolve_model("acme/m@v2").record() == {"kind": "hub", "hub_id": "acme/m", "revision": "v2", "commit": OTHER}
    assert resolve_model("acme/m", revision=OTHER).record()["commit"] == OTHER
    a, b = load_model("acme/m"), load_model("acme/m@v2")
    assert not a.model.embed_tokens.weight.equal(b.model.embed_tokens.weight)  # different weights, as stored


def test_offline_without_the_model_is_one_line_naming_it(hub_cache, capsys, tmp_path) -> None:
    assert engine_main(["prune", "--model", "acme/absent@v3", "--method", "depth-last", "--ratio", "0.4",
                        "--out", str(tmp_path / "p")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'acme/absent@v3'" in line and "HF_HUB_OFFLINE is set" in line
    assert "'hf download acme/absent --revision v3'" in line and str(hub_cache) in line
    assert not (tmp_path / "p").exists()


def test_a_real_preset_name_is_its_checkpoint_and_random_init_is_explicit(hub_cache, capsys, tmp_path) -> None:
    """``llama-3.1-8b`` once built a random 8B model silently; now it is the hub checkpoint."""
    assert engine_main(["prune", "--model", "llama-3.1-8b", "--method", "depth-last", "--ratio", "0.4",
                        "--out", str(tmp_path / "p")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'llama-3.1-8b' (hub meta-llama/Llama-3.1-8B)" in line and "random:llama-3.1-8b" in line
    out = tmp_path / "r"
    assert engine_main(["prune", "--model", "random:tiny-qwen", "--method", "depth-last", "--ratio", "0.4",
                        "--out", str(out)]) == 0
    assert "RANDOM INIT of the tiny-qwen shape" in capsys.readouterr().err
    assert json.loads((out / "prune_report.json").read_text())["source"] == {"kind": "random", "preset": "tiny-qwen"}


def test_a_hub_model_of_another_architecture_is_refused(hub_cache, tmp_path, capsys) -> None:
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    add_to_cache(hub_cache, "acme/gpt", folder)
    assert engine_main(["prune", "--model", "acme/gpt", "--method", "depth-last", "--ratio", "0.4",
                        "--out", str(tmp_path / "p")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "model_type 'gpt2'" in line and "supported: llama, qwen2" in line


def test_tokenizer_by_hub_id(hub_cache, tmp_path) -> None:
    from data.tokenizers import load_tokenizer, resolve_tokenizer_dir

    add_to_cache(hub_cache, "acme/tok", tiny_tokenizer(tmp_path / "tok"))
    tok = load_tokenizer("acme/tok")
    assert tok.decode(tok("the lazy dog")["input_ids"]) == "the lazy dog"
    assert resolve_tokenizer_dir("acme/tok").name == COMMIT
    with pytest.raises(BadInput, match="'hf download acme/none'"):
        load_tokenizer("acme/none")


def test_data_prepare_takes_a_hub_tokenizer(hub_cache, tmp_path, capsys) -> None:
    from data.__main__ import main as data_main

    add_to_cache(hub_cache, "acme/tok", tiny_tokenizer(tmp_path / "tok"))
    (tmp_path / "texts").mkdir()
    for i in range(6):
        (tmp_path / "texts" / f"d{i}.txt").write_text(f"doc {i}: " + "the quick brown fox jumps. " * 40)
    assert data_main(["corpus", "build", "--out", str(tmp_path / "c"), "--domains", "--local",
                      f"a={tmp_path / 'texts'}", "--eval-fraction", "0.3"]) == 0
    assert data_main(["prepare", "--corpus", str(tmp_path / "c"), "--tokenizer", "acme/tok", "--seq-len", "16",
                      "--out", str(tmp_path / "s")]) == 0, capsys.readouterr().err
    from data.tokenizers import load_tokenizer

    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["vocab_size"] == len(load_tokenizer(tmp_path / "tok"))  # the hub tokenizer's own


def test_model_fetch_copies_the_snapshot_and_names_the_commit(cached_llama, tmp_path, capsys) -> None:
    out = tmp_path / "copy"
    assert engine_main(["model", "fetch", cached_llama, "--out", str(out)]) == 0
    assert f"acme/tiny-llama at commit {COMMIT}" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors").is_symlink()
    assert engine_main(["model", "fetch", cached_llama, "--out", str(out)]) == 2  # no silent overwrite


def _grid(tmp_path: Path, parent: str) -> Path:
    from train_fakes import MemData, write_shards

    shards = write_shards(tmp_path / "shards", MemData(seq_len=32))
    grid = {"name": "hubgrid", "data": {"shards": str(shards)}, "parents": [{"name": "h", "path": parent}],
            "methods": ["depth-last"], "ratios": [0.4], "tokens": 4096}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_grid_plans_offline_from_the_cached_config_alone(hub_cache, tmp_path, capsys) -> None:
    """Only config.json is cached (no weights): plan reads the shape from it and downloads nothing."""
    src = save_tiny(tmp_path / "src", tokenizer=False)
    (src / "model.safetensors").unlink()
    add_to_cache(hub_cache, "acme/cfg-only", src)
    assert engine_main(["grid", "plan", str(_grid(tmp_path, "acme/cfg-only")), "--runs", str(tmp_path / "runs")]) == 0
    assert "1 jobs" in capsys.readouterr().out
    assert not list(hub_cache.rglob("*.safetensors"))


def test_grid_plans_a_table_checkpoint_offline_and_refuses_an_unknown_one(hub_cache, tmp_path, capsys) -> None:
    assert engine_main(["grid", "plan", str(_grid(tmp_path, "Qwen/Qwen2.5-0.5B")), "--runs", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert engine_main(["grid", "plan", str(_grid(tmp_path, "acme/unknown")), "--runs", str(tmp_path / "r")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "'acme/unknown'" in line and "'hf download acme/unknown'" in line


def test_a_grid_job_with_a_hub_parent_records_the_commit_in_run_json(cached_llama, tmp_path, dist, mem_data) -> None:
    from data.runs import RunStore
    from engine.train.config import job_from_dict
    from engine.train.recipe import run_job

    job = job_from_dict({"parent": cached_llama, "tokens": 2 * 32 * 8, "runs_dir": str(tmp_path / "runs"),
                         "data": {"shards": "mem"}, "method": "depth-last", "ratio": 0.4, "save_model": True,
                         "eval": {"points": 2, "max_sequences": 8}, "deepspeed": {"micro_batch": 8}})
    assert run_job(job, dist, mem_data) == "done"
    record = RunStore(tmp_path / "runs").read(job.run_id)
    assert record["meta"]["source"] == {"kind": "hub", "hub_id": "acme/tiny-llama", "revision": "main",
                                        "commit": COMMIT}
    assert record["config"]["parent"] == "acme/tiny-llama"
    assert (tmp_path / "runs" / job.run_id / "model" / "tokenizer.json").is_file()


def test_eval_a_hub_model_scores_the_same_as_its_directory(cached_llama, hub_cache, tmp_path, capsys) -> None:
    """``engine eval org/name``: the snapshot's own tokenizer, the same numbers as the files, the commit kept."""
    (tmp_path / "doc.txt").write_text("the quick brown fox jumps over the lazy dog. " * 30)
    args = ["--tasks", "corpus_ppl", "--data", str(tmp_path / "doc.txt"), "--limit", "1"]
    assert engine_main(["eval", cached_llama, *args, "--out", str(tmp_path / "hub.json")]) == 0
    assert engine_main(["eval", str(tmp_path / "src-llama"), *args, "--out", str(tmp_path / "dir.json")]) == 0
    capsys.readouterr()
    hub, local = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("hub", "dir"))
    assert hub["source"]["commit"] == COMMIT and local["source"] == {"kind": "dir", "path": str(tmp_path / "src-llama")}
    assert hub["tasks"]["corpus_ppl"]["metrics"] == local["tasks"]["corpus_ppl"]["metrics"]


def test_a_grid_preset_parent_is_pretrained_from_an_explicit_random_init(tmp_path, capsys) -> None:
    """``preset:`` parents are random by design: a real shape's job says ``random:`` so it never
    fetches the checkpoint of the same name; test shapes keep their bare name (and run ids)."""
    from engine.grid.spec import load_grid

    path = _grid(tmp_path, "unused")
    grid = yaml.safe_load(path.read_text())
    grid["parents"] = [{"name": "q", "preset": "qwen2.5-0.5b", "tokens": 4096},
                       {"name": "t", "preset": "tiny-llama", "tokens": 4096}]
    path.write_text(yaml.safe_dump(grid))
    parents = {j.config.parent for j in load_grid(path).jobs if j.kind == "parent"}
    assert parents == {"random:qwen2.5-0.5b", "tiny-llama"}
    assert engine_main(["grid", "plan", str(path), "--runs", str(tmp_path / "runs")]) == 0


def test_a_hub_model_without_safetensors_is_refused_by_name(hub_cache, tmp_path, capsys) -> None:
    src = save_tiny(tmp_path / "bin-only", tokenizer=False)
    (src / "model.safetensors").rename(src / "pytorch_model.bin")  # what we never fetch
    add_to_cache(hub_cache, "acme/bin-only", src)
    capsys.readouterr()
    assert engine_main(["prune", "--model", "acme/bin-only", "--method", "depth-last", "--ratio", "0.4",
                        "--out", str(tmp_path / "p")]) == 2
    assert "'acme/bin-only' has no safetensors weights at commit " + COMMIT in _one_line(capsys.readouterr().err)
