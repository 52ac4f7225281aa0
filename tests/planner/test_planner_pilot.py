"""Pilot-run calibration, verdicts, the practice table and compute accounting of the planner."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fitting.synthetic import TRUE_P2
from planner.__main__ import main
from fitting.pilot import CardPrior, Pilot, fit_pilot, read_pilot
from planner.practice import load_practice
from fitting.criteria import Criterion, Reference
from fitting.term import TokenTerm
from test_planner_cards import write_card

N0, RHO, L0 = 1e9, 0.5, 2.2
S = (1 / RHO) ** TRUE_P2["gamma"] * (1 / N0) ** TRUE_P2["delta"]
TRUTH = TokenTerm(L0 + S * (TRUE_P2["N_C"] / N0 ** TRUE_P2["alpha"] + TRUE_P2["E"]), S * TRUE_P2["D_C"],
                  TRUE_P2["beta"], None)
FULL = np.geomspace(1e6, 1e10, 60)


def curve(noise: float = 0.002, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return TRUTH.a + TRUTH.k * FULL ** -TRUTH.beta + noise * rng.standard_normal(len(FULL))


def write_csv(path, tokens, loss, extra: str = "", start: float | None = None):
    rows = ([f"0,{start}"] if start is not None else []) + [f"{t:.0f},{y:.6f}" for t, y in zip(tokens, loss)]
    path.write_text("tokens,loss" + extra + "\n" + "\n".join(r + (",2.2" if extra else "") for r in rows) + "\n")
    return path


def pilot_of(fraction: float, seed: int = 0) -> Pilot:
    keep = FULL <= fraction * FULL[-1]
    return Pilot("synthetic", FULL[keep], curve(seed=seed)[keep], None, L0, N0, RHO)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("prior", ["none", "card"])
def test_pilot_recovers_the_true_budget_and_final_loss_within_its_intervals(seed, prior):
    """A synthetic P2 curve with known truth: pilot of the first 30 % of tokens."""
    pilot = pilot_of(0.3, seed)
    betas = np.random.default_rng(9).normal(TRUE_P2["beta"], 0.03, 200) if prior == "card" else None
    term = fit_pilot(pilot, prior=None if betas is None else CardPrior(betas), loss_before=L0)
    final, true_final = term.loss(FULL[-1]), TRUTH.loss(FULL[-1]).value
    assert final.low <= true_final <= final.high
    for criterion in (Criterion.of("slope", 1e-3), Criterion.of("recover", 0.9)):
        ref = Reference(tokens=float(pilot.tokens[0]))
        d, true_d = term.tokens(criterion, ref), TRUTH.tokens(criterion, ref).value
        assert d.low <= true_d <= d.high, (criterion, d, true_d)


def test_card_prior_narrows_a_short_pilot():
    """Six noisy points over the first 0.5 %: the card's beta pins the curvature the pilot cannot."""
    tokens = np.geomspace(1e6, 5e7, 6)
    loss = TRUTH.a + TRUTH.k * tokens ** -TRUTH.beta + 0.01 * np.random.default_rng(3).standard_normal(6)
    pilot = Pilot("short", tokens, loss, None, L0, N0, RHO)
    alone = fit_pilot(pilot, loss_before=L0).loss(FULL[-1])
    prior = fit_pilot(pilot, prior=CardPrior(np.full(100, TRUE_P2["beta"])), loss_before=L0).loss(FULL[-1])
    assert prior.high - prior.low < 0.8 * (alone.high - alone.low)
    truth = TRUTH.loss(FULL[-1]).value
    assert alone.low <= truth <= alone.high and prior.low <= truth <= prior.high


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BUNDLED_DEPTH = "p2_llama3_depth.json"
"""The bundled default card: parents of 30K-411K parameters, bootstrap beta 0.41-0.57."""


def world_csv(path, n0: float, beta: float, fraction: float, noise: float, seed: int) -> float:
    """A pilot CSV of ``L = a + k D^-beta`` run to ``fraction`` of its true D* (recover 0.9 from
    the step-0 loss, 37.5 tokens per parameter), as ``benchmarks/pilot_backtest.py --synthetic``
    draws them; returns the true D*."""
    rng = np.random.default_rng(seed)
    a, gap, d_star = 2.3, 1.8, 37.5 * n0
    k = 0.1 * gap * d_star ** beta
    tokens = fraction * d_star * np.concatenate([np.geomspace(1e-3, 0.05, 10, endpoint=False),
                                                 np.linspace(0.05, 1.0, 20)])
    clean = a + k * tokens ** -beta
    keep = clean < a + gap  # the power law holds once the loss is below its step-0 value
    loss = clean * np.exp(noise * rng.standard_normal(len(tokens)))
    write_csv(path, tokens[keep], loss[keep], start=a + gap)
    return d_star


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_pilot_that_contradicts_the_bundled_card_wins(tmp_path, capsys, monkeypatch, seed):
    """8B, true beta 0.2 against the bundled card's 0.41-0.57, a pilot to 30 % of D*: with the
    card's bootstrap as the whole prior these worlds gave 7.8B-10B, intervals up to 42B, against
    a true 300B; now the interval holds the truth and the answer says the card carried little
    weight."""
    monkeypatch.delenv("PRUNELAW_CARDS_DIR", raising=False)
    pilot = tmp_path / "pilot.csv"
    true_d = world_csv(pilot, 8e9, 0.2, 0.3, 0.003, seed)
    code, out, err = run_cli(capsys, "recommend", "--params", "8B", "--ratio", "0.5", "--pilot", str(pilot), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "pilot+card" and doc["card"]["path"].endswith(BUNDLED_DEPTH)
    assert doc["tokens"]["low"] <= true_d <= doc["tokens"]["high"], (doc["tokens"], true_d)
    assert doc["pilot"]["fit"]["card_weight"] < 0.1


def test_a_short_pilot_at_the_card_s_own_scale_borrows_the_card(tmp_path, capsys, monkeypatch):
    """400K parameters (inside the bundled card's parents), the card's own beta, a noisy pilot to
    10 % of D*: the card's beta pins the curvature the pilot cannot, so D*'s interval is
    narrower with the card, the truth stays inside both, and the card carries most weight."""
    monkeypatch.delenv("PRUNELAW_CARDS_DIR", raising=False)
    pilot = tmp_path / "pilot.csv"
    true_d = world_csv(pilot, 4e5, 0.45, 0.1, 0.01, seed=0)
    argv = ("recommend", "--params", "400K", "--ratio", "0.5", "--pilot", str(pilot), "--json")
    with_card, alone = (json.loads(run_cli(capsys, *argv, *extra)[1]) for extra in ((), ("--no-card",)))
    assert with_card["card"]["path"].endswith(BUNDLED_DEPTH) and alone["mode"] == "pilot"
    width = {name: np.log(doc["tokens"]["high"] / doc["tokens"]["low"]) for name, doc in
             (("card", with_card), ("alone", alone))}
    assert width["card"] < 0.6 * width["alone"], width
    for doc in (with_card, alone):
        assert doc["tokens"]["low"] <= true_d <= doc["tokens"]["high"]
    assert with_card["pilot"]["fit"]["card_weight"] > 0.5


def test_modes_and_verdicts(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PRUNELAW_CARDS_DIR", str(tmp_path))
    write_card(tmp_path / "p2_llama3_depth.json")  # fixture card: parents 100M..1B
    keep = FULL <= 3e9
    pilot = write_csv(tmp_path / "pilot.csv", FULL[keep], curve()[keep], start=4.0)
    code, out, _ = run_cli(capsys, "recommend", "--params", "1B", "--ratio", "0.4")
    assert code == 0 and out.splitlines()[0].startswith("verdict: in range")  # D* = 1M * 10^(1/0.35) < 1B
    code, out, _ = run_cli(capsys, "recommend", "--params", "8B", "--ratio", "0.5")
    assert out.splitlines()[0].startswith("verdict: extrapolating 8x beyond the card (N0 = 8B vs fitted 1B")
    assert "published practice" in out and "arxiv.org" in out
    code, out, _ = run_cli(capsys, "recommend", "--params", "1B", "--ratio", "0.5", "--pilot", str(pilot), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["mode"] == "pilot+card" and doc["verdict"].startswith("verdict: pilot-calibrated")
    assert doc["card_only"]["tokens"]["value"] > 0 and "moved D*" in doc["card_only"]["moved"]
    assert "measured loss right after pruning" in doc["assumptions"]["recover_reference"]
    code, out, _ = run_cli(capsys, "recommend", "--params", "1B", "--ratio", "0.5", "--pilot", str(pilot),
                           "--no-card", "--json")
    doc = json.loads(out)
    assert doc["mode"] == "pilot" and doc["card"] is None and "pilot-only" in doc["verdict"]
    assert doc["loss"]["low"] <= doc["loss"]["value"] <= doc["loss"]["high"]


def test_pilot_from_an_engine_run_directory(tmp_path, capsys):
    from data.runs import RunStore

    store = RunStore(tmp_path / "runs")
    store.write("r1", {"status": "done", "meta": {"params_before": N0, "ratio": 0.49, "loss_before": L0,
                                                  "method": "depth"}})
    keep = FULL <= 3e9
    store.append_curve("r1", [{"step": i, "tokens": int(t), "eval_loss": float(y)}
                              for i, (t, y) in enumerate(zip(FULL[keep], curve()[keep]))])
    pilot = read_pilot(tmp_path / "runs", ratio=0.5, method="depth")  # a store with one run
    assert pilot.loss_before == L0 and pilot.params_before == N0 and len(pilot.tokens) == keep.sum()
    code, out, err = run_cli(capsys, "recommend", "--params", "1B", "--ratio", "0.5", "--pilot",
                             str(tmp_path / "runs" / "r1"), "--no-card", "--target-loss", "2.9", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["assumptions"]["loss_before"] == L0 and doc["loss"]["value"] == pytest.approx(2.9, abs=1e-3)
    code, _, err = run_cli(capsys, "recommend", "--params", "8B", "--ratio", "0.5", "--pilot",
                           str(tmp_path / "runs" / "r1"), "--no-card")
    assert code == 2 and "parent of 1e+09 params" in err and len(err.strip().splitlines()) == 1


def test_pilot_from_parquet_and_from_a_store_of_several_runs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data.cli import BadInput
    from data.runs import RunStore

    keep = FULL <= 3e9
    pq.write_table(pa.table({"tokens": FULL[keep], "eval_loss": curve()[keep]}), tmp_path / "pilot.parquet")
    pilot = read_pilot(tmp_path / "pilot.parquet")
    assert len(pilot.tokens) == keep.sum() and pilot.loss_before is None
    store = RunStore(tmp_path / "runs")
    for run_id, ratio in (("a", 0.25), ("b", 0.5)):
        store.write(run_id, {"status": "done", "meta": {"ratio": ratio, "method": "width"}})
        store.append_curve(run_id, [{"step": i, "tokens": int(t), "eval_loss": 3.0 - 0.1 * i}
                                    for i, t in enumerate((0, 1e6, 2e6, 4e6))])
    assert read_pilot(tmp_path / "runs", ratio=0.5, method="width").path.endswith("b")
    with pytest.raises(BadInput, match="2 runs and 0 match"):
        read_pilot(tmp_path / "runs", ratio=0.7, method="width")


@pytest.mark.parametrize("content, argv, needle", [
    ("tokens,loss\n1e6,3\n2e6,2.9\n", [], "at least 3"),
    ("tokens,eval\n1e6,3\n2e6,2.9\n3e6,2.8\n", [], "needs columns tokens and loss"),
    ("tokens,loss\n1e6,3\n3e6,2.9\n2e6,2.8\n", [], "tokens must increase"),
    ("tokens,loss\n1e6,3\n2e6,nan\n3e6,2.8\n", [], "NaN"),
    ("tokens,loss\n1e6,3\n2e6,x\n3e6,2.8\n", [], "not a number"),
    ("tokens,loss,ratio\n1e6,3,0.3\n2e6,2.9,0.3\n3e6,2.8,0.3\n", [], "ratio 0.3"),
    ("tokens,loss,params_before\n1e6,3,8e9\n2e6,2.9,8e9\n3e6,2.8,8e9\n", [], "parent of 8e+09 params"),
    ("tokens,loss,loss_before\n1e6,3,2.2\n2e6,2.9,2.2\n3e6,2.8,2.2\n", ["--loss-before", "2.0"], "contradicts"),
])
def test_bad_pilots_exit_2_with_one_line(tmp_path, capsys, content, argv, needle):
    path = tmp_path / "pilot.csv"
    path.write_text(content)
    code, out, err = run_cli(capsys, "recommend", "--params", "1B", "--ratio", "0.5", "--pilot", str(path),
                             "--no-card", *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and needle in err, err


def test_missing_pilot_and_no_card_without_pilot_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "recommend", "--params", "1B", "--ratio", "0.5", "--pilot", str(tmp_path / "no.csv"))
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(capsys, "recommend", "--params", "1B", "--ratio", "0.5", "--no-card")
    assert code == 2 and "--no-card needs --pilot" in err


def test_practice_table_loads_and_is_cited():
    rows = load_practice()
    assert {r.target for r in rows} >= {"Llama-3.1-Minitron-4B-Width-Base", "Sheared-LLaMA-2.7B",
                                         "Sparse-Llama-3.1-8B-2of4", "up to 1/3 of parameters removed"}
    for r in rows:
        assert r.source.startswith("https://") and len(r.citation) > 20 and 0 < r.ratio < 1
        assert 1e9 < r.tokens_low <= r.tokens <= r.tokens_high
    sparse = next(r for r in rows if r.target == "Sparse-Llama-3.1-8B-2of4")
    minitron = next(r for r in rows if r.target == "Llama-3.1-Minitron-4B-Width-Base")
    assert sparse.tokens == 13e9 and minitron.tokens == 94e9


def test_compute_counts_dense_kernels_for_sparse_methods(tmp_path, capsys):
    card = write_card(tmp_path / "sparse.json", method="2:4")
    base = ["--params", "1B", "--law", str(card), "--loss-before", "2.2", "--json"]
    _, out, _ = run_cli(capsys, "recommend", "--ratio", "0.5", "--method", "2:4", *base)
    doc = json.loads(out)
    assert doc["compute"]["flops"] == pytest.approx(6 * 1e9 * doc["tokens"]["value"])  # 6 N0 D
    _, out, _ = run_cli(capsys, "recommend", "--ratio", "0.5", "--method", "2:4", "--sparse-kernel", *base)
    doc = json.loads(out)
    assert doc["compute"]["flops"] == pytest.approx(6 * 0.5e9 * doc["tokens"]["value"])
    for extra, factor in (([], 1.0), (["--sparse-kernel"], 2.0)):
        _, out, _ = run_cli(capsys, "compare", "--ratios", "0.5", "--method", "2:4", "--tokens", "10B",
                            *extra, *base)
        doc = json.loads(out)
        assert doc["rows"][0]["equal_compute"]["tokens"] == pytest.approx(factor * 10e9)
        assert doc["equal_compute"]["kernel"] == ("sparse" if extra else "dense")
    _, out, _ = run_cli(capsys, "compare", "--ratios", "0.5", "--method", "depth", "--tokens", "10B", *base)
    assert json.loads(out)["rows"][0]["equal_compute"]["tokens"] == pytest.approx(20e9)


def test_compare_names_its_token_matched_settings(tmp_path, capsys):
    card = write_card(tmp_path / "p2.json")
    scratch = write_card(tmp_path / "chin.json", law="chinchilla", method=None)
    _, out, _ = run_cli(capsys, "compare", "--params", "8B", "--ratios", "0.5", "--tokens", "10B", "--law", str(card),
                        "--scratch-law", str(scratch), "--loss-before", "2.2", "--parent-tokens", "15T", "--json")
    doc = json.loads(out)
    names = " ".join(doc["scratch_settings"])
    assert "equal post-training tokens" in names and "whole pipeline's tokens" in names
    row = doc["rows"][0]["equal_tokens"]
    assert row["scratch_pipeline_loss"]["value"] < row["scratch_loss"]["value"]  # 15T + 10B tokens beat 10B


def test_pilot_path_imports_no_pandas_or_scipy(tmp_path):
    import subprocess
    import sys

    keep = FULL <= 3e9
    pilot = write_csv(tmp_path / "pilot.csv", FULL[keep], curve()[keep])
    probe = ("import sys, io, contextlib\nfrom planner.__main__ import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    code = main(['recommend', '--params', '1B', '--ratio', '0.5', '--pilot', {str(pilot)!r},"
             " '--no-card', '--json'])\n"
             "heavy = ('pandas', 'scipy', 'pyarrow', 'torch')\n"
             "print(code, sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "0 []", proc.stdout + proc.stderr


SMOLLM2_DEPTH_05 = "smollm2_depth_r0.5_kd_pruned_s0_17a9e759"


def test_a_pilot_leaves_its_lr_warm_up_out_of_the_fit(capsys):
    """A real run's first evaluations (SmolLM2-135M depth 0.5, 2% warm-up: 2K, 4K, 6K tokens)
    sit on the learning-rate ramp, where the loss follows no power law; the fit starts at the
    first point at the peak rate and the answer says how many it left out."""
    from pathlib import Path

    run = Path(__file__).resolve().parents[2] / "docs" / "smollm2_runs" / SMOLLM2_DEPTH_05
    pilot = read_pilot(run)
    assert pilot.warmup_left_out == 3 and pilot.tokens[0] == 12288 and pilot.loss_start > 10
    assert main(["recommend", "--params", "135M", "--ratio", "0.5", "--method", "depth", "--family", "smollm2",
                 "--pilot", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pilot"]["warmup_left_out"] == 3


def test_a_pilot_still_in_its_warm_up_is_refused_with_the_reason(tmp_path, capsys):
    tokens = np.array([0, 1000, 2000, 3000, 4000, 6000])
    lr = np.array([0.1, 0.2, 0.4, 0.6, 0.8, 1.0]) * 1e-4  # the peak is reached at the last point
    path = tmp_path / "pilot.csv"
    rows = ["tokens,loss,lr"] + [f"{t},{5 - 0.1 * i},{r}" for i, (t, r) in enumerate(zip(tokens, lr))]
    path.write_text("\n".join(rows) + "\n")
    assert main(["recommend", "--params", "135M", "--ratio", "0.5", "--pilot", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "4 more inside the learning-rate warm-up" in err
