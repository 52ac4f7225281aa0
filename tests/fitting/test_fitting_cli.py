"""The ``fitting`` CLI on a real run store and on tables: outputs, cards, exit codes."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from data.runs import RunStore
from fitting.__main__ import main
from fitting.card import load_card
from fitting.synthetic import p2_curves


def _write_store(root, data, *, method="depth", init="pruned", status="done", prefix="", objective="lm"):
    store = RunStore(root)
    for run in data.runs:
        m = data.run_ids == run
        meta = {"family": "llama", "parent": "p", "method": method, "ratio": float(data.axes["ratio"][m][0]),
                "params_before": float(data.axes["params_before"][m][0]), "init": init,
                "loss_before": float(data.axes["loss_before"][m][0]), "objective": objective, "seed": 0}
        store.write(prefix + run, {"status": status, "meta": meta})
        rows = [{"step": 0, "tokens": 0, "eval_loss": 6.0}]  # right after pruning: left out
        rows += [{"step": i + 1, "tokens": int(t), "eval_loss": float(v)}
                 for i, (t, v) in enumerate(zip(data.axes["tokens"][m], data.y[m]))]
        store.append_curve(prefix + run, rows)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    _write_store(root, p2_curves(noise=0.002, points=8))
    # Noise the fit must ignore: a failed run, a random-init baseline run.
    _write_store(root, p2_curves(sizes=(3e9,), ratios=(0.2,), points=4), status="failed", prefix="bad-")
    _write_store(root, p2_curves(sizes=(3e9,), ratios=(0.2,), points=4), init="random", prefix="rnd-")
    return root


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_store_json_is_one_document_and_card_round_trips(store, tmp_path, capsys):
    card_path = tmp_path / "card.json"
    code, out, err = _run(capsys, "fit", str(store), "--law", "p2", "--json", "--bootstrap", "8",
                          "--out", str(card_path))
    assert code == 0
    doc = json.loads(out)
    assert doc["law"] == "p2" and doc["version"] == 2
    assert doc["fit"]["n_runs"] == 12 and doc["fit"]["n_points"] == 96  # done, pruned, tokens > 0
    assert doc["fit"]["loss"] == "huber" and doc["fit"]["delta"] == 1e-3
    assert set(doc["range"]) == {"params_before", "ratio", "tokens", "loss_before", "eval_loss"}
    assert doc["data"]["method"] == "depth" and doc["data"]["content_hash"].startswith("sha256:")
    assert set(doc["identifiable"]) == set(doc["params"])
    assert "tokens == 0" in err and "status" in err
    card = load_card(card_path)
    x = dict(params_before=7e9, ratio=0.5, tokens=1e9, loss_before=2.1)
    assert card.predict(**x) == pytest.approx(
        2.1 + 2 ** doc["params"]["gamma"] * 7e9 ** -doc["params"]["delta"] * (
            doc["params"]["N_C"] / 7e9 ** doc["params"]["alpha"]
            + doc["params"]["D_C"] / 1e9 ** doc["params"]["beta"] + doc["params"]["E"]))
    assert card.bootstrap_params.shape == (8, 7)
    lo, hi = card.optimal_tokens_interval(7e9, 0.5, 1e-3)
    assert lo <= card.optimal_tokens(7e9, 0.5, 1e-3) <= hi
    assert card.outside_range(params_before=70e9) == [
        "params_before=7e+10 is 10x above the fitted max 7e+09"]


def test_fit_prints_summary(store, capsys):
    code, out, _ = _run(capsys, "fit", str(store), "--law", "p2")
    assert code == 0 and "law p2" in out and "gamma" in out and "(no bootstrap)" in out


def test_validate_json_and_table(store, capsys):
    code, out, _ = _run(capsys, "validate", str(store), "--law", "p2", "--json")
    assert code == 0
    results = {r["by"]: r for r in json.loads(out)["results"]}
    assert set(results) == {"tokens", "size", "ratio"}
    for r in results.values():
        assert r["metrics"]["mape"] < 1.0 and r["metrics"]["r2"] > 0.99
        assert math.isfinite(r["metrics"]["slope_diff"])
    code, out, _ = _run(capsys, "validate", str(store), "--law", "p2", "--by", "size")
    assert code == 0 and "params_before = 7e+09" in out


def test_help_has_examples(capsys):
    for cmd in ("fit", "validate", "compare"):
        try:
            code = main([cmd, "--help"])
        except SystemExit as exc:  # argparse's own exit, where the dispatcher lets it through
            code = exc.code
        assert code == 0
        assert capsys.readouterr().out.count(f"fitting {cmd} ") >= 3


def _csv(tmp_path, frame, name="t.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _p2_frame():
    d = p2_curves(points=5)
    return pd.DataFrame({**d.axes, "eval_loss": d.y, "run_id": d.run_ids})


def test_table_input_and_nan_rows_dropped_with_a_count(tmp_path, capsys):
    frame = _p2_frame()
    frame.loc[[0, 7], "eval_loss"] = [np.nan, np.inf]
    code, out, err = _run(capsys, "fit", _csv(tmp_path, frame), "--law", "p2", "--json")
    assert code == 0 and json.loads(out)["fit"]["n_points"] == len(frame) - 2
    assert "dropped 2 rows with NaN/inf eval_loss" in err


def _bad(tmp_path, store):
    frame = _p2_frame()
    nan = frame.assign(eval_loss=np.nan)
    zero_tokens = frame.copy()
    zero_tokens.loc[3, "tokens"] = 0
    below = frame.copy()
    below.loc[2, "eval_loss"] = below.loc[2, "loss_before"] - 0.1
    chin = pd.DataFrame({"N": [1e8, 2e8] * 5, "D": np.geomspace(1e9, 1e11, 10), "loss": 3.0})
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    _write_store(mixed, p2_curves(points=4), method="depth")
    _write_store(mixed, p2_curves(points=4), method="width", prefix="w-")
    one_run = frame[frame["run_id"] == frame["run_id"].iloc[0]]
    both = tmp_path / "both-objectives"
    _write_store(both, p2_curves(points=4), objective="kd")
    _write_store(both, p2_curves(points=4), objective="lm", prefix="lm-")
    return {
        "the input mixes post-training objectives ['kd', 'lm']; choose one with --objective": [
            "fit", str(both), "--law", "p2"],
        "objective 'mse' not in the input; allowed: kd, lm": [
            "fit", str(both), "--law", "p2", "--objective", "mse"],
        "bootstrap needs at least 2 runs; the input has 1": [
            "fit", _csv(tmp_path, one_run, "one.csv"), "--law", "p2", "--bootstrap", "5"],
        "does not exist": ["fit", str(tmp_path / "nope"), "--law", "p2"],
        "holds no runs": ["fit", str(tmp_path / "empty"), "--law", "p2"],
        "unknown law 'p3'": ["fit", str(store), "--law", "p3"],
        "lacks column(s) ['loss_before']": ["fit", _csv(tmp_path, frame.drop(columns="loss_before"), "m.csv"), "--law", "p2"],
        "no finite 'eval_loss'": ["fit", _csv(tmp_path, nan, "n.csv"), "--law", "p2"],
        "column 'tokens' has 1 non-positive": ["fit", _csv(tmp_path, zero_tokens, "z.csv"), "--law", "p2"],
        "eval_loss <= loss_before": ["fit", _csv(tmp_path, below, "b.csv"), "--law", "p2"],
        "only 2 distinct 'N' values": ["fit", _csv(tmp_path, chin, "c.csv"), "--law", "chinchilla"],
        "mixes pruning methods ['depth', 'width']": ["fit", str(mixed), "--law", "p2"],
        "method '2:4' not in the input": ["fit", str(mixed), "--law", "p2", "--method", "2:4"],
        "invalid choice: 'none'": ["validate", str(store), "--law", "p2", "--by", "none"],
        "bootstrap 1000000 must be in 0..100000": ["fit", _csv(tmp_path, frame), "--law", "p2", "--bootstrap", "1000000"],
        "--method 'nosuch': table": ["fit", _csv(tmp_path, frame), "--law", "p2", "--method", "nosuch"],
        "invalid choice: 'cubic'": ["fit", _csv(tmp_path, frame), "--law", "p2", "--space", "cubic"],
        "huber delta -1.0 must be > 0": ["fit", _csv(tmp_path, frame), "--law", "p2", "--huber-delta", "-1"],
    }


def test_bad_input_exits_2_with_one_line(store, tmp_path, capsys):
    for expected, argv in _bad(tmp_path, store).items():
        code, out, err = _run(capsys, *argv)
        assert code == 2, (expected, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (expected, err)
        assert out == ""


def test_objective_selects_the_kd_runs_of_a_store_that_also_holds_lm_runs(tmp_path, capsys):
    both = tmp_path / "both"
    kd = p2_curves(points=4)
    _write_store(both, kd, objective="kd")
    _write_store(both, p2_curves(points=4, seed=1), objective="lm", prefix="lm-")
    code, out, _ = _run(capsys, "fit", str(both), "--law", "p2", "--objective", "kd", "--json")
    assert code == 0 and json.loads(out)["fit"]["n_points"] == len(kd.y)


def test_existing_card_is_not_overwritten_without_force(store, tmp_path, capsys):
    out = tmp_path / "card.json"
    out.write_text("precious")
    code, stdout, err = _run(capsys, "fit", str(store), "--law", "p2", "--out", str(out))
    assert code == 2 and "exists; pass --force" in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "precious" and stdout == ""
    code, _, _ = _run(capsys, "fit", str(store), "--law", "p2", "--out", str(out), "--force")
    assert code == 0 and load_card(out).law.name == "p2"


def test_compare_prefers_p2_on_p2_data(store, capsys):
    code, out, _ = _run(capsys, "compare", str(store), "--law", "p2", "--json")
    assert code == 0
    cands = {c["law"]: c for c in json.loads(out)["candidates"]}
    assert set(cands) == {"p2", "p2_counts", "p2_no_l0"}
    assert cands["p2"]["loro_rmse"] < cands["p2_no_l0"]["loro_rmse"]
    assert cands["p2"]["bic"] < cands["p2_no_l0"]["bic"] and cands["p2"]["loro_runs"] == 12
    code, out, _ = _run(capsys, "compare", str(store), "--law", "p2", "--laws", "p2,p2_no_l0")
    assert code == 0 and "best: LORO p2" in out


def test_bad_cards_are_refused(tmp_path):
    from data.cli import BadInput

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        load_card(bad)
    bad.write_text(json.dumps({"law": "p2", "version": 99, "params": {}, "fit": {}, "range": {}, "data": {}}))
    with pytest.raises(BadInput, match="version 99"):
        load_card(bad)
    bad.write_text(json.dumps({"law": "p2"}))
    with pytest.raises(BadInput, match="lacks"):
        load_card(bad)


def test_chinchilla_table_fit_stays_torch_free(tmp_path):
    """The whole fit path (CLI, table, solver, card) never imports torch & co."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    n, d = np.repeat([1e8, 3e8, 1e9, 3e9], 5), np.tile(np.geomspace(1e9, 1e11, 5), 4)
    loss = (1.8 + 480 / n ** 0.35 + 2000 / d ** 0.37) * np.exp(0.002 * rng.standard_normal(20))
    table = tmp_path / "chin.parquet"
    pd.DataFrame({"N": n, "D": d, "loss": loss}).to_parquet(table)
    code = ("import sys, json, io, contextlib; from fitting.__main__ import main\n"
            "buf = io.StringIO()\n"
            f"with contextlib.redirect_stdout(buf): rc = main(['fit', {str(table)!r}, '--law', 'chinchilla', '--json'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'deepspeed', 'datasets') if m in sys.modules]\n"
            "print(json.dumps({'rc': rc, 'heavy': heavy, 'card': json.loads(buf.getvalue())}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["rc"] == 0 and doc["heavy"] == []
    assert doc["card"]["params"]["beta"] == pytest.approx(0.37, abs=0.05)
    assert doc["card"]["range"]["N"] == {"min": 1e8, "max": 3e9}


def test_after_warmup_leaves_the_ramp_out_and_the_card_records_it(tmp_path, capsys):
    """The committed SmolLM2-135M depth curves (2% warm-up): --after-warmup fits fewer points,
    says how many it left out, records it in the card, and the card's data hash is that of
    the points it saw (a report or a refit reads the same points through the card)."""
    from pathlib import Path

    from fitting.table import load_data

    runs = Path(__file__).resolve().parents[2] / "docs" / "smollm2_runs"
    card_path = tmp_path / "card.json"
    code, out, err = _run(capsys, "fit", str(runs), "--law", "p2", "--family", "smollm2", "--method", "depth",
                          "--objective", "kd", "--after-warmup", "--out", str(card_path))
    assert code == 0 and "inside their run's learning-rate warm-up (--after-warmup)" in out + err
    card = load_card(card_path)
    assert card.data.after_warmup
    every = load_data(runs, "p2", method="depth", family="smollm2", objective="kd")
    after = load_data(runs, "p2", method="depth", family="smollm2", objective="kd", after_warmup=True)
    assert after.n_points < every.n_points and card.data.content_hash == after.content_hash()


def test_after_warmup_needs_a_learning_rate_column(store, capsys):
    code, _, err = _run(capsys, "fit", str(store), "--law", "p2", "--method", "depth", "--after-warmup")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "records no 'lr' column" in err
