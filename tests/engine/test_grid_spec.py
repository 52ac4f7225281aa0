"""Grid specs: expansion, deterministic ids, validation, job files and the launch command."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data.cli import BadInput
from engine.grid.spec import job_command, load_grid, validate, write_job_files
from engine.train.config import load_job

ROOT = Path(__file__).resolve().parents[2]
GRID = {"name": "t", "data": {"shards": "shards/none", "seq_len": 32},
        "parents": [{"name": "p", "preset": "tiny-llama", "tokens": "20K"}],
        "methods": ["width", "depth"], "ratios": [0.25, 0.5], "objectives": ["lm", "kd"],
        "inits": ["pruned", "random"], "seeds": [0], "tokens": "10K",
        "train": {"deepspeed": {"micro_batch": 4}}}


def write(tmp_path, **over):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, **over}))
    return path


def test_expansion_puts_parents_first_with_deterministic_ids(tmp_path):
    grid = load_grid(write(tmp_path))
    assert len(grid.jobs) == 1 + 2 * 2 * 2 * 2
    assert grid.jobs[0].kind == "parent" and grid.jobs[0].config.init == "random"
    assert grid.jobs[0].config.save_model and grid.jobs[0].config.method == "none"
    post = grid.jobs[1]
    assert post.config.parent == f"run:{grid.jobs[0].run_id}" and post.depends == grid.jobs[0].run_id
    assert post.run_id.startswith("p_width_r0.25_lm_pruned_s0_") and len(post.run_id.rsplit("_", 1)[1]) == 8
    again = load_grid(write(tmp_path))
    assert [j.run_id for j in again.jobs] == [j.run_id for j in grid.jobs]
    changed = load_grid(write(tmp_path, train={"deepspeed": {"micro_batch": 8}}))
    assert changed.jobs[1].run_id != post.run_id  # the id is a hash of the resolved config


def test_job_files_are_complete_rerunnable_configs(tmp_path):
    grid = load_grid(write(tmp_path))
    files = write_job_files(grid, tmp_path / "runs")
    assert [f.parent.name for f in files] == [j.run_id for j in grid.jobs]
    job = load_job(files[3])
    assert job.run_id == grid.jobs[3].run_id and job.runs_dir == str((tmp_path / "runs").resolve())
    assert job.deepspeed.micro_batch == 4 and Path(job.data.shards).is_absolute()


@pytest.mark.parametrize("over, message", [
    ({"ratios": [0.25, 0.25]}, "same run id"),
    ({"train": {"tokens": 5}}, "set by the grid itself"),
    ({"train": {"optim": {"warmup": 3}}}, r"unknown key\(s\) warmup in optim"),
    ({"parents": [{"name": "p", "preset": "gpt-2", "tokens": "1M"}]}, "unknown preset 'gpt-2'"),
    ({"parents": [{"name": "p", "path": "/no/such/model"}]}, "path '/no/such/model' is not a directory"),
    ({"methods": ["snip"]}, "method='snip' is not allowed"),
    ({"colour": "red"}, r"unknown key\(s\) colour in grid; allowed: name, data, parents"),
])
def test_bad_grids_are_rejected_with_one_line(tmp_path, over, message):
    with pytest.raises(BadInput, match=message):
        validate(load_grid(write(tmp_path, **over)), tmp_path / "runs")


def test_budget_below_one_batch_and_long_sequences_are_rejected(tmp_path):
    with pytest.raises(BadInput, match=r"tokens=100 is smaller than one optimizer step \(128 tokens"):
        validate(load_grid(write(tmp_path, tokens=100)), tmp_path / "runs")
    with pytest.raises(BadInput, match="seq_len=1024 exceeds the parent's max_position_embeddings=512"):
        validate(load_grid(write(tmp_path, data={"shards": "x", "seq_len": 1024})), tmp_path / "runs")


def test_job_command_runs_the_list_through_the_deepspeed_launcher():
    cmd = job_command(["a.yaml", "b.yaml"], 2, master_port=29555)
    assert Path(cmd[0]).name == "deepspeed"
    assert cmd[1:] == ["--num_gpus", "2", "--master_port", "29555", "--no_local_rank", "--module",
                       "engine.train", "--config", "a.yaml", "b.yaml"]
    multi = job_command(["a.yaml"], 4, hostfile="hosts", master_addr="node1")
    assert multi[3:7] == ["--hostfile", "hosts", "--no_ssh_check", "--master_addr"]


def _with_fetched_parents(path: Path, tmp_path: Path) -> Path:
    """The grid at ``path``, its ``path:`` parents (fetched by the user, e.g. `engine model
    fetch`) stood in for by the config of the preset their directory is named after (planning
    reads the config alone), else a tiny model's, so that every job is still validated."""
    from data.models import MODELS
    from engine.models import config_for

    spec = yaml.safe_load(path.read_text())
    missing = [p for p in spec["parents"] if p.get("path") and not (ROOT / p["path"]).is_dir()]
    if not missing:
        return path
    for i, parent in enumerate(missing):
        stand_in = tmp_path / f"{path.stem}-parent{i}"
        config_for(MODELS.get(Path(parent["path"]).name.lower(), MODELS["tiny-llama"])).save_pretrained(stand_in)
        parent["path"] = str(stand_in)
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(spec))
    return out


def test_every_shipped_grid_plans(tmp_path):
    for path in sorted((ROOT / "grids").rglob("*.yaml")):
        grid = load_grid(_with_fetched_parents(path, tmp_path))
        validate(grid, tmp_path / "runs")
        assert grid.jobs, path


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "engine", "grid", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60)


def test_cli_plan_prints_the_table_and_bad_input_exits_2(tmp_path):
    from train_fakes import MemData, write_shards

    missing = _cli("plan", str(write(tmp_path)), "--runs", str(tmp_path / "runs"))
    assert missing.returncode == 2 and "has no token shards; make them with 'data corpus build" in missing.stderr
    shards = write_shards(tmp_path / "shards", MemData(seq_len=32))
    done = _cli("plan", str(write(tmp_path, data={"shards": str(shards), "seq_len": 32})), "--runs", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["id", "parent", "method", "ratio", "objective", "init",
                                                   "tokens", "status"]
    assert "17 jobs: 17 pending" in done.stdout
    bad = _cli("plan", str(write(tmp_path, inits=["warm"])))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "init='warm' is not allowed; allowed: pruned, random" in bad.stderr
    assert not (tmp_path / "runs").exists()  # plan writes nothing


def test_launch_without_deepspeed_exits_2_and_writes_nothing(tmp_path):
    import os

    env = {**os.environ, "PRUNELAW_DEEPSPEED": "no-such-deepspeed"}
    done = _cli("launch", str(write(tmp_path)), "--runs", str(tmp_path / "runs"), env=env)
    assert done.returncode == 2, done.stderr
    assert "not an executable deepspeed launcher" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_ratios_per_method_and_method_args(tmp_path):
    grid = load_grid(write(tmp_path, methods=["width", "2:4"], ratios={"width": [0.25, 0.5], "2:4": [0.4]},
                           objectives=["lm"], inits=["pruned"], method_args={"2:4": {"tolerance": 0.3}}))
    posts = [j.config for j in grid.jobs if j.kind == "post"]
    assert [(c.method, c.ratio) for c in posts] == [("width", 0.25), ("width", 0.5), ("2:4", 0.4)]
    assert posts[2].prune_args == {"tolerance": 0.3} and posts[0].prune_args == {}
    with pytest.raises(BadInput, match="missing: 2:4"):
        load_grid(write(tmp_path, methods=["width", "2:4"], ratios={"width": [0.25]}))


# -- plan-time checks of parents: reachability, directory, architecture, tokenizer ------------

@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-qwen", "tiny-llama-s", "ref-llama-1", "ref-qwen-3"])
def test_plan_time_shape_maps_agree_with_the_loaded_model(preset):
    """The config-only maps ``engine grid plan`` runs are the ones pruning runs on the model."""
    from data.models import MODELS
    from engine.models import build_model
    from engine.pruning import common, width
    from engine.pruning.reach import _nm_reachable, depth_layers
    from engine.pruning.semistructured import coverage_ratios
    from engine.pruning.sparse_common import Pattern

    spec = MODELS[preset]
    model = build_model(preset)
    assert spec.params_total == common.count_params(model).total
    for ratio in (0.1, 0.2, 0.3):
        try:
            expected = common.layers_to_drop(model, ratio, "depth")
        except BadInput as exc:
            with pytest.raises(BadInput, match=str(exc).split(";")[0]):
                depth_layers(spec.params_total, spec.layer_params, spec.layers, ratio, "depth")
        else:
            assert depth_layers(spec.params_total, spec.layer_params, spec.layers, ratio, "depth") == expected
    assert _nm_reachable(spec, 2, 4) == pytest.approx(coverage_ratios(model, Pattern("n:m", n=2, m=4)), rel=1e-12)
    base = width.Base(spec.hidden, spec.heads, spec.kv_heads, spec.head_dim, spec.ffn, spec.layers, spec.vocab,
                      spec.tied, spec.qkv_bias)
    assert base == width.Base.of(model)


def _grid_with(tmp_path, **over):
    from train_fakes import MemData, write_shards

    shards = tmp_path / "shards"
    if not shards.exists():
        write_shards(shards, MemData(vocab=2048, seq_len=32))
    return load_grid(write(tmp_path, data={"shards": str(shards), "seq_len": 32}, objectives=["lm"],
                           inits=["pruned"], **over))


def test_the_readme_tiny_grid_is_refused_when_depth_would_remove_every_layer(tmp_path):
    """grids/tiny.yaml used to ask depth 0.5 of a 4-layer parent: the job failed on every launch."""
    grid = _grid_with(tmp_path, parents=[{"name": "s", "preset": "tiny-llama-s", "tokens": "20K"}],
                      methods=["depth"], ratios=[0.25, 0.5])
    with pytest.raises(BadInput, match=r"parent 's' \(4 layers.*vocab 2048\): depth: ratio 0.5 would remove all 4 "
                                       r"layers; reachable ratios drop 1..3 layers: 0.1252, 0.2504, 0.3756"):
        validate(grid, tmp_path / "runs")
    fixed = _grid_with(tmp_path, parents=[{"name": "s", "preset": "tiny-llama-s", "tokens": "20K"}],
                       methods=["depth"], ratios=[0.25, 0.5], exclude=[{"parent": "s", "ratios": [0.5]}])
    validate(fixed, tmp_path / "runs")
    assert [j.config.ratio for j in fixed.jobs if j.kind == "post"] == [0.25]
    assert not (tmp_path / "runs").exists(), "a refused plan writes nothing"


@pytest.mark.parametrize("method, ratio, message", [
    ("width", 0.35, "width on axes ffn,heads,hidden cannot reach ratio 0.35 within tolerance 0.02: nearest achievable is 0.2628"),
    ("2:4", 0.5, r"2:4 removes 50% of the linears .* not 0.5"),
])
def test_unreachable_width_and_2_4_ratios_are_refused_at_plan_time(tmp_path, method, ratio, message):
    grid = _grid_with(tmp_path, parents=[{"name": "p", "preset": "ref-llama-1", "tokens": "20K"}],
                      methods=[method], ratios=[ratio])
    with pytest.raises(BadInput, match=message):
        validate(grid, tmp_path / "runs")


def _saved_parent(path: Path, model_type: str = "llama", tokenizer_words: list[str] | None = None) -> Path:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    from data.models import MODELS
    from engine.models import config_for

    config_for(MODELS["tiny-llama"], vocab=4096).save_pretrained(path)
    if model_type != "llama":
        import json

        doc = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**doc, "model_type": model_type}))
    if tokenizer_words is not None:
        Tokenizer(WordLevel({w: i for i, w in enumerate(tokenizer_words)}, unk_token=tokenizer_words[0])).save(
            str(path / "tokenizer.json"))
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "path '.*nowhere' is not a directory; expected a save_pretrained model directory"),
    ("gpt2", "is a 'gpt2' model \\(config.json model_type\\); allowed: llama, qwen2"),
    ("other_tokenizer", "its tokenizer is not the one shards .* were made with"),
])
def test_a_parent_that_cannot_serve_the_grid_is_refused_at_plan_time(tmp_path, case, message):
    grid = _grid_with(tmp_path)  # writes the shards: vocab 2048, a tokenizer of words a..
    shards = Path(grid.spec.data["shards"])
    words = ["<unk>", "alpha", "beta", "gamma"]
    _saved_parent(shards / "tokenizer", tokenizer_words=words)  # the shards' own tokenizer.json
    parent = {"missing": tmp_path / "nowhere", "gpt2": _saved_parent(tmp_path / "gpt2", "gpt2"),
              "other_tokenizer": _saved_parent(tmp_path / "other", tokenizer_words=words[::-1])}[case]
    grid = _grid_with(tmp_path, parents=[{"name": "p", "path": str(parent)}], methods=["depth"], ratios=[0.1])
    with pytest.raises(BadInput, match=message):
        validate(grid, tmp_path / "runs")
    same = _saved_parent(tmp_path / "same", tokenizer_words=words)
    validate(_grid_with(tmp_path, parents=[{"name": "p", "path": str(same)}], methods=["depth"], ratios=[0.1]),
             tmp_path / "runs")


def test_a_parent_vocabulary_smaller_than_the_shards_is_refused(tmp_path):
    grid = _grid_with(tmp_path)
    small = tmp_path / "small"
    from data.models import MODELS
    from engine.models import config_for

    config_for(MODELS["tiny-llama"], vocab=512).save_pretrained(small)
    grid = _grid_with(tmp_path, parents=[{"name": "p", "path": str(small)}], methods=["depth"], ratios=[0.1])
    with pytest.raises(BadInput, match="has a vocabulary of 512 tokens but shards .* use 2048"):
        validate(grid, tmp_path / "runs")


def test_a_repeated_key_in_a_grid_is_refused_not_last_wins(tmp_path):
    path = tmp_path / "grid.yaml"
    text = yaml.safe_dump(GRID) + "ratios: [0.5]\n"
    path.write_text(text)
    with pytest.raises(BadInput, match=r"key 'ratios' appears twice \(lines \d+ and \d+\)"):
        load_grid(path)


def test_merge_keys_may_override_but_a_flow_mapping_may_not_repeat(tmp_path):
    from engine.yamlfile import load_yaml

    path = tmp_path / "anchors.yaml"
    path.write_text("base: &b {lr: 1.0e-3, warmup_frac: 0.05}\ntrain:\n  <<: *b\n  lr: 3.0e-4\n")
    assert load_yaml(path, "grid file")["train"] == {"lr": 3.0e-4, "warmup_frac": 0.05}
    path.write_text("train: {tokens: 2K, tokens: 4K}\n")
    with pytest.raises(BadInput, match=r"key 'tokens' appears twice \(lines 1 and 1\)"):
        load_yaml(path, "job file")


@pytest.mark.parametrize("rule", [{"parent": "q"}, {"method": "depthh"}, {"ratios": 0.5}, {"colour": "red"}])
def test_an_exclude_rule_that_matches_nothing_is_refused(tmp_path, rule):
    with pytest.raises(BadInput, match=r"exclude\[0\]"):
        load_grid(write(tmp_path, exclude=[rule]))
