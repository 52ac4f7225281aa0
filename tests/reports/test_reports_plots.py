"""Each plot function of reports.plots on a small frame, and the frame transforms they draw."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from reports import plots, tables  # noqa: E402


def _run(run_id: str, method: str, ratio: float, tokens, loss, *, init: str = "pruned",
         objective: str = "lm", parent: str = "p1", seed: int = 0, l0: float = 3.0) -> pd.DataFrame:
    n = len(tokens)
    return pd.DataFrame({"run_id": run_id, "parent": parent, "method": method, "ratio": ratio,
                         "ratio_target": ratio, "params_before": 1e8, "params_after": (1 - ratio) * 1e8,
                         "loss_before": l0, "init": init, "objective": objective, "seed": seed,
                         "status": "done", "tokens": np.asarray(tokens, np.int64),
                         "eval_loss": np.asarray(loss, float)}, index=range(n))


@pytest.fixture()
def frame() -> pd.DataFrame:
    tokens = [0, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000]
    return pd.concat([
        _run("a", "depth", 0.25, tokens, [4.0, 3.6, 3.4, 3.3, 3.25]),
        _run("b", "depth", 0.5, tokens, [4.6, 3.9, 3.6, 3.45, 3.4]),
        _run("c", "width", 0.5, tokens, [4.4, 3.8, 3.5, 3.4, 3.35]),
    ], ignore_index=True)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_method_colors_are_stable_whatever_else_ran():
    alone = plots.method_colors(["width"])
    mixed = plots.method_colors(["zzz-custom", "width", "depth"])
    assert alone["width"] == mixed["width"]
    assert mixed["zzz-custom"] not in (mixed["depth"], mixed["width"])


def test_loss_curves_draws_runs_on_log_axes_with_count_labels(frame):
    fig, ax = plt.subplots()
    out = plots.plot_loss_curves(frame, ax=ax)
    assert out is ax
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
    assert len(lines) == 3
    # tokens == 0 cannot sit on a log axis: each line keeps its 4 positive points
    assert all(len(ln.get_xdata()) == 4 for ln in lines)
    fig.canvas.draw()
    labels = {t.get_text() for t in ax.get_xticklabels() if t.get_text()}
    assert {"10M", "100M", "1B"} <= labels
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"depth ρ=0.25", "depth ρ=0.5", "width ρ=0.5"}


def test_loss_curves_with_fit_draws_line_and_band_in_the_run_colour(frame):
    fit = pd.DataFrame({"run_id": "a", "tokens": np.geomspace(1e6, 1e9, 10),
                        "pred": np.linspace(3.6, 3.25, 10), "lo": np.linspace(3.5, 3.2, 10),
                        "hi": np.linspace(3.7, 3.3, 10)})
    ax = plots.plot_loss_curves(frame, fit=fit)
    bands = [c for c in ax.collections if len(c.get_paths()) and len(c.get_paths()[0].vertices)]
    assert len(bands) == 1
    assert {"fitted law", "bootstrap band"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    fit_line = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 10]
    assert len(fit_line) == 1
    markers = [ln for ln in ax.get_lines() if ln.get_label() == "depth ρ=0.25"]
    assert markers[0].get_linestyle() == "None"  # observations are points when a law is drawn
    assert np.allclose(matplotlib.colors.to_rgb(fit_line[0].get_color()),
                       matplotlib.colors.to_rgb(markers[0].get_color()))


def test_loss_vs_ratio_plots_means_before_and_after_post_training(frame):
    ax = plots.plot_loss_vs_ratio(frame)
    by_label = {ln.get_label(): ln for ln in ax.get_lines()}
    after = by_label["depth, after post-training"]
    assert list(after.get_xdata()) == [0.25, 0.5]
    assert np.allclose(after.get_ydata(), [3.25, 3.4])
    assert np.allclose(by_label["depth, after pruning"].get_ydata(), [4.0, 4.6])
    assert np.allclose(by_label["parent L0"].get_ydata(), [3.0, 3.0])


def test_heldout_reports_rmse_and_mape_of_the_points():
    table = pd.DataFrame({"observed": [3.0, 3.2, 3.4], "predicted": [3.1, 3.2, 3.3],
                          "method": ["depth"] * 3})
    ax = plots.plot_heldout(table)
    text = " ".join(t.get_text() for t in ax.texts)
    assert "RMSE 0.0816" in text and "n = 3" in text
    assert "MAPE 2.09%" in text


def test_residuals_against_tokens_and_ratio():
    table = pd.DataFrame({"method": ["depth", "width"], "tokens": [1e6, 1e9], "ratio": [0.25, 0.5],
                          "residual": [0.01, -0.02]})
    ax = plots.plot_residuals(table, x="tokens")
    assert ax.get_xscale() == "log"
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert sorted(offsets[:, 1]) == [-0.02, 0.01]
    ax = plots.plot_residuals(table, x="ratio")
    assert ax.get_xscale() == "linear" and "ratio" in ax.get_xlabel()


def test_param_table_prints_estimates_and_intervals():
    rows = [{"name": "beta", "value": 0.381409552, "lo": 0.3597, "hi": 0.4310, "note": ""},
            {"name": "alpha", "value": 0.0, "lo": None, "hi": None, "note": "not identified, fixed at 0"}]
    ax = plots.plot_param_table(rows)
    cells = {c.get_text().get_text() for c in ax.tables[0].get_celld().values()}
    assert {"beta", "0.38141", "0.3597", "0.431", "alpha", "—", "not identified, fixed at 0"} <= cells
    assert "95% CI low" in cells


def test_dstar_is_a_log_axis_with_one_line_per_parent():
    table = pd.DataFrame({"label": ["small"] * 3 + ["big"] * 3, "ratio": [0.2, 0.5, 0.8] * 2,
                          "dstar": [1e9, 2e9, 4e9, 0.8e9, 1.5e9, 3e9], "lo": np.nan, "hi": np.nan})
    ax = plots.plot_dstar(table)
    assert ax.get_yscale() == "log"
    assert [ln.get_label() for ln in ax.get_lines()] == ["small", "big"]
    ax.figure.canvas.draw()
    # the data span under a decade still gets labels (1-2-5 steps), not a bare axis
    assert {"1B", "2B"} <= {t.get_text() for t in ax.get_yticklabels() if t.get_text()}


def test_domain_curves_use_the_domain_column(frame):
    frame = frame.assign(**{"eval_loss.code": frame["eval_loss"] - 1.0})
    ax = plots.plot_domain_curves(frame, "code")
    ys = np.concatenate([ln.get_ydata() for ln in ax.get_lines()])
    assert ys.max() < 3.0  # the code losses, not the main eval_loss
    assert "eval_loss.code" in ax.get_ylabel()


def test_matched_comparison_interpolates_in_log_space_and_plots_the_gap():
    tokens = np.array([1e6, 1e7, 1e8, 1e9])
    pruned = _run("p", "depth", 0.5, tokens, 3.0 + 1.0 / np.log10(tokens))
    # random init evaluated on another schedule: 2x the loss of pruned at every token count
    other = np.array([3e6, 3e7, 3e8, 3e9])
    random = _run("r", "depth", 0.5, other, 2 * (3.0 + 1.0 / np.log10(other)), init="random")
    table = tables.matched_comparison(pd.concat([pruned, random], ignore_index=True), "init", "pruned")
    assert list(table["tokens"]) == [1e7, 1e8, 1e9]  # inside the range both curves cover
    assert np.allclose(table["loss_arm"] / table["loss_ref"], 2.0, rtol=2e-3)
    assert (table["arm"] == "random").all()
    summary = tables.comparison_summary(table)
    assert summary.loc[0, "tokens"] == 1e9 and summary.loc[0, "gap"] > 3.0
    ax = plots.plot_matched_gap(table)
    assert np.allclose(ax.get_lines()[0].get_ydata(), table["gap"])


def test_final_and_pruning_points_pick_one_row_per_run(frame):
    assert list(tables.pruning_points(frame)["eval_loss"]) == [4.0, 4.6, 4.4]
    final = tables.final_points(frame).set_index("run_id")["eval_loss"]
    assert final.to_dict() == {"a": 3.25, "b": 3.4, "c": 3.35}
    assert tables.run_counts(frame) == {"done": 3, "runs": 3, "points": 15}


def test_objective_gap_is_kept_apart_for_pruned_and_random_starts():
    # kd beats lm by 0.1 from pruned starts and loses by 0.5 from random ones: a mean over both
    # (-0.1 + 0.5) / 2 = +0.2 would say kd is worse, which is true of neither start alone.
    tokens = np.array([1e6, 1e7])
    runs = [_run(f"{o}-{i}", "depth", 0.5, tokens, np.full(2, base + (delta if o == "kd" else 0.0)),
                 init=i, objective=o)
            for i, base, delta in (("pruned", 3.5, -0.1), ("random", 6.0, 0.5)) for o in ("lm", "kd")]
    summary = tables.comparison_summary(tables.matched_comparison(pd.concat(runs, ignore_index=True),
                                                                   "objective", "lm"))
    gaps = summary.set_index("setting")["gap"]
    assert np.isclose(gaps["pruned"], -0.1) and np.isclose(gaps["random"], 0.5)


def test_recoverable_curves_draw_l_minus_l0_with_the_law_shifted_alike(frame):
    fit = pd.DataFrame({"run_id": "a", "tokens": np.geomspace(1e6, 1e9, 10), "pred": np.linspace(3.6, 3.25, 10)})
    ax = plots.plot_loss_curves(frame, fit=fit, recoverable=True, law_label="law fitted on other data")
    assert ax.get_ylabel() == plots.GAP_LABEL and ax.get_yscale() == "log"
    run_a = next(ln for ln in ax.get_lines() if ln.get_label() == "depth ρ=0.25")
    assert np.allclose(run_a.get_ydata(), [0.6, 0.4, 0.3, 0.25])  # L - L0 with L0 = 3.0
    law = next(ln for ln in ax.get_lines() if len(ln.get_xdata()) == 10)
    assert np.allclose(law.get_ydata(), np.linspace(0.6, 0.25, 10))
    assert "law fitted on other data" in {t.get_text() for t in ax.get_legend().get_texts()}


def test_a_run_that_beats_its_parent_keeps_the_loss_axis_with_distinct_labels():
    # a post-trained model 0.01 nats below its parent: L - L0 < 0 has no log axis
    tokens = [1_000, 10_000, 100_000, 1_000_000]
    frame = _run("kd", "2:4", 0.27, tokens, [5.41, 5.402, 5.396, 5.392], l0=5.4)
    ax = plots.plot_loss_curves(frame, recoverable=True)
    assert ax.get_ylabel() == plots.LOSS_LABEL
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels


def test_distinct_formatter_adds_digits_only_where_ticks_need_them():
    fmt = plots.distinct_formatter()
    assert fmt.format_ticks([5.4, 5.405, 5.41]) == ["5.4", "5.405", "5.41"]
    assert fmt.format_ticks([0.01, 0.1, 1.0]) == ["0.01", "0.1", "1"]


def test_parent_curves_are_one_line_per_parent_smallest_first():
    tokens = [0, 10_000, 100_000, 1_000_000]
    frame = pd.concat([_run("big", "none", 0.0, tokens, [10.0, 7.0, 5.0, 4.0], init="random", parent="p-big"),
                       _run("small", "none", 0.0, tokens, [10.0, 7.5, 6.0, 5.5], init="random", parent="p-small")],
                      ignore_index=True)
    frame.loc[frame["run_id"] == "small", "params_before"] = 1e6
    ax = plots.plot_parent_curves(frame)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["p-small (N0 = 1M)", "p-big (N0 = 100M)"]
