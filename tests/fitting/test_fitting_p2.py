"""P2 fits recover known parameters, report what they cannot identify, bootstrap whole runs."""

import numpy as np
import pytest

from fitting.fit import FitConfig, fit, point_weights
from fitting.laws import P2
from fitting.solve import solve
from fitting.synthetic import TRUE_P2, p2_curves

TRUE = np.array([TRUE_P2[n] for n in P2.params])


def test_recovers_exact_parameters_without_noise():
    result = fit(p2_curves())
    np.testing.assert_allclose(result.params_array, TRUE, rtol=1e-5)
    assert result.success and result.metrics["r2"] > 0.999999


def test_mean_reduction_does_not_move_the_optimum():
    data = p2_curves(noise=0.003, seed=1)
    summed = solve(P2, data.axes, data.y)
    mean = solve(P2, data.axes, data.y, reduction="mean")
    # E sits at its bound (~1e-11) here, where the objective is flat: compare it absolutely
    np.testing.assert_allclose(mean.params, summed.params, rtol=1e-5, atol=1e-9)
    assert mean.objective * data.n_points == pytest.approx(summed.objective, rel=1e-9)


@pytest.fixture(scope="module")
def noisy():
    return fit(p2_curves(noise=0.003, seed=2), FitConfig(n_bootstrap=40, seed=0))


def test_recovers_identified_parameters_with_noise(noisy):
    p = noisy.params
    assert p["beta"] == pytest.approx(TRUE_P2["beta"], abs=0.02)
    assert p["gamma"] == pytest.approx(TRUE_P2["gamma"], abs=0.03)
    assert p["delta"] == pytest.approx(TRUE_P2["delta"], abs=0.02)
    # Decision quantities are what must be right, whatever the weakly identified split.
    truth = p2_curves(points=12)
    assert np.max(np.abs(noisy.predict(**truth.axes) / truth.y - 1)) < 0.006


def test_bootstrap_intervals_cover_truth_and_flag_weak_parameters(noisy):
    assert noisy.bootstrap_params.shape == (40, 7)
    for name in ("beta", "gamma", "delta"):
        lo, hi = noisy.intervals[name]
        assert lo <= TRUE_P2[name] <= hi, name
        assert not noisy.identifiable[name]["weak"]
    dstar = noisy.derived["optimal_tokens"]
    assert dstar.low < dstar.value < dstar.high
    # With 0.3% noise the split between E and N_C/N0^alpha is not pinned down: say so.
    assert noisy.identifiable["E"]["weak"] or noisy.identifiable["N_C"]["weak"]


def test_single_parent_size_pins_delta_alpha_and_n_c():
    data = p2_curves(sizes=(1.5e9,), noise=0.0)
    result = fit(data)
    ident = result.identifiable
    for name in ("delta", "alpha", "N_C"):
        assert ident[name]["identified"] is False and "size" in ident[name]["reason"]
    assert ident["beta"]["identified"] and ident["gamma"]["identified"]
    assert result.params["beta"] == pytest.approx(TRUE_P2["beta"], rel=1e-4)
    assert result.params["gamma"] == pytest.approx(TRUE_P2["gamma"], rel=1e-4)
    np.testing.assert_allclose(result.predict(**data.axes), data.y, rtol=1e-6)
    assert "not identified, fixed at 0.0" in result.summary()


def test_single_ratio_pins_gamma():
    result = fit(p2_curves(ratios=(0.5,)))
    assert result.identifiable["gamma"]["identified"] is False
    assert result.params["gamma"] == 0.0
    assert result.params["delta"] == pytest.approx(TRUE_P2["delta"], rel=1e-3)


def test_run_weighting_gives_each_run_equal_total_weight():
    data = p2_curves(points=6)
    long_run = p2_curves(sizes=(3e9,), ratios=(0.35,), points=60)
    merged = type(data)(data.law, {a: np.r_[data.axes[a], long_run.axes[a]] for a in data.axes},
                        np.r_[data.y, long_run.y], np.r_[data.run_ids, long_run.run_ids], "merged")
    w = point_weights(merged, "run")
    totals = {run: w[merged.run_ids == run].sum() for run in merged.runs}
    assert np.allclose(list(totals.values()), merged.n_points / merged.n_runs)
    assert w.mean() == pytest.approx(1.0)


def test_signs_of_gamma_and_delta_are_free():
    """gamma > 0 and delta < 0 (outside the sign a prior might impose) are recovered too."""
    truth = dict(TRUE_P2, gamma=0.6, delta=-0.1, E=0.05, D_C=50.0, N_C=20.0)
    result = fit(p2_curves(truth))
    for name in ("beta", "gamma", "delta"):
        assert result.params[name] == pytest.approx(truth[name], abs=1e-4), name
    assert result.objective < 1e-12
