"""End to end: fitting fits P2 to noisy curves from known parameters, the planner plans from
the card it wrote: its budget is close to the one the true law implies, and its interval is
exactly the fitting package's own bootstrap interval of that decision quantity."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fitting.card import load_card, save_card
from fitting.fit import FitConfig, fit
from fitting.synthetic import TRUE_P2, p2_curves
from planner.__main__ import main
from test_planner_budget import closed_form

N0, RHO, SLOPE = 1.5e9, 0.35, 0.05


@pytest.fixture(scope="module")
def fitted_card(tmp_path_factory):
    data = replace(p2_curves(noise=0.01, points=8, seed=3), family="qwen2.5", method="width")
    path = tmp_path_factory.mktemp("cards") / "p2_qwen2.5_width.json"
    return save_card(fit(data, FitConfig(n_bootstrap=40, seed=0)), path)


def test_planner_recovers_the_true_budget_from_a_fitted_card(fitted_card, capsys, monkeypatch):
    monkeypatch.setenv("PRUNELAW_CARDS_DIR", str(fitted_card.parent))  # found by family + method
    code = main(["recommend", "--params", "1.5B", "--family", "qwen2.5", "--method", "width",
                 "--ratio", str(RHO), "--slope", str(SLOPE), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    truth = closed_form(TRUE_P2, N0, RHO, SLOPE)
    tokens = doc["tokens"]
    assert tokens["value"] == pytest.approx(truth, rel=0.15)  # 1% noise: estimates scatter ~7%
    low, high = load_card(fitted_card).optimal_tokens_interval(N0, RHO, SLOPE)
    assert (tokens["low"], tokens["high"]) == pytest.approx((low, high), rel=1e-12)
    assert low < tokens["value"] < high
    assert doc["card"]["selected_because"].startswith("bundled p2 card for family qwen2.5, method width")
    assert doc["card"]["n_bootstrap"] > 0 and doc["card"]["content_hash"].startswith("sha256:")
    assert not [w for w in doc["warnings"] if "card's fit" in w], "inside the fitted range: no extrapolation warning"


def test_target_loss_from_fitted_card_reaches_it(fitted_card, capsys):
    assert main(["recommend", "--params", "3B", "--ratio", "0.5", "--law", str(fitted_card),
                 "--loss-before", "2.4", "--target-loss", "3.2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["loss"]["value"] == pytest.approx(3.2, rel=1e-9)
    assert doc["criterion"]["kind"] == "target_loss"
