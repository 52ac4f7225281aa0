"""``planner`` commands as a user runs them: --json schema, unit parsing, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from data.models import get_spec
from planner.__main__ import main
from test_planner_cards import write_card

TOP_KEYS = {"command", "schema_version", "verdict", "credible", "why_not_credible", "mode", "query", "card", "pilot",
            "assumptions", "criterion", "tokens", "loss", "asymptote", "card_only", "budgets", "compute",
            "extrapolation", "next_steps", "practice", "warnings", "notes"}
ESTIMATE = {"value", "low", "high"}


@pytest.fixture
def cards(tmp_path, monkeypatch):
    """A cards directory holding a llama3/depth P2 card and a llama3 Chinchilla card."""
    write_card(tmp_path / "p2_llama3_depth.json")
    write_card(tmp_path / "chinchilla_llama3.json", law="chinchilla", method=None)
    monkeypatch.setenv("PRUNELAW_CARDS_DIR", str(tmp_path))
    return tmp_path


def run_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # raises if anything but one JSON document is on stdout


def test_recommend_json_schema(cards, capsys):
    doc = run_json(capsys, "recommend", "--params", "8B", "--ratio", "0.5", "--json")
    assert set(doc) == TOP_KEYS
    assert doc["command"] == "recommend" and doc["schema_version"] == 3
    assert doc["credible"] is True and doc["extrapolation"] is None
    assert doc["next_steps"]["pilot"]["commands"][-1].endswith("--pilot runs/RUN_ID")
    assert set(doc["tokens"]) == ESTIMATE and doc["tokens"]["low"] < doc["tokens"]["value"] < doc["tokens"]["high"]
    assert [b["multiple"] for b in doc["budgets"]] == [0.1, 0.3, 1.0, 3.0]
    assert set(doc["compute"]) >= {"flops", "gpu", "mfu", "gpu_hours", "price_per_gpu_hour", "cost_usd"}
    assert doc["card"]["path"].endswith("p2_llama3_depth.json") and doc["card"]["selected_because"]
    assert doc["criterion"]["kind"] == "recover" and doc["criterion"]["value"] == 0.9
    assert doc["assumptions"]["loss_before"] is None and doc["assumptions"]["loss_scale"].startswith("dL")
    assert doc["verdict"].startswith("verdict: extrapolating") and doc["mode"] == "card"
    assert doc["practice"] and all(p["source"].startswith("https://") for p in doc["practice"])
    assert any("8x above the largest parent" in w for w in doc["warnings"])


@pytest.mark.parametrize("text, expected", [
    ("8B", 8_000_000_000), ("1.5B", 1_500_000_000), ("500M", 500_000_000), ("8e9", 8_000_000_000),
    ("8030261248", 8_030_261_248), ("llama-3.1-8b", get_spec("llama-3.1-8b").params_total),
    ("Qwen2.5-7B", get_spec("qwen2.5-7b").params_total),
])
def test_params_parsing(cards, capsys, text, expected):
    write_card(cards / "p2_qwen_depth.json", family="qwen2.5")
    doc = run_json(capsys, "recommend", "--params", text, "--ratio", "0.5", "--json")
    assert doc["query"]["params_before"] == expected
    assert doc["query"]["params_after"] == pytest.approx(0.5 * expected)


def test_model_name_fixes_family_and_card(cards, capsys):
    write_card(cards / "p2_qwen_depth.json", family="qwen2.5")
    doc = run_json(capsys, "recommend", "--params", "qwen2.5-1.5b", "--ratio", "0.3", "--json")
    assert doc["query"]["family"] == "qwen2.5" and doc["query"]["model"] == "qwen2.5-1.5b"
    assert doc["card"]["path"].endswith("p2_qwen_depth.json")


@pytest.mark.parametrize("argv, needle", [
    (["--params", "8X"], "'8X'"),
    (["--params", "-1"], "'-1'"),
    (["--params", "0"], "'0'"),
    (["--ratio", "1.2"], "'1.2'"),
    (["--ratio", "0"], "'0'"),
    (["--method", "prune-everything"], "'prune-everything'; allowed: depth"),
    (["--family", "gpt"], "'gpt'; allowed: llama3"),
    (["--params", "llama-3.1-8b", "--family", "qwen2.5"], "contradicts"),
    (["--gpu", "tpu"], "'tpu'; allowed: h100"),
    (["--mfu", "0"], "--mfu"),
    (["--slope", "-1"], "--slope"),
    (["--recover", "1.5"], "--recover"),
    (["--loss-before", "-2"], "--loss-before"),
    (["--slope", "1e-3", "--target-loss", "2"], "not allowed with"),
    (["--law", "missing.json"], "'missing.json' not found"),
    (["--target-loss", "0.5", "--loss-before", "0.45"], "below the law's asymptote"),
    (["--target-loss", "2.5"], "L0 is unknown"),
    (["--target-loss", "9", "--loss-before", "2.4"], "right after pruning"),
])
def test_bad_input_exits_2_with_one_line(cards, capsys, argv, needle):
    base = {"--params": "8B", "--ratio": "0.5"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = ["recommend"] + [x for kv in base.items() for x in kv]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], captured.err


def test_corrupt_and_wrong_law_cards_exit_2(cards, tmp_path, capsys):
    (tmp_path / "broken.json").write_text('{"law": "p2", "params": ')
    for card, needle in ((tmp_path / "broken.json", "not valid JSON"),
                         (cards / "chinchilla_llama3.json", "'chinchilla' card, a law without token, size and ratio axes")):
        assert main(["recommend", "--params", "8B", "--ratio", "0.5", "--law", str(card)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]


def test_no_bundled_card_says_pass_law_or_run_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRUNELAW_CARDS_DIR", str(tmp_path))
    assert main(["recommend", "--params", "8B", "--ratio", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--law" in err and "engine demo" in err


def test_text_output_names_card_criterion_and_assumptions(cards, capsys):
    assert main(["recommend", "--params", "llama-3.1-8b", "--ratio", "0.5", "--loss-before", "2.1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict: extrapolating 8.03x beyond the card")
    for needle in ("llama-3.1-8b", "p2_llama3_depth.json", "criterion  recover", "given with --loss-before",
                   "tokens D*", "GPU-hours", "warning: N0 = 8.03B is 8.03x above"):
        assert needle in out, needle


def test_compare_json_equal_tokens_compute_and_scratch(cards, capsys):
    doc = run_json(capsys, "compare", "--params", "8B", "--ratios", "0.5,0.25,0.75", "--tokens", "10B",
                   "--loss-before", "2.2", "--json")
    assert doc["query"]["ratios"] == [0.25, 0.5, 0.75]
    assert doc["equal_compute"]["flops"] == pytest.approx(6 * 8e9 * 10e9)
    assert doc["scratch_card"]["path"].endswith("chinchilla_llama3.json")
    for row in doc["rows"]:
        assert row["equal_tokens"]["tokens"] == 10e9
        assert row["equal_compute"]["tokens"] == pytest.approx(10e9 / (1 - row["ratio"]))
        assert row["equal_compute"]["loss"]["value"] < row["equal_tokens"]["loss"]["value"]
        assert row["equal_tokens"]["winner"] in ("pruning", "scratch", "uncertain")
    losses = [r["equal_tokens"]["loss"]["value"] for r in doc["rows"]]
    assert losses == sorted(losses), "gamma < 0: harder pruning, higher loss at equal tokens"


def test_compare_without_scratch_card_says_so(tmp_path, monkeypatch, capsys):
    write_card(tmp_path / "p2.json")
    monkeypatch.setenv("PRUNELAW_CARDS_DIR", str(tmp_path))
    doc = run_json(capsys, "compare", "--params", "8B", "--ratios", "0.5", "--tokens", "1B", "--json")
    assert doc["scratch_card"] is None and "--scratch-law" in doc["scratch_reason"]
    assert doc["rows"][0]["equal_tokens"]["winner"] is None


def test_cards_lists_the_directory(cards, capsys):
    doc = run_json(capsys, "cards", "--json")
    files = {c["file"]: c for c in doc["cards"]}
    assert files["p2_llama3_depth.json"]["law"] == "p2" and files["chinchilla_llama3.json"]["law"] == "chinchilla"


@pytest.mark.parametrize("command", ["recommend", "compare", "cards"])
def test_help_has_examples(command, capsys):
    try:  # argparse exits 0 after --help; the shared dispatcher may turn that into a return
        code = main([command, "--help"])
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    out = capsys.readouterr().out
    assert out.count(f"planner {command}") >= 3 and "examples:" in out


def test_console_script_json_is_the_only_stdout(cards, tmp_path):
    """End to end in a fresh interpreter: exit 0, stdout parses as exactly one JSON document."""
    proc = subprocess.run([sys.executable, "-m", "planner", "recommend", "--params", "1.5B", "--ratio", "0.3",
                           "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["query"]["params_before"] == 1_500_000_000
    bad = subprocess.run([sys.executable, "-m", "planner", "recommend", "--params", "8X", "--ratio", "0.5"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1


def test_winner_needs_separated_intervals():
    from planner.compare import winner
    from fitting.term import Estimate

    assert winner(Estimate(2.0, 1.9, 2.1), Estimate(2.5, 2.3, 2.7)) == "pruning"
    assert winner(Estimate(2.6, 2.5, 2.7), Estimate(2.2, 2.1, 2.3)) == "scratch"
    assert winner(Estimate(2.0, 1.8, 2.4), Estimate(2.1, 2.3, 2.5)) == "uncertain"
    assert winner(Estimate(2.0), Estimate(2.1)) == "pruning"  # no samples: point estimates


def test_compare_calls_scratch_the_winner_when_the_law_says_so(cards, capsys):
    # a from-scratch law with a low floor and a pruning card whose parent loss is high
    write_card(cards / "chinchilla_llama3.json", law="chinchilla", method=None, spread=0.001,
               params={"E": 1.0, "A": 10.0, "B": 10.0, "alpha": 0.3, "beta": 0.3})
    doc = run_json(capsys, "compare", "--params", "8B", "--ratios", "0.5", "--tokens", "100B",
                   "--loss-before", "3.0", "--json")
    assert doc["rows"][0]["equal_tokens"]["winner"] == "scratch"


def test_card_without_bootstrap_gives_null_intervals(tmp_path, capsys):
    card = write_card(tmp_path / "point.json", n_boot=0)
    doc = run_json(capsys, "recommend", "--params", "1B", "--ratio", "0.4", "--law", str(card), "--json")
    assert doc["tokens"]["low"] is None and doc["tokens"]["high"] is None and doc["tokens"]["value"] > 0
    assert doc["card"]["n_bootstrap"] == 0


def test_sparse_method_states_the_dense_kernel_cost(tmp_path, capsys):
    card = write_card(tmp_path / "sparse.json", method="2:4")
    doc = run_json(capsys, "recommend", "--params", "1B", "--ratio", "0.5", "--method", "2:4",
                   "--law", str(card), "--json")
    assert any("dense kernels" in n and "2x" in n for n in doc["notes"])
    assert not any("fitted on method" in w for w in doc["warnings"])


@pytest.mark.parametrize("module", ["recommend", "compare", "cards"])
def test_help_examples_run(module, cards, capsys):
    """Every example in an epilog runs as printed (with fixture cards standing in)."""
    import importlib
    import shlex

    write_card(cards / "p2_qwen2.5_width.json", family="qwen2.5", method="width")
    (cards / "runs").mkdir()
    write_card(cards / "runs" / "p2.json")
    write_card(cards / "p2_llama3_2-4.json", method="2:4")
    pilot = cards / "pilot.csv"
    pilot.write_text("tokens,loss\n" + "".join(f"{t:.0f},{2.3 + 40 * t ** -0.35:.6f}\n"
                                                 for t in (1e7, 3e7, 1e8, 3e8, 1e9)))
    files = {"card.json": cards / "p2_llama3_depth.json", "p2.json": cards / "p2_llama3_depth.json",
             "pilot.csv": pilot,
             "chinchilla.json": cards / "chinchilla_llama3.json", "runs/cards": cards / "runs"}
    epilog = importlib.import_module(f"planner.cli.{module}").EPILOG
    examples = [line.strip() for line in epilog.splitlines() if line.strip().startswith("planner ")]
    assert len(examples) >= 2
    for line in examples:
        argv = [str(files.get(tok, tok)) for tok in shlex.split(line)[1:]]
        assert main(argv) == 0, (line, capsys.readouterr().err)


def test_recommend_repeats_the_card_s_identifiability_notes(capsys):
    """The bundled llama3/width card has alpha = 0 at its bound with N_C and E gone to 0: the
    planner says which simpler law that is, in the text and in --json."""
    from pathlib import Path

    card = Path(__file__).resolve().parents[2] / "planner" / "cards" / "p2_llama3_width.json"
    argv = ["recommend", "--params", "400K", "--ratio", "0.5", "--law", str(card)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    collapse = ("collapsed: N_C -> 0 and E -> 0, so alpha is free: the fit is p2 without the size term "
                "N_C/N0^alpha and the constant E; only the data term D_C/D^beta remains")
    assert "card fit (what the card's fit could not pin down; the answer rests on them):" in out
    assert f"  {collapse}" in out.splitlines()
    assert any(line.strip().startswith("alpha = 0 is at its lower bound 0") for line in out.splitlines())
    assert any("sit at a bound or vanished" in line and "alpha" in line for line in out.splitlines())
    doc = run_json(capsys, *argv, "--json")
    notes = doc["card"]["identifiability"]
    assert notes[0] == collapse and any("sloppy direction" in n for n in notes)
    assert any("N_C" in w and "alpha" in w and "bound" in w for w in doc["warnings"])


def test_a_card_predicting_more_than_a_uniform_guess_is_called_not_credible(capsys):
    # The bundled llama3 depth card, 19,500x out at 8B, predicts a dL above ln(128,256) = 11.76
    # nats after its first fitted budget per parameter: no trained model loses that much, so
    # the verdict says the card does not transfer and no budget is given.
    assert main(["recommend", "--params", "8B", "--ratio", "0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"].startswith("verdict: not credible at this scale: N0 = 8B is")
    assert out["credible"] is False and "ln V = 11.76 nats" in out["why_not_credible"]
    assert out["tokens"] is None and out["budgets"] == [] and out["compute"] is None
    extra = out["extrapolation"]
    assert "not a prediction" in extra["label"] and extra["tokens"]["value"] > 1e9 and len(extra["budgets"]) == 4
    pilot = out["next_steps"]["pilot"]
    assert pilot["job"]["optim"]["schedule"] == "constant" and pilot["job"]["method"] == "depth"
    assert pilot["tokens"] == pytest.approx(0.1 * 94e9 / 8.03e9 * 8e9, rel=0.02)  # a tenth of Minitron's
    assert out["next_steps"]["design"] == "planner design --params 8B --ratio 0.5 --method depth --family llama3"
    # the same card at a parent it was fitted on predicts a small gap and keeps its verdict
    assert main(["recommend", "--params", "222000", "--ratio", "0.3", "--json"]) == 0
    near = json.loads(capsys.readouterr().out)
    assert near["credible"] and "not credible" not in near["verdict"]
    assert not any("uniform guess" in w for w in near["warnings"]) and near["tokens"]["value"] > 0


def test_the_not_credible_screen_leads_with_the_verdict_then_practice_then_the_pilot(capsys):
    assert main(["recommend", "--params", "8B", "--ratio", "0.5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("verdict: not credible") and lines[1].startswith("why ")
    order = [out.index(s) for s in ("published practice", "Minitron-4B-Depth", "a grounded answer",
                                    "engine train --config pilot.yaml", "--pilot runs/RUN_ID",
                                    "planner design --params 8B --ratio 0.5 --method depth --family llama3")]
    assert order == sorted(order)
    assert "schedule: constant" in out and "tokens: 9.4B" in out
    assert "tokens D*" not in out and "$1," not in out and "--show-extrapolation" in out
    assert main(["recommend", "--params", "8B", "--ratio", "0.5", "--show-extrapolation"]) == 0
    shown = capsys.readouterr().out
    head = shown.index("the card's extrapolation (its formula where it does not describe models; not a prediction)")
    assert shown.index("tokens D*") > head > shown.index("a grounded answer")


def test_a_small_parents_pilot_costs_a_fraction_of_an_hour_not_zero(capsys):
    """SmolLM2-135M's pilot (160M tokens) is minutes of an H100: the line gives the amount."""
    assert main(["recommend", "--params", "135M", "--ratio", "0.25", "--method", "depth", "--family", "smollm2",
                 "--loss-before", "3.2"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("1. pilot:")]
    assert "~0 " not in line and "($0)" not in line
    hours = float(line.split("~")[1].split()[0])
    assert 0.01 < hours < 1


def test_readme_target_loss_query_answers_with_the_screen(capsys):
    """A target loss the card puts at 2,000T tokens at 8B is no reason to exit 2 when the card
    does not describe 8B models at all: the screen says so and what to run instead."""
    argv = ["recommend", "--params", "llama-3.1-8b", "--ratio", "0.5", "--method", "width",
            "--target-loss", "2.3", "--loss-before", "2.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict: not credible") and "--pilot runs/RUN_ID" in out
    assert main(argv + ["--show-extrapolation"]) == 0
    assert "reach: " in capsys.readouterr().out
    # a target the formula cannot reach at all (below its asymptote): still the screen, valid JSON
    doc = run_json(capsys, *argv[:-4], "--target-loss", "1.0", "--loss-before", "2.1", "--json")
    assert doc["extrapolation"]["tokens"] is None and "asymptote" in doc["extrapolation"]["reach"]
    assert all(p["law_over_practice"] is None for p in doc["practice"])


def test_compare_gives_the_same_verdict(capsys):
    argv = ["compare", "--params", "8B", "--ratios", "0.25,0.5,0.75", "--tokens", "10B", "--loss-before", "2.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict: not credible at this scale: N0 = 8B is")
    assert "pruned + post-trained" not in out and "planner recommend --params 8B --ratio 0.25 --method depth" in out
    doc = run_json(capsys, *argv, "--json")
    assert doc["credible"] is False and doc["rows"] == [] and len(doc["extrapolation"]["rows"]) == 3
    assert main(argv + ["--show-extrapolation"]) == 0
    assert "pruned + post-trained" in capsys.readouterr().out
    assert main(["recommend", "--params", "8B", "--ratio", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == doc["verdict"].replace(
        "its losses at this N0 are no prediction", "the card gives no budget here")


def test_a_query_at_the_real_parents_own_size_and_loss_is_not_called_an_extrapolation(capsys):
    """SmolLM2-135M has 134.5M parameters and L0 3.19996 on its eval set; a user types 135M and
    3.2. The bundled smollm2 card's range warnings must not fire for that (they did, at 1.004x)."""
    assert main(["recommend", "--params", "135M", "--ratio", "0.25", "--family", "smollm2", "--method", "depth",
                 "--loss-before", "3.2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["card"]["family"] == "smollm2"
    assert not any(w.startswith(("N0 = 135M", "L0 = 3.2")) for w in out["warnings"]), out["warnings"]
    assert "N0 = 135M vs fitted" not in out["verdict"]
    # the width card's larger ratio is 0.4998 as achieved: a query for 0.5 is at its edge
    assert main(["recommend", "--params", "135M", "--ratio", "0.5", "--family", "smollm2", "--method", "width",
                 "--loss-before", "3.2", "--json"]) == 0
    assert "outside fitted" not in json.loads(capsys.readouterr().out)["verdict"]
