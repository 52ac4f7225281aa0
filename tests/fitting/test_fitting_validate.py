"""Held-out extrapolation (P2 paper): splits hold out the right points; metrics tell laws apart."""

import numpy as np
import pytest

from fitting.metrics import slope_diff
from fitting.synthetic import p2_curves
from fitting.table import from_arrays
from fitting.validate import render_table, split, split_largest, split_tokens, validate


def test_token_split_fits_a_stated_fraction_of_each_runs_max_tokens():
    """Fit D <= f * Dmax of each run (not the first 80% of *checkpoints*, which on a
    log-spaced curve would let the fit see most of the decades it is meant to predict)."""
    data = p2_curves(points=10, tokens=(1e7, 1e9))
    for f in (0.25, 0.5):
        train = split_tokens(data, f)
        for run in data.runs:
            m = data.run_ids == run
            tokens = data.axes["tokens"][m]
            assert tokens[train[m]].max() <= f * tokens.max()
            assert tokens[~train[m]].min() > f * tokens.max()
    train, label = split(data, "tokens", 0.25)
    assert label == "tokens: fit tokens <= 0.25 x Dmax of each run -> predict tokens > 0.25 x Dmax"


def test_size_split_holds_out_the_largest_parent_and_declares_the_reduced_law():
    data = p2_curves(sizes=(0.5e9, 1.5e9, 7e9), noise=0.0)
    train = split_largest(data, "params_before")
    assert set(data.axes["params_before"][~train]) == {7e9}
    result = validate(data, "size")[0]
    assert result.split.startswith("size: leave the largest model size out")
    # Three parents minus the largest leave two: N_C and alpha cannot be identified.
    assert result.reduced == ("N_C", "alpha") and "reduced law: N_C, alpha pinned" in result.message
    assert "reduced law" in render_table([result])
    ratio = validate(data, "ratio")[0]
    assert ratio.split.startswith("ratio: leave the highest ratio out") and ratio.reduced == ()


def test_metrics_on_the_gap_above_l0():
    """L0 dominates L; the held-out error of the part the law predicts, L - L0, is reported."""
    data = p2_curves(noise=0.002, seed=4)
    m = validate(data, "tokens")[0].metrics
    assert m["mape_gap"] > 3 * m["mape"]  # the same error is a larger share of L - L0
    assert m["rmse_gap"] == pytest.approx(m["rmse"], rel=1e-9)


def test_true_law_extrapolates_almost_perfectly():
    results = validate(p2_curves(noise=0.0))
    for r in results:
        assert r.success, r.message
        assert r.metrics["mape"] < 1e-3 and r.metrics["slope_diff"] < 1e-4, r.by
    assert "tokens" in render_table(results)


def test_wrong_shape_of_recovery_is_caught_by_token_extrapolation():
    """Curves that saturate exponentially (not a power law) extrapolate worse than true P2 ones."""
    good = p2_curves(noise=0.001, seed=3)
    x = good.axes
    bad_y = x["loss_before"] + 0.15 + 1.2 * np.exp(-x["tokens"] / 2e8) * x["ratio"]
    bad = from_arrays("p2", x, bad_y, good.run_ids)
    m_good = validate(good, "tokens")[0].metrics
    m_bad = validate(bad, "tokens")[0].metrics
    assert m_bad["mape"] > 3 * m_good["mape"]
    assert m_bad["slope_diff"] > 3 * m_good["slope_diff"]


def test_nothing_to_hold_out_is_reported_not_faked():
    result = validate(p2_curves(ratios=(0.5,)), "ratio")[0]
    assert not result.success and "one distinct ratio" in result.message
    assert result.metrics == {}


def test_slope_diff_by_hand():
    tokens = np.array([1e8, 1e9, 1e10, 1e8, 1e9])
    runs = np.array(["a", "a", "a", "b", "b"])
    obs = np.array([3.0, 2.8, 2.7, 3.0, 2.9])
    pred = obs + np.array([0.0, 0.1, 0.1, 0.0, 0.0])
    # run a: slopes obs (-0.2, -0.1), pred (-0.1, -0.1) -> |diff| 0.1, 0; run b: 0.
    assert slope_diff(pred, obs, tokens, runs) == pytest.approx(0.1 / 3)
