"""Grid specs: expansion, deterministic ids, validation, job files and the launch command."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from data.cli import BadInput
from engine.grid.spec import job_command, load_grid, validate, write_job_files
from engine.train.config import load_job

ROOT = Path(__file__).resolve().parents[1]
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
    ({"parents": [{"name": "p", "path": "/no/such/model"}]}, "neither a model directory"),
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
    fetch`) stood in for by a saved tiny model, so that every job is still validated."""
    spec = yaml.safe_load(path.read_text())
    missing = [p for p in spec["parents"] if p.get("path") and not (ROOT / p["path"]).is_dir()]
    if not missing:
        return path
    from engine.models import build_model

    stand_in = tmp_path / f"{path.stem}-parent"
    build_model("tiny-llama").save_pretrained(stand_in)
    for parent in missing:
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
