"""Held-out extrapolation (P2 paper): splits hold out the right points; metrics tell laws apart."""

import numpy as np
import pytest

from fitting.metrics import slope_diff
from fitting.synthetic import p2_curves
from fitting.table import from_arrays
from fitting.validate import render_table, split_largest, split_tokens, validate


def test_token_split_holds_out_the_last_fifth_of_every_curve():
    data = p2_curves(points=10)
    train = split_tokens(data)
    for run in data.runs:
        m = data.run_ids == run
        tokens = data.axes["tokens"][m]
        assert train[m].sum() == 8
        assert tokens[~train[m]].min() > tokens[train[m]].max()


def test_size_split_holds_out_the_largest_parent():
    data = p2_curves()
    train = split_largest(data, "params_before")
    assert set(data.axes["params_before"][~train]) == {7e9}


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
