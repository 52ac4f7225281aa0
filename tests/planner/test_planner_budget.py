"""The planner's decisions against the closed forms and the behaviour a user expects."""

from __future__ import annotations

import numpy as np
import pytest

from data.cli import BadInput
from fitting.laws import P2
from planner.cards import load_card
from data.compute import GPUS, compute_cost
from planner.query import Parent
from fitting.criteria import Criterion
from planner.recommend import recommend
from test_planner_cards import P2_TRUE, write_card

N0, RHO, L0 = 8e9, 0.5, 2.2
PARAMS = np.array([P2_TRUE[k] for k in P2.params])


def closed_form(p: dict, n0: float, rho: float, slope: float) -> float:
    """D* = (beta * D_C * (1/rho)^gamma * (1/N0)^delta * 1e9 / S)^(1/(beta+1)), written out."""
    return (p["beta"] * p["D_C"] * (1 / rho) ** p["gamma"] * (1 / n0) ** p["delta"] * 1e9 / slope) ** (
        1 / (p["beta"] + 1))


@pytest.fixture
def card(tmp_path):
    return load_card(write_card(tmp_path / "card.json"), law="p2")


def run(card, criterion=Criterion.of("slope", 1e-3), n0=N0, ratio=RHO, loss_before=L0):
    return recommend(Parent(int(n0), "llama3", None), "depth", ratio, card, "test", criterion=criterion,
                     gpu=GPUS["h100"], mfu=0.4, price=None, loss_before=loss_before)


@pytest.mark.parametrize("slope", [1e-4, 1e-3, 1e-2])
def test_slope_budget_is_the_closed_form(card, slope):
    got = run(card, Criterion.of("slope", slope)).tokens.value
    assert got == pytest.approx(closed_form(P2_TRUE, N0, RHO, slope), rel=1e-12)


def test_slope_budget_is_where_one_more_billion_gains_s(card):
    """The definition itself: at D*, -dL/dD * 1e9 equals S (numerical derivative of predict)."""
    d = run(card).tokens.value
    h = d * 1e-5
    dl = (P2.predict(PARAMS, params_before=N0, ratio=RHO, tokens=d + h, loss_before=L0)
          - P2.predict(PARAMS, params_before=N0, ratio=RHO, tokens=d - h, loss_before=L0)) / (2 * h)
    assert -dl * 1e9 == pytest.approx(1e-3, rel=1e-4)


def test_interval_brackets_point_and_losses_fall_with_budget(card):
    r = run(card)
    assert r.tokens.low < r.tokens.value < r.tokens.high
    losses = [b.loss.value for b in r.budgets]
    assert [b.multiple for b in r.budgets] == [0.1, 0.3, 1.0, 3.0]
    assert losses == sorted(losses, reverse=True), "more tokens never predict a higher loss"
    assert r.budgets[2].loss.value == pytest.approx(r.loss.value)
    assert all(b.loss.value > r.asymptote.value for b in r.budgets)


def test_more_tokens_for_higher_ratio_when_gamma_negative(card, tmp_path):
    """gamma < 0: s = rho^-gamma grows with rho, so harder pruning needs more tokens; gamma > 0
    reverses it. Budgets are finite and positive for every ratio and parent size."""
    ratios = np.linspace(0.05, 0.95, 19)
    budgets = [run(card, ratio=r).tokens.value for r in ratios]
    assert np.all(np.diff(budgets) > 0)
    flipped = load_card(write_card(tmp_path / "f.json", params={**P2_TRUE, "gamma": 0.8}), law="p2")
    assert np.all(np.diff([run(flipped, ratio=r).tokens.value for r in ratios]) < 0)
    for n0 in (1e8, 1e9, 8e9, 7e10):
        for r in ratios:
            d = run(card, n0=n0, ratio=r).tokens.value
            assert np.isfinite(d) and d > 0


def test_target_loss_inverts_the_law(card):
    target = 2.9
    r = run(card, Criterion.of("target_loss", target))
    assert r.loss.value == pytest.approx(target, rel=1e-10)
    assert float(P2.predict(PARAMS, params_before=N0, ratio=RHO, tokens=r.tokens.value * 0.99, loss_before=L0)) > target


def test_target_loss_below_asymptote_is_refused(card):
    floor = float(P2.asymptote(PARAMS, params_before=N0, ratio=RHO, loss_before=L0))
    with pytest.raises(BadInput, match="at or below the law's asymptote"):
        run(card, Criterion.of("target_loss", floor - 1e-3))


def test_recover_closes_the_stated_fraction_of_the_recoverable_gap(card):
    """Card-only: the gap runs from the law at D_ref (the card's first budget per parameter x N0)
    down to the asymptote; every fraction is reachable and the loss at D* is exactly on it."""
    d_ref = card.axis_range("tokens")[0] / card.axis_range("params_before")[1] * N0
    l_ref = float(P2.predict(PARAMS, params_before=N0, ratio=RHO, tokens=d_ref, loss_before=L0))
    floor = float(P2.asymptote(PARAMS, params_before=N0, ratio=RHO, loss_before=L0))
    for f in (0.5, 0.9, 0.99):
        r = run(card, Criterion.of("recover", f))
        assert r.loss.value == pytest.approx(floor + (1 - f) * (l_ref - floor), rel=1e-10)
        assert r.tokens.value == pytest.approx(d_ref * (1 - f) ** (-1 / P2_TRUE["beta"]), rel=1e-10)
    assert "D_ref" in r.reference


def test_loss_before_shifts_losses_not_the_slope_budget(card):
    a, b = run(card, loss_before=2.0), run(card, loss_before=3.0)
    assert a.tokens.value == b.tokens.value
    assert b.loss.value - a.loss.value == pytest.approx(1.0)


def test_without_loss_before_losses_are_dl_above_l0(card):
    """No L0 is invented from the card's parents: the answer is dL and says so."""
    r, known = run(card, loss_before=None), run(card, loss_before=L0)
    assert r.loss_before is None and r.relative and "--loss-before" in r.loss_before_source
    assert r.tokens.value == known.tokens.value
    assert r.loss.value == pytest.approx(known.loss.value - L0)
    assert any("dL above" in n for n in r.notes)
    with pytest.raises(BadInput, match="L0 is unknown"):
        run(card, Criterion.of("target_loss", 2.5), loss_before=None)


def test_extrapolation_warning_says_how_far(card):
    r = run(card, n0=8e9)  # fixture parents span 100M..1B
    assert any("N0 = 8B is 8x above the largest parent in the card's fit (1B)" in w for w in r.warnings)
    assert not any("N0" in w for w in run(card, n0=5e8).warnings)


def test_compute_and_cost():
    c = compute_cost(4e9, 1e10, GPUS["a100"], mfu=0.5, price=2.0)
    assert c.flops == pytest.approx(6 * 4e9 * 1e10)
    assert c.gpu_hours == pytest.approx(6 * 4e9 * 1e10 / (312e12 * 0.5) / 3600)
    assert c.cost_usd == pytest.approx(2.0 * c.gpu_hours)
    with pytest.raises(BadInput, match="--mfu"):
        compute_cost(1e9, 1e9, GPUS["h100"], mfu=1.5)


def test_recommend_uses_params_after_for_compute(card):
    r = run(card, ratio=0.25)
    assert r.params_after == pytest.approx(0.75 * N0)
    assert r.compute.flops == pytest.approx(6 * 0.75 * N0 * r.tokens.value)


def test_percentile_matches_numpy():
    from fitting.term import percentile

    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 200):
        x = rng.standard_normal(n)
        for q in (0.0, 2.5, 50.0, 97.5, 100.0):
            assert percentile(x, q) == pytest.approx(float(np.percentile(x, q)), abs=1e-15)


def test_target_near_the_asymptote_warns_about_unreachable_samples(card):
    floor = float(P2.asymptote(PARAMS, params_before=N0, ratio=RHO, loss_before=L0))
    r = run(card, Criterion.of("target_loss", floor + 0.02))
    assert any("bootstrap samples never reach" in w for w in r.warnings)
    with pytest.raises(BadInput, match="tokens per parent parameter"):  # so close to the floor: absurd
        run(card, Criterion.of("target_loss", floor + 0.002))
    assert not any("never reach" in w for w in run(card, Criterion.of("target_loss", floor + 0.5)).warnings)


@pytest.mark.parametrize("tokens, needle", [(1e3, "right after pruning"), (1e15, "out of practical reach")])
def test_absurd_budgets_are_refused_per_parent_parameter(tokens, needle):
    """Both ends, judged per parent parameter: at N0 = 1e9 the floor is 1e6 tokens, the roof 1e13."""
    with pytest.raises(BadInput, match=needle):
        Criterion.of("recover", 0.9).check_budget(tokens, "card mode", 1e9)
    Criterion.of("recover", 0.9).check_budget(1e9, "card mode", 1e9)  # 1 token per parameter: fine


def test_the_bundled_card_at_8b_recommends_no_budget_but_a_pilot():
    """Where the card's formula predicts more than a uniform guess loses, the answer carries no
    D* as a recommendation: the extrapolation stays for --show-extrapolation, and the pilot's
    budget is a tenth of the nearest published depth recipe per parameter, priced like D*."""
    from pathlib import Path

    bundled = load_card(Path(__file__).resolve().parents[2] / "planner" / "cards" / "p2_llama3_depth.json", law="p2")
    rec = run(bundled, Criterion.of("recover", 0.9), loss_before=None)
    assert not rec.credible and rec.verdict.startswith("verdict: not credible") and "ln V" in rec.doubt
    assert rec.tokens is not None and rec.reach is None  # the formula's D*, kept for --show-extrapolation
    recipe = rec.pilot_recipe
    assert recipe.tokens == pytest.approx(9.4e9) and "Minitron-4B-Depth" in recipe.basis
    assert recipe.job["optim"]["schedule"] == "constant" and recipe.job["eval"]["points"] >= 10
    assert recipe.compute.gpu_hours == pytest.approx(
        compute_cost(0.5 * N0, 9.4e9, GPUS["h100"], 0.4).gpu_hours)
    near = run(bundled, Criterion.of("recover", 0.9), n0=222_000, ratio=0.3, loss_before=None)
    assert near.credible and "not credible" not in near.verdict
    assert "Minitron-4B-Depth" in near.pilot_recipe.basis  # same method first, whatever the size
