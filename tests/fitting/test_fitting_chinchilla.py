"""Reproduce Epoch AI's refit of the Chinchilla data (Besiroglu et al. 2024, arXiv:2404.10102).

Data: tests/fixtures/epoch_chinchilla_svg_extracted_data.csv (vendored; provenance in tests/fixtures/README.md).
D = C / (6 N); the 5 highest-loss rows are dropped (240 remain), as in Epoch's notebook.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from fitting.fit import FitConfig, fit
from fitting.laws import CHINCHILLA
from fitting.solve import solve
from fitting.table import from_arrays

CSV = Path(__file__).resolve().parents[1] / "fixtures/epoch_chinchilla_svg_extracted_data.csv"


@pytest.fixture(scope="module")
def epoch():
    import pandas as pd

    df = pd.read_csv(CSV)
    n, c, loss = df["Model Size"].to_numpy(), df["Training FLOP"].to_numpy(), df["loss"].to_numpy()
    keep = loss < np.sort(loss)[-5]
    return n[keep], (c / (6 * n))[keep], loss[keep]


@pytest.fixture(scope="module")
def result(epoch):
    n, d, loss = epoch
    return fit(from_arrays("chinchilla", {"N": n, "D": d}, loss), FitConfig(n_bootstrap=200, seed=0))


def test_240_rows_after_epoch_filter(epoch):
    assert len(epoch[2]) == 240


def test_point_estimates_match_epoch(result):
    p = result.params
    # The notebook's L-BFGS-B optimum on these 240 rows (datasets README, re-run).
    assert p["E"] == pytest.approx(1.817, abs=5e-4)
    assert p["alpha"] == pytest.approx(0.3473, abs=2e-4)
    assert p["beta"] == pytest.approx(0.3672, abs=2e-4)
    assert p["A"] == pytest.approx(477.8, rel=2e-3)
    assert p["B"] == pytest.approx(2143, rel=2e-3)
    # Epoch's published estimates (A and B move most along the flat A-alpha ridge).
    assert p["alpha"] == pytest.approx(0.3478, rel=5e-3)
    assert p["beta"] == pytest.approx(0.3658, rel=5e-3)
    assert p["A"] == pytest.approx(482.01, rel=0.015)
    assert p["B"] == pytest.approx(2085.43, rel=0.03)
    assert result.success


def test_bootstrap_intervals_close_to_epoch(result):
    published = {"alpha": (0.317, 0.373), "beta": (0.331, 0.415), "E": (1.769, 1.871)}
    for name, (lo, hi) in published.items():
        got = result.intervals[name]
        assert got[0] == pytest.approx(lo, abs=0.012), name
        assert got[1] == pytest.approx(hi, abs=0.012), name
    assert result.bootstrap_params.shape == (200, 5)


def _epoch_objective(x, n, d, loss):
    a, b, e, alpha, beta = x
    pred = logsumexp([a - alpha * np.log(n), b - beta * np.log(d), e * np.ones_like(n)], axis=0)
    return np.sum(huber(1e-3, pred - np.log(loss)))


def test_same_optimum_as_epoch_multistart(epoch, result):
    """Our optimum is at least as good as L-BFGS-B from a slice of Epoch's start grid."""
    n, d, loss = epoch
    best = np.inf
    for alpha in (0.0, 0.5, 1.0):
        for e in (-1.0, 0.5):
            for a in (0.0, 5.0, 10.0):
                x0 = [a, a, e, alpha, alpha]
                best = min(best, minimize(_epoch_objective, x0, args=(n, d, loss), method="L-BFGS-B").fun)
    ours = _epoch_objective([np.log(result.params["A"]), np.log(result.params["B"]),
                             np.log(result.params["E"]), result.params["alpha"],
                             result.params["beta"]], n, d, loss)
    assert ours <= best * (1 + 1e-8)
    assert ours == pytest.approx(result.objective, rel=1e-10)


def test_mean_reduction_and_grid_density_do_not_move_the_optimum(epoch, result):
    """Dividing the objective by n (the L-BFGS trap) or thinning the start grid changes nothing."""
    n, d, loss = epoch
    point = np.array([result.params[p] for p in CHINCHILLA.params])
    mean = solve(CHINCHILLA, {"N": n, "D": d}, loss, reduction="mean")
    coarse = solve(CHINCHILLA, {"N": n, "D": d}, loss, density=0.2, top_k=1)
    np.testing.assert_allclose(mean.params, point, rtol=1e-6)
    np.testing.assert_allclose(coarse.params, point, rtol=1e-6)
    assert mean.objective * len(loss) == pytest.approx(result.objective, rel=1e-9)
