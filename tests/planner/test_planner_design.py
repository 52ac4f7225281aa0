"""planner design: law sensitivities, the delta-method search, the simulation check, the grid,
bad inputs. Real inputs: the family's real sizes from the model table and the bundled cards."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from data.cli import BadInput
from fitting.laws import LAWS, P2
from fitting.synthetic import TRUE_P2
from planner.design import DesignQuery, check, design_summary, plan, resolve_prior
from planner.design.candidates import achieved_ratio, candidate_parents
from planner.design.grid import write_grid
from planner.design.prior import to_coordinates, from_coordinates, weak_prior
from planner.query import parse_parent

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "planner" / "cards"
THETA = np.array([TRUE_P2[n] for n in P2.params])
AXES = {"params_before": np.array([1.2e9, 3.2e9, 8e9]), "ratio": np.array([0.2, 0.35, 0.5]),
        "tokens": np.array([1e8, 1e9, 3e9]), "loss_before": np.array([2.5, 2.3, 2.1])}


def _numeric(law, theta, f):
    u = to_coordinates(law, theta)
    eps = 1e-6
    cols = [(f(from_coordinates(law, u + eps * e)) - f(from_coordinates(law, u - eps * e))) / (2 * eps)
            for e in np.eye(len(u))]
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("name", list(LAWS))
def test_every_law_owns_its_curve_sensitivity(name):
    law = LAWS[name]
    rng = np.random.default_rng(0)
    theta = np.array([rng.uniform(0.5, 2) if p in law.coefs else rng.uniform(0.1, 0.5) for p in law.params])
    axes = {a: rng.uniform(0.2, 0.8, 4) if law.axis_domain(a).high == 1.0 else rng.uniform(1e3, 1e6, 4)
            for a in law.axes}
    got = law.log_jacobian(theta, **axes)
    want = _numeric(law, theta, lambda p: np.log(law.predict(p, **axes)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


def test_p2_d_star_gradient_matches_finite_differences():
    q = {"params_before": 8e9, "ratio": 0.5}
    got = P2.d_star_log_gradient(THETA, 1e-3, **q)
    want = _numeric(P2, THETA, lambda p: np.log(P2.d_star(p, 1e-3, **q)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[P2.params.index("N_C")] == 0 and got[P2.params.index("delta")] < -10  # N0 = 8B lever


def test_simulate_has_shared_run_offsets_and_stays_above_l0():
    runs = np.repeat([0, 1], 200)
    axes = {k: np.full(400, v[0]) for k, v in AXES.items()}
    y = P2.simulate(np.stack([THETA] * 3), runs, np.random.default_rng(1), noise=0.0, run_noise=0.01, **axes)
    assert y.shape == (3, 400)
    assert np.allclose(y[:, :200], y[:, :1]) and not np.allclose(y[:, 0], y[:, 200])
    assert (y > 2.5).all()


def test_depth_ratios_are_whole_layers_of_the_real_models():
    specs = {s.name: s for s in candidate_parents(parse_parent("8B", "llama3"))}
    assert list(specs) == ["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b"]
    assert achieved_ratio(specs["llama-3.1-8b"], "depth", 0.5) == pytest.approx(18 * specs["llama-3.1-8b"].layer_params
                                                                               / 8_030_261_248)
    assert achieved_ratio(specs["llama-3.2-1b"], "depth", 0.9) is None
    assert achieved_ratio(specs["llama-3.2-1b"], "2:4", 0.6) is None


def test_bundled_llama3_card_is_refused_as_prior_at_real_sizes_with_the_reason():
    q = DesignQuery(parse_parent("8B", "llama3"), "depth", 0.5, budget=100)
    prior = resolve_prior(q)
    assert prior.kind == "weak" and "p2_llama3_depth.json" in prior.notes[0] and "ln V" in prior.notes[0]


def test_design_within_budget_beats_the_naive_grid_and_summary_is_cheap():
    q = DesignQuery(parse_parent("8B", "llama3"), "depth", 0.5, budget=100)
    p = plan(q, weak_prior())
    assert p.chosen.gpu_hours <= 100 and {s.name for s in p.chosen.parents} == {"llama-3.2-1b", "llama-3.2-3b",
                                                                                  "llama-3.1-8b"}
    assert p.naive.gpu_hours == pytest.approx(p.chosen.gpu_hours)
    assert p.chosen.sd < p.naive.sd
    hours = [d.gpu_hours for d in p.front]
    sds = [d.sd for d in p.front]
    assert hours == sorted(hours) and sds == sorted(sds, reverse=True)
    line = design_summary(DesignQuery(parse_parent("8B", "llama3"), "depth", 0.5))
    assert line.startswith("a grid on the family's real models") and "3 parents" in line
    assert "GPU-hours for D* within x" in line


def test_more_budget_never_buys_a_worse_design():
    prior = weak_prior()
    sds = [plan(DesignQuery(parse_parent("qwen2.5-7b", None), "width", 0.35, budget=b), prior).chosen.sd
           for b in (60, 200, 1000)]
    assert sds[0] >= sds[1] >= sds[2]


def test_simulation_check_refits_with_the_fitter_and_bounds_the_errors():
    q = DesignQuery(parse_parent("8B", "llama3"), "depth", 0.5, budget=100)
    p = check(plan(q, weak_prior()), 4, workers=1)
    c = p.checks["chosen"]
    assert c.worlds == 4 and c.failed == 0
    assert np.abs(c.errors).max() < 0.3          # D* recovered within 35% in every world
    assert p.factor("chosen") >= p.chosen.factor  # the check only widens a promise


def test_written_grid_is_accepted_by_the_engine(tmp_path):
    from engine.grid.spec import load_grid, validate

    q = DesignQuery(parse_parent("8B", "llama3"), "depth", 0.5, budget=100)
    p = plan(q, weak_prior())
    out = write_grid(p, tmp_path / "grid.yaml", str(tmp_path / "shards"), "", force=False)
    grid = load_grid(out)
    # hub-id parents, planned offline from the model table (no weights, no network)
    assert [x.path for x in grid.parents] == [s.hf_id for s in p.chosen.parents]
    validate(grid, tmp_path / "runs")
    assert len(grid.jobs) == len(p.chosen.runs)
    assert {j.config.ratio for j in grid.jobs} == set(p.chosen.ratios)
    assert all(j.config.tokens == int(round(p.chosen.tokens)) for j in grid.jobs)
    with pytest.raises(BadInput, match="already exists; pass --force"):
        write_grid(p, out, "s", "m", force=False)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "planner", "design", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--family", "mistral"], "unknown --family 'mistral'; allowed: llama3"),
    (["--ratio", "0.9"], "bad --ratio 0.9: depth cannot reach it on llama-3.1-8b"),
    (["--budget-gpu-hours", "0.01"], "too small for even one run"),
    (["--prior", str(CARDS / "p2_qwen2.5_depth.json")], "fitted on family 'qwen2.5'"),
    (["--prior", str(CARDS / "p2_llama3_depth.json")], "does not describe parents of this size"),
    (["--budget-gpu-hours", "10", "--target-precision", "0.2"], "not allowed with argument"),
])
def test_bad_inputs_exit_2_with_one_line(args, message):
    base = ["--params", "8B", "--ratio", "0.5", "--method", "depth", "--family", "llama3"]
    over = dict(zip(args[::2], args[1::2]))
    merged = [x for k, v in zip(base[::2], base[1::2]) if k not in over for x in (k, v)] + args
    r = _cli(*merged, "--simulations", "0")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr


def test_prior_card_of_another_law_exits_2(tmp_path):
    card = json.loads((CARDS / "p2_llama3_depth.json").read_text())
    card.update(law="chinchilla", params={"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28})
    card.pop("bootstrap", None)
    card.pop("jackknife", None)
    (tmp_path / "c.json").write_text(json.dumps(card))
    r = _cli("--params", "8B", "--ratio", "0.5", "--prior", str(tmp_path / "c.json"), "--simulations", "0")
    assert r.returncode == 2 and "'chinchilla' card" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_verdict_first_and_out_never_overwritten(tmp_path):
    out = tmp_path / "grid.yaml"
    out.write_text("mine\n")
    r = _cli("--params", "8B", "--ratio", "0.5", "--budget-gpu-hours", "100", "--simulations", "0", "--out", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr and out.read_text() == "mine\n"
    r = _cli("--params", "8B", "--ratio", "0.5", "--budget-gpu-hours", "100", "--simulations", "0",
             "--out", str(out), "--force", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verdict"].startswith("verdict: run 9 jobs") and doc["chosen"]["gpu_hours"] <= 100
    assert yaml.safe_load(out.read_text())["methods"] == ["depth"]


def test_huber_delta_is_the_fitters():
    from fitting.fit import FitConfig
    from planner.design.plan import HUBER_DELTA

    assert HUBER_DELTA == FitConfig().delta


def test_sequential_mode_stops_when_the_runs_already_pin_d_star(tmp_path):
    from fitting.synthetic import p2_curves
    from planner.design import runs_prior

    # Curves of the family's real sizes, as a run store would hold them (CSV table with run ids).
    data = p2_curves(sizes=(1_235_814_400, 3_212_749_824, 8_030_261_248), ratios=(0.25, 0.5, 0.6), points=12,
                     tokens=(5e6, 1e9), noise=0.003, run_noise=0.003, seed=3)
    import pandas as pd

    frame = pd.DataFrame({**data.axes, "eval_loss": data.y, "run_id": data.run_ids, "method": "depth",
                          "family": "llama3"})
    frame.to_csv(tmp_path / "runs.csv", index=False)
    q = DesignQuery(parse_parent("8B", "llama3"), "depth", 0.5, target=0.5)
    prior, info = runs_prior(str(tmp_path / "runs.csv"), q, bootstrap=8)
    p = plan(q, prior, info)
    assert prior.kind == "runs" and p.existing_sd is not None and p.done
    tight = plan(DesignQuery(parse_parent("8B", "llama3"), "depth", 0.5, target=0.001), prior, info)
    assert not tight.done


def test_simulation_refits_with_the_lighter_multistart_agree_with_the_default(monkeypatch):
    import planner.design.simulate as sim

    q = DesignQuery(parse_parent("qwen2.5-7b", None), "width", 0.35, budget=200)
    prior = weak_prior()
    axes, runs, _, y = sim._worlds(prior, plan(q, prior).chosen.runs, 4, 9)
    job = ("p2", axes, runs, y, q.axes, q.slope, 1e-3)
    light = np.array(sim._refit(job))
    monkeypatch.setattr(sim, "SIM_FIT", {})  # FitConfig's defaults: 3 polished grid points, 64 random starts
    full = np.array(sim._refit(job))
    np.testing.assert_allclose(light, full, atol=0.01)


def test_runs_of_toy_parents_are_refused_as_the_prior_of_a_real_family():
    from planner.design import runs_prior

    q = DesignQuery(parse_parent("8B", "llama3"), "depth", 0.5, target=0.25)
    with pytest.raises(BadInput, match="does not describe parents of this size"):
        runs_prior(str(ROOT / "docs" / "reference_runs"), q, bootstrap=4)
