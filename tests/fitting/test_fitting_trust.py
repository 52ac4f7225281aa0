"""Fitting you can trust: intervals that cover, honest identifiability, bad runs,
duplicates, one law object per law."""

from collections.abc import Mapping

import numpy as np
import pytest

from fitting.card import CI_KIND, PI_KIND, LawCard, load_card, percentile_levels
from fitting.coverage import Design, run_design
from fitting.fit import FitConfig, fit
from fitting.laws import LAWS, P2, Law, Term, get_law, register
from fitting.solve import solve
from fitting.synthetic import TRUE_P2, p2_curves
from fitting.table import from_arrays


@pytest.mark.slow
def test_coverage_on_a_small_seeded_design():
    """Nominal 95% intervals of the full-refit run bootstrap contain the truth on a small
    seeded design (9 runs, 16 refits each: a regression guard, not a 95% proof; the measured
    coverage is in the README). A bootstrap kept in the point fit's basin covers far less
    (measured before the honest bootstrap: 66% for E, 72% for alpha); so would intervals that ignore run offsets."""
    design = Design("small", (0.5e9, 1.5e9, 4e9), (0.2, 0.35, 0.5), 6, 0.004, 0.002)
    hits = run_design(design, replicates=8, n_bootstrap=16, seed=1,
                      config=FitConfig(top_k=1, n_random=16, workers=1))
    assert set(hits) == set(P2.params) | {"loss", "loss_10x", "optimal_tokens"}
    for name, h in hits.items():
        assert sum(h) >= 6, (name, h)
    assert sum(map(sum, hits.values())) >= 0.85 * sum(map(len, hits.values()))


def test_confidence_and_prediction_intervals_are_labelled_and_ordered(tmp_path):
    data = p2_curves(noise=0.003, run_noise=0.004, seed=5, points=8)
    card = fit(data, FitConfig(n_bootstrap=12, seed=0, top_k=1, n_random=16))
    loss = card.derived["loss"]
    # A new run scatters around the mean law: its interval is wider than the mean's.
    assert loss.pred_low < loss.low <= loss.value <= loss.high < loss.pred_high
    assert card.scatter["sigma_run"] > 0.002 and card.fit["bootstrap_basin_changes"] >= 0
    summary = card.summary()
    assert "confidence interval (mean law)" in summary and "new run PI" in summary
    doc = card.to_dict()
    assert doc["ci"]["kind"] == CI_KIND and doc["scatter"]["kind"] == PI_KIND
    x = dict(params_before=7e9, ratio=0.5, tokens=1e9, loss_before=2.1)
    (clo,), (chi,) = card.band(**{k: [v] for k, v in x.items()})
    (plo,), (phi,) = card.prediction_band(**{k: [v] for k, v in x.items()})
    assert plo < clo < chi < phi
    back = load_card(card.save(tmp_path / "card.json"))
    assert back.scatter == card.scatter and back.derived["loss"].pred_low == loss.pred_low


def test_intervals_are_widened_for_few_runs_and_saved_with_the_card(tmp_path):
    # Expanded percentile: few runs read further into the tails; many runs tend to 2.5-97.5.
    lo9, hi9 = percentile_levels(0.95, 9)
    assert 0.5 < lo9 < 1.0 and lo9 + hi9 == pytest.approx(100)
    assert percentile_levels(0.95, None) == pytest.approx((2.5, 97.5))
    assert percentile_levels(0.95, 10_000)[0] == pytest.approx(2.5, abs=0.01)
    data = p2_curves(noise=0.003, run_noise=0.004, seed=5, points=8)
    card = fit(data, FitConfig(n_bootstrap=40, seed=0, top_k=1, n_random=16))
    assert card.units == data.n_runs and card.ci["percentiles"] == pytest.approx(percentile_levels(0.95, data.n_runs), abs=1e-4)
    j = P2.params.index("beta")
    plain = np.percentile(card.bootstrap_params[:, j], [2.5, 97.5])
    lo, hi = card.intervals["beta"]
    assert lo < plain[0] and hi > plain[1]  # strictly wider than the plain percentile interval
    again = LawCard.load(card.save(tmp_path / "card.json"))
    assert again.intervals["beta"] == pytest.approx((lo, hi)) and again.percentiles() == card.percentiles()
    assert "widened for" in card.summary()


def test_a_term_that_is_absent_is_reported_as_degenerate():
    """Data with no size term (N_C = 0): the fit says alpha is at its bound / the term is gone,
    rather than reporting alpha as identified."""
    truth = dict(TRUE_P2, N_C=0.0)
    card = fit(p2_curves(truth, noise=0.0))
    notes = " | ".join(card.identifiability_notes())
    # Either way the size term went: N_C -> 0, or alpha -> 0 (then N_C merges into E).
    assert ("N_C -> 0: the size term N_C/N0^alpha is absent" in notes
            or "alpha = 0: the size term N_C/N0^alpha is a constant, indistinguishable from the constant E" in notes)
    assert "the fit collapsed to the law without it" in notes
    assert card.identifiable["alpha"].get("bound") or card.identifiable["N_C"].get("bound")
    collapse = card.identifiability_notes()[0]  # first: the simpler law it collapsed to
    assert collapse.startswith("collapsed: ") and "the fit is p2 without the size term N_C/N0^alpha" in collapse


def test_exponent_at_its_bound_is_flagged():
    truth = dict(TRUE_P2, beta=0.0, D_C=0.3)   # no recovery with tokens at all
    data = p2_curves(truth, noise=0.001, seed=3)
    card = fit(data)
    assert any("beta = " in n and "bound" in n for n in card.identifiability_notes())
    assert "AT BOUND" in card.summary()


def test_diverged_run_is_flagged_and_does_not_stall_the_solver():
    data = p2_curves(noise=0.003, seed=2)
    y = data.y.copy()
    bad = data.runs[5]
    y[data.run_ids == bad] *= 2.0   # a diverged run: loss doubled
    broken = from_arrays("p2", data.axes, y, data.run_ids)
    card = fit(broken)
    assert card.outliers() == [bad]
    assert "outlier run " + bad in card.summary()
    dense = solve(P2, broken.axes, broken.y, top_k=40, n_random=400, random_polish=8)
    assert card.objective <= dense.objective * (1 + 1e-9)
    on_grid = [np.isclose(card.params[e], P2.grid[e], atol=1e-9).any() for e in P2.exponents]
    assert not any(on_grid), card.params


def test_duplicate_runs_are_collapsed_with_a_note_naming_them():
    data = p2_curves(noise=0.003, seed=2, points=6)
    copy = data.run_ids == data.runs[3]
    axes = {a: np.r_[v, v[copy]] for a, v in data.axes.items()}
    dup = from_arrays("p2", axes, np.r_[data.y, data.y[copy]],
                      np.r_[data.run_ids, np.full(copy.sum(), "copy-of-3")])
    assert dup.n_runs == data.n_runs and dup.n_points == data.n_points
    assert any("'copy-of-3' (copy of '" + data.runs[3] + "')" in n for n in dup.notes)
    np.testing.assert_allclose(fit(dup).params_array, fit(data).params_array, rtol=1e-6)


def test_jackknife_t_of_a_mean_is_the_students_t_interval():
    """The jackknife-t interval of a sample mean is exactly mean +- t_{n-1} s / sqrt(n)."""
    from scipy.stats import t

    from fitting.intervals import jackknife_bounds, nan_percentiles

    x = np.random.default_rng(4).normal(3.0, 0.5, 11)
    loo = (x.sum() - x) / (len(x) - 1)
    (lo,), (hi,) = jackknife_bounds(np.array([x.mean()]), loo[:, None], 0.9, scale="linear")
    half = t.ppf(0.95, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    assert (lo, hi) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-12)
    draws = np.where(np.arange(40)[:, None] % 7 == 0, np.nan, np.random.default_rng(1).normal(size=(40, 3)))
    np.testing.assert_allclose(nan_percentiles(draws, (2.5, 97.5)), np.nanpercentile(draws, [2.5, 97.5], axis=0))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 19, 20, 99, 400])
def test_the_scipy_free_t_distribution_matches_scipy(df):
    """The planner's t quantile (no scipy on its path) is scipy's to rounding, in both tails,
    and the expanded percentile levels built on it are too."""
    from scipy.stats import norm, t

    from fitting.intervals import t_cdf, t_quantile

    for p in (0.001, 0.025, 0.1, 0.5, 0.8, 0.95, 0.975, 0.9995):
        assert t_quantile(p, df) == pytest.approx(t.ppf(p, df), rel=1e-10, abs=1e-12)
        assert t_cdf(t.ppf(p, df), df) == pytest.approx(p, rel=1e-10)
    tail = norm.cdf(-np.sqrt((df + 1) / df) * t.ppf(0.975, df))
    assert percentile_levels(0.95, df + 1) == pytest.approx((100 * tail, 100 * (1 - tail)), rel=1e-10)
    with pytest.raises(ValueError, match="integer df"):
        t_quantile(0.9, 2.5)


def test_one_wild_leave_one_out_refit_cannot_blow_an_interval_up():
    """A leave-one-run-out refit that jumps basin (a non-smooth statistic) widens each end at
    most JACKKNIFE_MAX_WIDENING times the bootstrap's, and never below the law's floor."""
    from fitting.intervals import JACKKNIFE_MAX_WIDENING, draw_bounds

    boot = np.random.default_rng(2).normal(2.0, 0.01, (200, 1))
    jack = np.full((12, 1), 2.0)
    jack[3] = 1.0                                     # one refit jumped far away
    plain = draw_bounds(boot, 0.95, 12)
    lo, hi = draw_bounds(boot, 0.95, 12, point=np.array([2.0]), jack=jack, scale="linear")
    assert lo[0] == pytest.approx(2.0 - JACKKNIFE_MAX_WIDENING * (2.0 - plain[0][0]))
    assert hi[0] == pytest.approx(2.0 + JACKKNIFE_MAX_WIDENING * (plain[1][0] - 2.0))
    floored, _ = draw_bounds(boot, 0.95, 12, point=np.array([2.0]), jack=jack, scale="linear", floor=1.99)
    assert floored[0] == pytest.approx(min(1.99, plain[0][0]))


def test_intervals_hull_the_bootstrap_and_the_jackknife_and_reload(tmp_path):
    data = p2_curves(noise=0.003, run_noise=0.004, seed=5, points=8)
    card = fit(data, FitConfig(n_bootstrap=24, seed=0, top_k=1, n_random=16))
    assert card.jackknife_params.shape == (data.n_runs, len(P2.params))
    assert card.fit["jackknife_refits"] == data.n_runs and "jackknife-t" in card.summary()
    q = card.percentiles()
    for j, name in enumerate(P2.params):
        lo, hi = card.intervals[name]
        plo, phi = np.percentile(card.bootstrap_params[:, j], q)
        assert lo <= plo + 1e-12 and hi >= phi - 1e-12, name  # never narrower than the bootstrap's
    widened = [n for j, n in enumerate(P2.params)
               if card.intervals[n][1] - card.intervals[n][0] > np.ptp(np.percentile(card.bootstrap_params[:, j], q)) * 1.0001]
    assert widened  # the jackknife half changes some interval on 9 runs
    back = LawCard.load(card.save(tmp_path / "card.json"))
    np.testing.assert_array_equal(back.jackknife_params, card.jackknife_params)
    f = lambda p: p[:, 0] * 2  # noqa: E731
    assert back.interval(f) == pytest.approx(card.interval(f))
    old = LawCard.load(card.save(tmp_path / "old.json"))
    old = type(old)(**{**old.__dict__, "jackknife_params": None})
    assert old.interval(f) == pytest.approx(tuple(np.percentile(2 * card.bootstrap_params[:, 0], q)))


def test_parallel_bootstrap_matches_in_process():
    """Workers change nothing but the wall time: same seeds, same samples."""
    rng = np.random.default_rng(0)
    n, d = np.repeat([1e8, 3e8, 1e9, 3e9], 4), np.tile(np.geomspace(1e9, 1e11, 4), 4)
    loss = (1.8 + 480 / n ** 0.35 + 2000 / d ** 0.37) * np.exp(0.003 * rng.standard_normal(16))
    data = from_arrays("chinchilla", {"N": n, "D": d}, loss)
    kw = dict(n_bootstrap=64, seed=3, top_k=1, n_random=8)
    one = fit(data, FitConfig(workers=1, **kw))
    two = fit(data, FitConfig(workers=2, **kw))
    assert two.fit["bootstrap_workers"] == 2
    np.testing.assert_allclose(two.bootstrap_params, one.bootstrap_params, rtol=1e-9)


def _quadratic_predict(p: Mapping, x: Mapping):
    r""":math:`L = c + a / D^{b}` with a saturation floor ``c`` (a law written by a user)."""
    return p["c"] + p["a"] / x["D"] ** p["b"]


def test_a_new_law_is_one_object(tmp_path):
    """Declare one ``Law``, register it: fit, card, decisions and the generic D* all work."""
    law = register(Law(
        name="floor_power", formula="L = c + a / D^b", params=("c", "a", "b"), axes=("D",),
        target="loss", terms=(Term("c", (), "the floor c"), Term("a", (("b", "D", -1.0),), "the data term a/D^b")),
        offset=None, bounds={"b": (0.0, 3.0)}, grid={"b": np.linspace(0.0, 2.0, 21)},
        predict_fn=_quadratic_predict, requires={"D": (3, "b")}, token_axis="D"))
    try:
        d = np.geomspace(1e6, 1e9, 12)
        y = law.predict({"c": 2.0, "a": 30.0, "b": 0.3}, D=d)
        card = fit(from_arrays(law, {"D": d}, y))
        assert card.params["b"] == pytest.approx(0.3, rel=1e-6)
        back = load_card(card.save(tmp_path / "c.json"))
        assert float(back.tokens_for_loss(2.5)) == pytest.approx((30 / 0.5) ** (1 / 0.3), rel=1e-5)
        assert float(back.asymptote()) == pytest.approx(2.0, rel=1e-6)
        d_star = float(back.d_star(1e-3))
        h = d_star * 1e-6
        slope = -(law.predict(back.params, D=d_star + h) - law.predict(back.params, D=d_star - h)) / (2 * h)
        assert slope * 1e9 == pytest.approx(1e-3, rel=1e-4)
    finally:
        LAWS.pop("floor_power")


def test_every_law_owns_its_decisions():
    """P2's asymptote and budget come from its structured form; nobody else writes them."""
    params = np.array([TRUE_P2[n] for n in P2.params])
    x = dict(params_before=3e9, ratio=0.4, loss_before=2.2)
    asym = float(P2.asymptote(params, **x))
    assert float(P2.predict(params, tokens=1e80, **x)) == pytest.approx(asym, rel=1e-9)
    target = asym + 0.05
    d = float(P2.tokens_for_loss(params, target, **x))
    assert float(P2.predict(params, tokens=d, **x)) == pytest.approx(target, rel=1e-10)
    for name in LAWS:
        assert get_law(name).formula and get_law(name).target


def test_two_runs_that_each_hold_a_ratio_give_no_interval_not_a_zero_width_one():
    """SmolLM2-135M depth at two ratios (the committed real-parent curves): a run bootstrap may
    keep only resamples holding both runs (one run alone cannot identify gamma), so every kept
    sample is the data itself. The card says so and carries no interval, where it once
    printed [x, x] around every parameter, D* and loss."""
    from pathlib import Path

    from fitting.table import load_data

    runs = Path(__file__).resolve().parents[2] / "docs" / "smollm2_runs"
    data = load_data(runs, "p2", method="depth", family="smollm2", objective="kd")
    assert data.n_runs == 2
    card = fit(data, FitConfig(n_bootstrap=12, workers=1))
    assert all(card.ci["params"][n] is None for n in ("beta", "gamma", "D_C"))
    assert any("no intervals" in note and "cannot vary" in note for note in card.notes)
    query = {"params_before": 134515008.0, "ratio": 0.5, "tokens": 5e5, "loss_before": 3.2}
    assert card.band(**query) is None and card.prediction_band(**query) is None
