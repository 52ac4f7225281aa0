"""The pruning-method table (``data.methods``): one row is the whole registration.

A toy method is added here as one row (plus its prune function and options type, which a real
method keeps in its own module under engine/pruning/): engine prune's options, job and grid
validation, the planner and the reports all see it without another file changing.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from data.cli import BadInput
from data.methods import METHODS, NEEDS_CALIB, SPARSE, TRAINED, MethodSpec, display_order

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ToyArgs:
    """The toy method's one option."""

    knob: int = 1


def toy_prune(model, ratio, calib, *, args=None):
    """depth-last's cut, with the parsed option recorded where the report shows it."""
    from engine.pruning import check_args, get_method

    report = get_method("depth-last")(model, ratio, calib)
    report.method = "toy"
    report.choices["knob"] = check_args("toy", args).knob
    return report


TOY = MethodSpec("toy", "a test method", "sparse", f"{__name__}:toy_prune", f"{__name__}:ToyArgs", calib=False)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(METHODS, "toy", TOY)
    return TOY


def test_engine_prune_takes_the_toy_option_from_its_args_type(toy, tmp_path, capsys):
    from engine.__main__ import main as engine_main
    from engine.cli.prune import setup

    base = ["--model", "tiny-llama", "--method", "toy", "--ratio", "0.4", "--out", str(tmp_path / "o")]
    job, _ = setup([*base, "--option", "knob=3"])
    assert job.options == {"knob": 3}
    assert engine_main(["prune", *base, "--option", "knob=many"]) == 2
    assert "toy option knob='many' must be an integer" in capsys.readouterr().err
    assert engine_main(["prune", *base, "--option", "nob=3"]) == 2
    assert "unknown toy option(s) nob; allowed: knob" in capsys.readouterr().err
    assert engine_main(["prune", *base, "--option", "knob=3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "toy" and report["choices"]["knob"] == 3


def _grid(tmp_path: Path, method_args: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "data": {"shards": "shards/none", "seq_len": 32},
        "parents": [{"name": "p", "preset": "tiny-llama", "tokens": "20K"}], "methods": ["toy", "depth"],
        "ratios": [0.5], "objectives": ["lm"], "inits": ["pruned"], "tokens": "10K", "method_args": method_args}))
    return path


def test_grid_files_validate_the_toy_options_at_plan_time(toy, tmp_path):
    from engine.grid.spec import load_grid

    jobs = [j.config for j in load_grid(_grid(tmp_path, {"toy": {"knob": 2}})).jobs if j.config.method == "toy"]
    assert [j.prune_args for j in jobs] == [{"knob": 2}]
    with pytest.raises(BadInput, match=r"unknown toy option\(s\) knbo; allowed: knob"):
        load_grid(_grid(tmp_path, {"toy": {"knbo": 2}}))
    with pytest.raises(BadInput, match="toy option knob='2x' must be an integer"):
        load_grid(_grid(tmp_path, {"toy": {"knob": "2x"}}))
    with pytest.raises(BadInput, match=r"unknown depth option\(s\) knob; allowed: batch_size, tolerance"):
        load_grid(_grid(tmp_path, {"depth": {"knob": 2}}))


def test_the_planner_and_the_reports_read_the_toy_row(toy):
    from planner.query import SPARSE_METHODS, parse_method
    from reports.plots import method_colors

    assert parse_method("toy") == "toy" and "toy" in SPARSE_METHODS
    assert display_order()[-1] == "toy"
    colors = method_colors(["toy", "depth"])
    assert colors["toy"] != colors["depth"] and method_colors(["toy"])["toy"] == colors["toy"]
    assert "toy" not in NEEDS_CALIB and "toy" not in TRAINED


def test_the_views_follow_the_rows():
    assert set(SPARSE) == {m for m in METHODS if m.startswith(("2:4", "unstructured"))}
    assert set(TRAINED) == {"targeted", "width-search"}
    assert set(METHODS) - set(NEEDS_CALIB) == {"depth-last", "2:4-magnitude", "unstructured-magnitude"}


def test_the_known_methods_keep_their_colours():
    """Reports drawn before the table existed coloured these ten methods in this order."""
    from reports.plots import _PALETTE, method_colors

    before = ("depth", "width", "2:4", "unstructured", "depth-block", "depth-last", "2:4-magnitude",
              "2:4-sparsegpt", "unstructured-magnitude", "unstructured-sparsegpt")
    colors = method_colors(METHODS)
    assert [colors[m] for m in before] == list(_PALETTE)
    assert len(set(colors.values())) == len(METHODS)


def test_every_row_names_a_frozen_options_type_in_a_torch_free_module():
    code = ("import sys; from data.methods import METHODS\n"
            "types = {m.name: m.args_type() for m in METHODS.values()}\n"
            "assert 'torch' not in sys.modules, sorted(k for k in sys.modules if k.startswith('engine'))\n"
            "import dataclasses\n"
            "print(sorted(n for n, t in types.items() if not t.__dataclass_params__.frozen))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    for spec in METHODS.values():
        assert all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                   for f in dataclasses.fields(spec.args_type())), spec.name


def test_the_bundled_grids_options_pass_their_types():
    from engine.pruning import check_args

    for path in sorted((ROOT / "grids").glob("*.yaml")):
        for method, args in (yaml.safe_load(path.read_text()).get("method_args") or {}).items():
            check_args(method, args)


def test_reconstruction_defaults_are_read_from_one_type():
    from engine.cli.prune import PruneJob
    from engine.cli.recon import ReconJob
    from engine.pruning.recon_args import ReconArgs
    from engine.train.config import ReconConfig

    defaults = {f.name: f.default for f in dataclasses.fields(ReconArgs)}
    assert {k: getattr(ReconConfig(), k) for k in ("granularity", "steps", "lr", "batch_size")} == \
        {k: defaults[k] for k in ("granularity", "steps", "lr", "batch_size")}
    prune_fields = {f.name: f.default for f in dataclasses.fields(PruneJob)}
    assert (prune_fields["recon_steps"], prune_fields["recon_lr"], prune_fields["recon_batch_size"]) == \
        (defaults["steps"], defaults["lr"], defaults["batch_size"])
    recon_fields = {f.name: f.default for f in dataclasses.fields(ReconJob)}
    assert all(recon_fields[k] == defaults[k] for k in ("granularity", "steps", "lr", "batch_size"))
