"""Laws: the structured form the solver uses agrees with each law's predict; P2's D*."""

import numpy as np
import pytest

from data.cli import BadInput
from fitting.laws import CHINCHILLA, LAWS, P2, get_law, optimal_tokens
from fitting.solve import build_design, to_params, to_z
from fitting.synthetic import TRUE_P2

RNG = np.random.default_rng(0)


def _axes(law, n=50):
    ranges = {"params_before": (1e8, 1e10), "ratio": (0.1, 0.8), "tokens": (1e6, 1e10),
              "loss_before": (1.8, 3.0), "N": (1e7, 1e11), "D": (1e8, 1e12), "S": (0.0, 0.95)}
    return {a: RNG.uniform(*ranges[a], n) for a in law.axes}


def _params(law):
    values = {"N_C": 300.0, "D_C": 1500.0, "E": 0.4, "alpha": 0.3, "beta": 0.35, "gamma": -0.7,
              "delta": 0.1, "A": 400.0, "B": 2000.0, "a_S": 1.3, "b_S": 0.8, "c_S": 2.1,
              "b_N": 0.4, "a_D": 0.3, "b_D": 0.9, "c": 4.5}
    return np.array([values[p] for p in law.params])


@pytest.mark.parametrize("name", list(LAWS))
def test_structured_form_matches_predict(name):
    """The solver's log-linear terms rebuild exactly what predict() computes, for every law."""
    law = get_law(name)
    axes, params = _axes(law), _params(law)
    y = law.predict(params, **axes)
    d = build_design(law, axes, y, np.ones_like(y))
    z = to_z(params, d)
    logc, theta = z[: d.n_coef], z[d.n_coef:]
    terms = np.exp(logc[:, None] + np.einsum("j,kjn->kn", theta, d.G) + d.H)
    np.testing.assert_allclose(d.offset + terms.sum(0), y, rtol=1e-12)
    np.testing.assert_allclose(to_params(z, d), params, rtol=1e-12)


def test_predict_broadcasts_bootstrap_samples():
    axes = _axes(CHINCHILLA, 7)
    samples = np.tile(_params(CHINCHILLA), (4, 1)) * np.linspace(0.9, 1.1, 4)[:, None]
    out = CHINCHILLA.predict(samples, **axes)
    assert out.shape == (4, 7)
    np.testing.assert_allclose(out[2], CHINCHILLA.predict(samples[2], **axes))


def test_p2_formula_by_hand():
    x = dict(params_before=1e9, ratio=0.5, tokens=1e8, loss_before=2.0)
    p = TRUE_P2
    by_hand = 2.0 + 2.0 ** p["gamma"] * 1e-9 ** p["delta"] * (
        p["N_C"] / 1e9 ** p["alpha"] + p["D_C"] / 1e8 ** p["beta"] + p["E"])
    assert P2.predict(p, **x) == pytest.approx(by_hand, rel=1e-12)


def test_optimal_tokens_meets_the_slope_criterion():
    """At D*, one more billion tokens improves the predicted loss by S (finite difference)."""
    params = np.array([TRUE_P2[n] for n in P2.params])
    n0, rho, slope = 7e9, 0.5, 1e-3
    d_star = float(optimal_tokens(params, n0, rho, slope))
    h = d_star * 1e-6
    x = dict(params_before=n0, ratio=rho, loss_before=2.1)
    dldd = (P2.predict(params, tokens=d_star + h, **x) - P2.predict(params, tokens=d_star - h, **x)) / (2 * h)
    assert -dldd * 1e9 == pytest.approx(slope, rel=1e-5)
    # Shared with bootstrap samples: [B, P] in, [B, 1] out.
    assert optimal_tokens(np.tile(params, (3, 1)), n0, rho, slope).shape == (3, 1)


def test_unknown_law_and_bad_slope_are_bad_input():
    with pytest.raises(BadInput, match="unknown law 'kaplan'; allowed: p2, chinchilla, "):
        get_law("kaplan")
    with pytest.raises(BadInput, match="slope"):
        optimal_tokens(_params(P2), 1e9, 0.5, 0.0)
