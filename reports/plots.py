"""Plot functions of the report. Each takes ``ax=None`` and returns the axes it drew on.

They draw tidy frames (see :mod:`reports.tables` and :mod:`reports.laws`) and never lay out
pages, so a notebook can call any of them on its own axes. matplotlib is imported inside the
functions: importing this module costs nothing, and fitting/planner never pull it in.

Conventions shared by every plot: one hue per pruning method (:func:`method_colors`), lighter
for lower ratios; token and parameter axes labelled 1M/1B/1T (:func:`data.units.format_count`);
legends outside the data area.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from data.methods import display_order
from data.units import format_count

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.axes import Axes

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#7f7f7f")
OBJECTIVE_MARKERS: dict[str, str] = {"lm": "o", "kd": "s", "recon": "^"}
"""Marker per post-training objective, so lm/kd/recon runs of one panel stay apart."""
_EXTRA = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
LOSS_LABEL = "eval loss (nats)"
GAP_LABEL = "L − L0: eval loss above the parent's (nats)"
TOKENS_LABEL = "post-training tokens D"


def method_colors(methods: Iterable[str]) -> dict[str, str]:
    """A fixed colour per method of the table (its display order, ``data.methods``), so a method
    keeps its colour in every report whatever else ran; others get colours unused here."""
    present = set(map(str, methods))
    known = display_order()
    colors = {m: (_PALETTE + _EXTRA)[i % (len(_PALETTE) + len(_EXTRA))] for i, m in enumerate(known)}
    used = {colors[m] for m in present if m in colors}
    free = [c for c in _PALETTE + _EXTRA if c not in used] or list(_PALETTE)
    for i, m in enumerate(sorted(present - set(known))):
        colors[m] = free[i % len(free)]
    return colors


def shade(color: str, ratio: float, ratios: Sequence[float]) -> tuple[float, float, float]:
    """``color`` mixed with white: the lowest ratio lightest, the highest the full colour."""
    from matplotlib.colors import to_rgb

    values = sorted(set(float(r) for r in ratios))
    pos = values.index(float(ratio)) / max(len(values) - 1, 1) if float(ratio) in values else 1.0
    mix = 0.55 * (1.0 - pos)  # keep the lightest shade readable on white paper
    return tuple(c + (1.0 - c) * mix for c in to_rgb(color))


def count_axis(axis: Any) -> None:
    """Label a log count axis 1M/1B/1T: decades, or denser steps when it spans under 2 decades.

    Call after the data is drawn: the span decides how dense the labels can be without
    overlapping, and a span inside one decade would otherwise get no label at all.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax = axis.axes
    lo, hi = sorted(ax.get_xlim() if axis is ax.xaxis else ax.get_ylim())  # forces the autoscale
    span = np.log10(hi / lo) if lo > 0 else np.inf
    subs = (1.0,) if span >= 2.0 else (1.0, 2.0, 5.0) if span >= 1.0 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: format_count(v)))
    # Unlabelled minor ticks cost a Tick artist each (a third of a page's draw time) and
    # add nothing the major grid does not show.
    axis.set_minor_locator(NullLocator())


def loss_axis(axis: Any) -> None:
    """Plain numbers on a log loss axis (2, 3, 4 rather than 10^0.3), each label distinct.

    Call after the data is drawn: as on :func:`count_axis`, the span decides how dense the
    labels can be (an L - L0 axis spans several decades, an eval-loss axis a fraction of one).
    """
    from matplotlib.ticker import LogLocator, NullLocator

    ax = axis.axes
    lo, hi = sorted(ax.get_xlim() if axis is ax.xaxis else ax.get_ylim())
    span = np.log10(hi / lo) if lo > 0 else np.inf
    subs = ((1.0,) if span >= 3.0 else (1.0, 2.0, 5.0) if span >= 1.0
            else (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0))
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(distinct_formatter())
    axis.set_minor_locator(NullLocator())  # the 1-1.5-2-... majors already grid the span


def distinct_formatter() -> Any:
    """Tick labels with the fewest significant digits (3 to 7) that tell every tick apart.

    A loss axis spanning 0.02 nats around 5.4 needs four digits ("5.405, 5.41"); a fixed three
    print "5.4, 5.4, 5.41" and the reader cannot tell the ticks apart. matplotlib's formatters
    fix the digits or switch to an offset ("+5.4"), hence this one.
    """
    from matplotlib.ticker import Formatter

    class Distinct(Formatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:.4g}"

        def format_ticks(self, values: Sequence[float]) -> list[str]:
            labels = [f"{v:.3g}" for v in values]
            for digits in range(3, 8):
                labels = [f"{v:.{digits}g}" for v in values]
                if len(set(labels)) == len(labels):
                    break
            return labels

    return Distinct()


def _axes(ax: "Axes | None", size: tuple[float, float] = (6.0, 4.0)) -> "Axes":
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.figure(figsize=size).add_subplot()


def _legend(ax: "Axes", where: str | None, **kw: Any) -> None:
    """Legend outside the data area (right) or nowhere; duplicate labels collapsed."""
    if where is None:
        return
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    if not seen:
        return
    if where == "outside":
        ax.legend(seen.values(), seen.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0, frameon=False, **kw)
    else:
        ax.legend(seen.values(), seen.keys(), loc=where, **kw)


def plot_loss_curves(frame: "pd.DataFrame", *, fit: "pd.DataFrame | None" = None,
                     ax: "Axes | None" = None, colors: Mapping[str, str] | None = None,
                     title: str | None = None, legend: str | None = "outside",
                     recoverable: bool = False, law_label: str = "fitted law") -> "Axes":
    """Loss against post-training tokens on log-log axes, one line per run.

    ``frame``: run-store rows (run_id, method, ratio, tokens, eval_loss; ``tokens == 0`` rows
    are dropped, a log axis cannot show them). ``fit``: optional law predictions with columns
    run_id, tokens, pred and optionally lo, hi (the bootstrap band), drawn as a line and band
    in the run's colour while observations are markers. ``recoverable``: draw L - L0, the part
    of the loss post-training can still remove (P2's power law in D is a line there), when
    every point lies above its parent's L0; otherwise the loss itself.
    """
    from reports.tables import post_training_points, ratio_key

    ax = _axes(ax)
    pts = post_training_points(frame).assign(_ratio=lambda f: ratio_key(f))
    recoverable = recoverable and _above_parent(pts)
    if recoverable:
        l0 = pts.groupby("run_id")["loss_before"].first()
        pts = pts.assign(eval_loss=pts["eval_loss"] - pts["run_id"].map(l0))
        if fit is not None:
            shift = fit["run_id"].map(l0)
            fit = fit.assign(**{c: fit[c] - shift for c in ("pred", "lo", "hi") if c in fit.columns})
    colors = dict(colors or method_colors(pts["method"].unique()))
    ratios = sorted(pts["_ratio"].unique())
    objectives = sorted(pts["objective"].dropna().astype(str).unique()) if "objective" in pts else []
    for run_id, run in pts.groupby("run_id", sort=True):
        run = run.sort_values("tokens")
        rho, method = float(run["_ratio"].iloc[0]), str(run["method"].iloc[0])
        objective = str(run["objective"].iloc[0]) if objectives else ""
        color = shade(colors.get(method, "#333333"), rho, ratios)
        label = f"{method} ρ={rho:g}" + (f" {objective}" if len(objectives) > 1 else "")
        ax.plot(run["tokens"], run["eval_loss"], marker=OBJECTIVE_MARKERS.get(objective, "o"), ms=3.5,
                ls="-" if fit is None else "none", lw=1.0, color=color, label=label)
        if fit is not None:
            _draw_fit(ax, fit.loc[fit["run_id"] == run_id], color)
    if fit is not None and not fit.empty:
        # grey proxies so the legend says what the lines and bands are, once per panel
        ax.plot([], [], color="0.35", lw=1.2, label=law_label)
        if {"lo", "hi"} <= set(fit.columns) and fit["lo"].notna().any():
            ax.fill_between([], [], [], color="0.35", alpha=0.18, lw=0, label="bootstrap band")
    ax.set_xscale("log")
    ax.set_yscale("log")
    count_axis(ax.xaxis)
    loss_axis(ax.yaxis)
    ax.set_xlabel(TOKENS_LABEL)
    ax.set_ylabel(GAP_LABEL if recoverable else LOSS_LABEL)
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title)
    _legend(ax, legend, fontsize="small")
    return ax


def plot_parent_curves(frame: "pd.DataFrame", *, ax: "Axes | None" = None, title: str | None = None,
                       legend: str | None = "outside") -> "Axes":
    """The parents' pretraining: eval loss against tokens (log-log), one line per parent,
    coloured from the smallest to the largest."""
    from reports.tables import post_training_points

    ax = _axes(ax)
    pts = post_training_points(frame)
    sizes = pts.groupby("run_id")["params_before"].max().sort_values(kind="stable")
    for color, run_id in zip(_sequential(len(sizes)), sizes.index):
        run = pts.loc[pts["run_id"] == run_id].sort_values("tokens")
        ax.plot(run["tokens"], run["eval_loss"], marker="o", ms=3.5, lw=1.0, color=color,
                label=f"{run['parent'].iloc[0]} (N0 = {format_count(float(sizes[run_id]))})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    count_axis(ax.xaxis)
    loss_axis(ax.yaxis)
    ax.set_xlabel("pretraining tokens")
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title)
    _legend(ax, legend, fontsize="small")
    return ax


def _above_parent(points: "pd.DataFrame") -> bool:
    """Whether every point has a known L0 below it (L - L0 > 0 can go on a log axis)."""
    if "loss_before" not in points.columns or points.empty:
        return False
    gap = points["eval_loss"].astype(float) - points["loss_before"].astype(float)
    return bool((gap > 0).all())


def _draw_fit(ax: "Axes", fit: "pd.DataFrame", color: Any) -> None:
    if fit.empty:
        return
    fit = fit.sort_values("tokens")
    ax.plot(fit["tokens"], fit["pred"], color=color, lw=1.2)
    if {"lo", "hi"} <= set(fit.columns) and fit["lo"].notna().any():
        ax.fill_between(fit["tokens"], fit["lo"], fit["hi"], color=color, alpha=0.18, lw=0)


def plot_loss_vs_ratio(frame: "pd.DataFrame", *, ax: "Axes | None" = None,
                       colors: Mapping[str, str] | None = None, title: str | None = None,
                       legend: str | None = "outside") -> "Axes":
    """Loss right after pruning (open markers, dashed) and after post-training (filled) vs ratio.

    One line per method, averaged over the runs of each ratio (seeds, objectives); the parent's
    own loss L0 is the dotted grey line the pruned models start from and recover towards.
    """
    from reports.tables import final_points, pruning_points, ratio_key

    ax = _axes(ax)
    colors = dict(colors or method_colors(frame["method"].unique()))
    for label, points, style, face in (("after pruning", pruning_points(frame), "--", "white"),
                                       ("after post-training", final_points(frame), "-", None)):
        if points.empty:
            continue
        points = points.assign(_ratio=ratio_key(points))
        for method, rows in points.groupby("method", sort=True):
            mean = rows.groupby("_ratio")["eval_loss"].mean()
            color = colors.get(str(method), "#333333")
            ax.plot(mean.index, mean.to_numpy(), ls=style, marker="o", color=color,
                    mfc=face or color, label=f"{method}, {label}")
    l0 = frame["loss_before"].astype(float).dropna()
    if len(l0):
        ax.axhline(float(l0.mean()), color="0.45", ls=":", lw=1.2, label="parent L0")
    ax.set_xlabel("pruning ratio ρ (fraction of parameters removed)")
    ax.set_ylabel(LOSS_LABEL)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    _legend(ax, legend, fontsize="small")
    return ax


def plot_heldout(table: "pd.DataFrame", *, ax: "Axes | None" = None,
                 colors: Mapping[str, str] | None = None, title: str | None = None,
                 legend: str | None = "outside") -> "Axes":
    """Predicted against observed loss of held-out points, with the y = x line.

    ``table``: columns observed, predicted, method (one row per held-out point). The text box
    gives the RMSE and MAPE of the held-out points, the numbers the extrapolation is judged by.
    """
    ax = _axes(ax, (5.0, 4.5))
    colors = dict(colors or method_colors(table["method"].unique()))
    for method, rows in table.groupby("method", sort=True):
        ax.scatter(rows["observed"], rows["predicted"], s=14, color=colors.get(str(method), "#333"),
                   label=str(method), alpha=0.85)
    both = np.concatenate([table["observed"].to_numpy(float), table["predicted"].to_numpy(float)])
    lo, hi = float(np.nanmin(both)), float(np.nanmax(both))
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.4", lw=1, ls="--", label="y = x")
    err = table["predicted"].to_numpy(float) - table["observed"].to_numpy(float)
    rmse = float(np.sqrt(np.nanmean(err ** 2)))
    mape = float(np.nanmean(np.abs(err) / table["observed"].to_numpy(float)) * 100)
    ax.text(0.03, 0.97, f"RMSE {rmse:.4f}\nMAPE {mape:.2f}%\nn = {len(table)}", transform=ax.transAxes,
            va="top", ha="left", fontsize="small", bbox={"fc": "white", "ec": "0.7", "alpha": 0.9})
    ax.set_xlabel("observed loss (nats)")
    ax.set_ylabel("predicted loss (nats)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    _legend(ax, legend, fontsize="small")
    return ax


def plot_residuals(table: "pd.DataFrame", *, x: str = "tokens", ax: "Axes | None" = None,
                   colors: Mapping[str, str] | None = None, title: str | None = None,
                   legend: str | None = "outside") -> "Axes":
    """Residuals (observed minus predicted loss) against ``x`` (tokens: log axis, or ratio).

    ``table``: columns method, residual and ``x``. A structure left in the residuals (a trend
    with tokens, a ratio the law misses) is what this page is for.
    """
    ax = _axes(ax)
    colors = dict(colors or method_colors(table["method"].unique()))
    for method, rows in table.groupby("method", sort=True):
        ax.scatter(rows[x], rows["residual"], s=9, alpha=0.7, color=colors.get(str(method), "#333"),
                   label=str(method))
    ax.axhline(0.0, color="0.3", lw=1)
    if x == "tokens":
        ax.set_xscale("log")
        count_axis(ax.xaxis)
        ax.set_xlabel(TOKENS_LABEL)
    else:
        ax.set_xlabel("pruning ratio ρ" if x == "ratio" else x)
    ax.set_ylabel("observed − predicted loss (nats)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    _legend(ax, legend, fontsize="small")
    return ax


def plot_param_table(rows: Sequence[Mapping[str, Any]], *, ax: "Axes | None" = None,
                     title: str | None = None, level: float = 0.95) -> "Axes":
    """The fitted parameters as a table: name, estimate, interval bounds and a note.

    ``rows``: mappings with name, value, lo, hi (None where no interval) and note. Numbers are
    printed with 5 significant digits so the page text matches the card to that precision.
    """
    pct = f"{level * 100:g}%"
    cells = [[str(r["name"]), fmt_num(r["value"]), fmt_num(r.get("lo")), fmt_num(r.get("hi")),
              str(r.get("note") or "")] for r in rows]
    return plot_table(cells, ["parameter", "estimate", f"{pct} CI low", f"{pct} CI high", "note"],
                      ax=ax, title=title, widths=[0.13, 0.13, 0.13, 0.13, 0.48])


def plot_table(cells: Sequence[Sequence[str]], columns: Sequence[str], *, ax: "Axes | None" = None,
               title: str | None = None, widths: Sequence[float] | None = None) -> "Axes":
    """A plain text table (header row shaded) filling the top of ``ax``; the axes are hidden."""
    ax = _axes(ax, (7.0, 0.4 + 0.3 * len(cells)))
    ax.axis("off")
    table = ax.table(cellText=[list(map(str, row)) for row in cells] or [["—"] * len(columns)],
                     colLabels=list(columns), loc="upper center", cellLoc="left", colLoc="left",
                     colWidths=list(widths) if widths else None)
    table.auto_set_font_size(False)
    # Long tables shrink rather than run off the page (9 pt down to 5.5 pt at ~24 rows).
    table.set_fontsize(9 if len(cells) <= 12 else max(5.5, 9 * 12 / len(cells)))
    table.scale(1.0, 1.3 if len(cells) <= 12 else 1.1)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor("0.8")
        if row == 0:
            cell.set_facecolor("0.92")
            cell.get_text().set_weight("bold")
    if title:
        ax.set_title(title, loc="left")
    return ax


def fmt_num(value: Any) -> str:
    """5 significant digits, or an em dash for a missing value."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{float(value):.5g}"


def plot_dstar(table: "pd.DataFrame", *, ax: "Axes | None" = None, title: str | None = None,
               legend: str | None = "outside", fitted_ratios: tuple[float, float] | None = None,
               observed_tokens: float | None = None) -> "Axes":
    """The recommended post-training budget D* against the pruning ratio, one line per parent.

    ``table``: columns ratio, dstar, label and optionally lo, hi (bootstrap interval).
    ``fitted_ratios``: the card's ratio range; outside it the page is shaded as extrapolation.
    ``observed_tokens``: the largest budget the card saw; D* above the dashed line is beyond it.
    """
    ax = _axes(ax)
    if fitted_ratios is not None:
        lo, hi = fitted_ratios
        left, right = float(table["ratio"].min()), float(table["ratio"].max())
        for a, b in ((left, lo), (hi, right)):
            if b > a:
                ax.axvspan(a, b, color="0.85", alpha=0.6, lw=0, label="outside the fitted ratios")
    if observed_tokens is not None:
        ax.axhline(observed_tokens, color="0.3", ls="--", lw=1, label="largest budget observed")
    labels = list(dict.fromkeys(table["label"]))
    cmap = _sequential(len(labels))
    for color, label in zip(cmap, labels):
        rows = table.loc[table["label"] == label].sort_values("ratio")
        ax.plot(rows["ratio"], rows["dstar"], marker="o", ms=3.5, color=color, label=str(label))
        if {"lo", "hi"} <= set(rows.columns) and rows["lo"].notna().any():
            # several parents' bands overlap: faint fills, edges drawn so each stays traceable
            ax.fill_between(rows["ratio"], rows["lo"], rows["hi"], color=color, alpha=0.08, lw=0)
            ax.plot(rows["ratio"], rows["lo"], color=color, lw=0.6, ls=":")
            ax.plot(rows["ratio"], rows["hi"], color=color, lw=0.6, ls=":")
    ax.set_yscale("log")
    count_axis(ax.yaxis)
    ax.set_xlabel("pruning ratio ρ")
    ax.set_ylabel("recommended tokens D*")
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title)
    _legend(ax, legend, fontsize="small")
    return ax


def _sequential(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.1 + 0.75 * i / max(n - 1, 1)) for i in range(n)]


def plot_domain_curves(frame: "pd.DataFrame", domain: str, *, ax: "Axes | None" = None,
                       colors: Mapping[str, str] | None = None, title: str | None = None,
                       legend: str | None = "outside") -> "Axes":
    """Loss on one evaluation domain (column ``eval_loss.<domain>``) against tokens, per run."""
    column = domain if domain.startswith("eval_loss.") else f"eval_loss.{domain}"
    sub = frame.loc[frame[column].notna()].drop(columns=["eval_loss"]).rename(columns={column: "eval_loss"})
    ax = plot_loss_curves(sub, ax=ax, colors=colors, legend=legend,
                          title=title or f"domain: {column.split('.', 1)[1]}")
    ax.set_ylabel(f"{column} (nats)")
    return ax


def plot_matched_gap(table: "pd.DataFrame", *, ax: "Axes | None" = None,
                     colors: Mapping[str, str] | None = None, title: str | None = None,
                     legend: str | None = "outside") -> "Axes":
    """Loss of each arm minus the reference arm at matched tokens (below 0: the arm is better).

    ``table``: :func:`reports.tables.matched_comparison` output. Colour per method (shade by
    ratio), one line style per arm.
    """
    ax = _axes(ax)
    colors = dict(colors or method_colors(table["method"].unique()))
    ratios = sorted(table["ratio"].unique())
    other = "objective" if "objective" in table.columns else "init"
    variants = sorted(table[[other, "arm"]].astype(str).drop_duplicates().itertuples(index=False, name=None))
    styles = dict(zip(variants, ("-", "--", ":", "-.") * 3))
    keys = ["parent", "method", "ratio", "seed", other, "arm"]
    for (_parent, method, rho, _seed, kind, arm), rows in table.groupby(keys, sort=True, dropna=False):
        color = shade(colors.get(str(method), "#333"), rho, ratios)
        ax.plot(rows["tokens"], rows["gap"], ls=styles[(str(kind), str(arm))], marker=".", color=color,
                label=f"{arm} − {rows['reference'].iloc[0]}: {method} ρ={rho:g}, {other} {kind}")
    ax.axhline(0.0, color="0.3", lw=1)
    ax.set_xscale("log")
    count_axis(ax.xaxis)
    ax.set_xlabel(TOKENS_LABEL + " (matched)")
    ax.set_ylabel("loss difference (nats)")
    ax.grid(True, which="major", alpha=0.3)
    if title:
        ax.set_title(title)
    _legend(ax, legend, fontsize="small")
    return ax
