"""Lay out the PDF report: pages of plots from :mod:`reports.plots`, nothing drawn here.

``build_report(ReportConfig(runs=..., cards=(...), out=...))`` reads the run store with
:func:`data.runs.load`, opens every law card with fitting's loader, and writes one vector PDF
(matplotlib ``PdfPages``). A section whose inputs are absent becomes a one-line note on a page
of its own (or on the title page when the store simply has no such runs), never a crash.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from data.cli import BadInput
from data.units import format_count
from reports import laws, plots, tables

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    from fitting.card import LawCard

PAGE_SIZE = (11.69, 8.27)
"""A4 landscape, inches."""
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7.5,
      "xtick.labelsize": 8, "ytick.labelsize": 8, "pdf.fonttype": 42, "figure.dpi": 100}
"""Readable on paper; TrueType fonts (``pdf.fonttype`` 42) keep the text searchable."""
NEEDED = ("run_id", "parent", "method", "ratio", "params_before", "loss_before", "init",
          "tokens", "eval_loss")
"""Columns every page needs; a store without them is refused up front."""
HELDOUT_SPLITS = ("tokens", "size", "ratio")
NO_PRUNING = "none"
"""The method of a parent's pretraining run (engine.train.config.NO_PRUNING; reports cannot import
the engine)."""
HEADLINE_RATIOS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class ReportConfig:
    """What to build. Every knob is here with its default."""

    runs: Path
    """Run-store directory (or one run directory)."""
    out: Path
    """PDF to write (written to a temporary file, then renamed)."""
    cards: tuple[Path, ...] = ()
    """Law cards (``--law``); none: curves only, and the title page says so."""
    statuses: tuple[str, ...] = ("done", "running")
    """Runs drawn on the pages; failed runs are counted on the title page, not drawn."""
    panels_per_page: int = 4
    heldout: bool = True
    """Refit each card's law on fitting's held-out splits (three refits per card)."""
    force: bool = False
    """Replace an existing ``out`` (``--force``); otherwise an existing file is refused."""
    evidence: Path | None = None
    """Closed-loop evidence (``closed_loop.json`` of scripts/reference_evidence.py, ``--evidence``):
    its pre-rendered tables become the closed-loop pages, the same cells docs/FINDINGS.md prints."""
    recon: Path | None = None
    """Reconstruction results (JSON lines of ``benchmarks/recon_quality.py``, ``--recon``): a page
    with the eval loss after pruning and after reconstruction per granularity and calibration size."""

    def __post_init__(self) -> None:
        from data.cli import check_output_file

        if self.panels_per_page not in (1, 2, 4, 6):
            raise BadInput(f"panels per page {self.panels_per_page!r}; allowed: 1, 2, 4, 6")
        check_output_file(self.out, force=self.force, suffix=".pdf")


@dataclass
class Context:
    """What the pages share: the frames, the cards, the colours, the running page list."""

    config: ReportConfig
    frame: pd.DataFrame
    """Every row of the store (title page counts)."""
    shown: pd.DataFrame
    """Rows of the runs drawn (status in ``config.statuses``)."""
    cards: list[LawCard]
    here: dict[str, bool]
    """Per card (by its sha256): fitted on this store's runs (``laws.check_against_store``)."""
    colors: dict[str, str]
    pages: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ReportSummary:
    """What was written: the file, its page headings, and the notes shown in it."""

    out: Path
    pages: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float


def load_runs(config: ReportConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All rows and the drawn rows; ``BadInput`` for an empty store or missing columns."""
    from data.runs import load

    frame = load(config.runs)
    if frame.empty:
        raise BadInput(f"run store {str(config.runs)!r} holds runs but no curve points")
    missing = tables.missing_columns(frame, NEEDED)
    if missing:
        raise BadInput(f"run store {str(config.runs)!r}: runs lack column(s) {missing} that every "
                       f"report page needs (run.json meta / curve.parquet)")
    shown = frame.loc[frame["status"].isin(config.statuses)]
    if shown.empty:
        raise BadInput(f"run store {str(config.runs)!r} has no runs with status in "
                       f"{list(config.statuses)} (found: {sorted(frame['status'].dropna().unique())})")
    return frame, shown


def build_report(config: ReportConfig) -> ReportSummary:
    """Write the report; returns its page headings and notes."""
    start = time.perf_counter()
    frame, shown = load_runs(config)
    cards = laws.open_cards([str(p) for p in config.cards])
    here = laws.check_against_store(cards, config.runs, shown)
    ctx = Context(config, frame, shown, cards, here, plots.method_colors(shown["method"].dropna().unique()))
    import matplotlib

    from data.runs import write_bytes_atomic
    with matplotlib.rc_context(RC):
        payload = _render(ctx)
    write_bytes_atomic(Path(config.out), payload)
    return ReportSummary(Path(config.out), tuple(ctx.pages), tuple(ctx.absent),
                         time.perf_counter() - start)


def _render(ctx: Context) -> bytes:
    """Every section in order into an in-memory PDF (a failure never leaves half a file)."""
    import io

    from matplotlib.backends.backend_pdf import PdfPages

    sections: list[Callable[[Context, PdfPages], None]] = [
        title_page, curve_pages, parent_pages, ratio_pages, card_pages, evidence_pages, recon_pages, domain_pages,
        comparison_pages]
    _plan_absent(ctx)
    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"Title": "prunelaw report", "Creator": "prunelaw reports"}) as pdf:
        for section in sections:
            section(ctx, pdf)
    return buffer.getvalue()


# -- page helpers ---------------------------------------------------------------------------


def _figure(title: str, n: int) -> tuple["Figure", list[Any]]:
    """A4 landscape page with ``n`` panels (1, 2, 2x2 or 2x3) and a heading."""
    import matplotlib.pyplot as plt

    shape = {1: (1, 1), 2: (1, 2), 3: (2, 2), 4: (2, 2), 5: (2, 3), 6: (2, 3)}[max(1, min(n, 6))]
    fig, axes = plt.subplots(*shape, figsize=PAGE_SIZE, layout="constrained", squeeze=False)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(ctx: Context, pdf: "PdfPages", fig: "Figure", title: str) -> None:
    import matplotlib.pyplot as plt

    pdf.savefig(fig)
    plt.close(fig)
    ctx.pages.append(title)


def _note_page(ctx: Context, pdf: "PdfPages", title: str, lines: list[str]) -> None:
    """A section that could not be drawn: its heading and why, visible in the report."""
    fig, _ = _figure(title, 0)
    fig.text(0.06, 0.85, "\n".join(lines), va="top", ha="left", fontsize=11, wrap=True)
    _save(ctx, pdf, fig, title)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _parents(frame: pd.DataFrame) -> list[str]:
    """Parents ordered by size (smallest first), the order every page uses."""
    sizes = frame.groupby("parent")["params_before"].max().sort_values(kind="stable")
    return [str(p) for p in sizes.index]


def _pruned(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[frame["init"] == "pruned"]


def _is_parent_run(frame: pd.DataFrame) -> pd.Series:
    """Rows of the parents' own pretraining (no pruning method): drawn on a page of their own."""
    return frame["method"].astype(str) == NO_PRUNING


# -- title ----------------------------------------------------------------------------------


def provenance() -> dict[str, str]:
    """Project version, git commit of the checkout (``+dirty`` with local changes), UTC date."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("prunelaw")
    except PackageNotFoundError:
        ver = "unknown (not installed)"
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown (not a git checkout)"
    return {"version": ver, "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _plan_absent(ctx: Context) -> None:
    """Sections the store has no data for, listed on the title page instead of blank pages."""
    shown = ctx.shown
    if not tables.domain_columns(shown):
        ctx.absent.append("per-domain curves: no eval_loss.<domain> columns in the store")
    if not (shown["init"] == "random").any():
        ctx.absent.append("pruned vs random init: the store has no random-init runs")
    if shown["objective"].dropna().nunique() < 2:
        ctx.absent.append("objective comparison (lm/kd/recon): only one objective in the store")
    if tables.pruning_points(_pruned(shown)).empty:
        ctx.absent.append("loss right after pruning: no tokens == 0 evaluations")


def title_page(ctx: Context, pdf: "PdfPages") -> None:
    """Provenance: version, commit, date, the runs counted, every card with hash and criterion."""
    fig, _ = _figure("prunelaw report: pruned post-training", 0)
    meta = provenance()
    counts = tables.run_counts(ctx.frame)
    status = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("runs", "points"))
    lines = [f"prunelaw {meta['version']}   commit {meta['commit']}   built {meta['date']}",
             f"run store: {ctx.config.runs}",
             f"runs counted: {counts['runs']} ({status}); {counts['points']} evaluation points; "
             f"drawn: runs with status {', '.join(ctx.config.statuses)}",
             *_wrapped("parents: ", [f"{p} (N0 = {format_count(n)})" for p, n in _parent_sizes(ctx.shown)]),
             f"methods: {', '.join(sorted(ctx.shown['method'].dropna().astype(str).unique()))}", ""]
    lines += _card_lines(ctx) + [""] + _headlines(ctx)
    if ctx.absent:
        lines += ["Not in this store (sections left out):"] + [f"  - {a}" for a in ctx.absent]
    fig.text(0.05, 0.88, "\n".join(lines), va="top", ha="left", fontsize=10, linespacing=1.6)
    _save(ctx, pdf, fig, "title")


def _fill(text: str, width: int) -> str:
    """``text`` broken into lines of at most ``width`` characters (panel titles side by side)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _wrapped(head: str, items: list[str], width: int = 150, sep: str = ",") -> list[str]:
    """``head`` + ``sep``-separated ``items`` over as many lines as the page width needs."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else "")
        if len(line) + len(piece) > width and line.strip():
            lines.append(line.rstrip())
            line = " " * len(head)
        line += piece + " "
    return lines + [line.rstrip()]


def headline_dstar(card: LawCard, rows: pd.DataFrame) -> tuple[str, float, pd.DataFrame]:
    """The title page's D*: the largest parent the card describes, at :data:`HEADLINE_RATIOS`,
    by ``planner recommend``'s default criterion (the same numbers it prints for that N0)."""
    name, n0 = _parent_sizes(rows)[-1]
    return name, n0, laws.dstar_table(card, {name: n0}, np.array(HEADLINE_RATIOS))


def _headlines(ctx: Context) -> list[str]:
    """The numbers a reader asks first: D* per card at the largest parent, and the arm gaps."""
    out = []
    for i, card in enumerate(ctx.cards, 1):
        rows = laws.card_rows(ctx.shown, card)
        if not card.law.plans_budgets or rows.empty:
            continue
        name, n0, table = headline_dstar(card, rows)
        spans = [f"ρ={r.ratio:g}: {format_count(r.dstar)}" + (f" [{format_count(r.lo)}, {format_count(r.hi)}]"
                                                              if np.isfinite(r.lo) else "")
                 for r in table.itertuples()]
        out += _wrapped(f"  [{i}] D* for {name} (N0 = {format_count(n0)}; {laws.DSTAR_CRITERION}): ", spans, sep=";")
        out.append(f"       the planner's answer for one of them: planner recommend --law {card.path} "
                   f"--params {int(n0)} --ratio {HEADLINE_RATIOS[1]:g}")
    for column, reference in (("init", "pruned"), ("objective", "lm")):
        if ctx.shown[column].dropna().nunique() < 2:
            continue
        summary = tables.comparison_summary(tables.matched_comparison(ctx.shown, column, reference))
        for (method, setting, arm), rows in summary.groupby(["method", "setting", "arm"]):
            out.append(f"  {arm} − {reference}, {method} ({setting}): mean loss gap {rows['gap'].mean():+.4f} "
                       f"nats at {format_count(rows['tokens'].median())} tokens over {int(rows['cells'].sum())} cells")
    return (["Headline numbers:"] + out + [""]) if out else []


def _parent_sizes(frame: pd.DataFrame) -> list[tuple[str, float]]:
    sizes = frame.groupby("parent")["params_before"].max().sort_values(kind="stable")
    return [(str(p), float(n)) for p, n in sizes.items()]


def _card_lines(ctx: Context) -> list[str]:
    if not ctx.cards:
        return ["No law card given (--law): curves only. No fitted law, bands, residuals, "
                "held-out extrapolation, parameter table or D* in this report.",
                "Fit one with: fitting fit RUNS --law p2 --method M --bootstrap 200 --out card.json"]
    out = [f"Law cards ({len(ctx.cards)}):"]
    for i, card in enumerate(ctx.cards, 1):
        fit = card.fit
        out += [f"  [{i}] {card.path}   law {card.law.name}: {card.law.formula}",
                f"       sha256 {card.sha256[:16]}…  data {(card.data.content_hash or '?')[:23]}…  "
                f"created {card.created}",
                f"       criterion: {fit.get('loss', '?')} (delta {fit.get('delta', '?')}) on "
                f"{fit.get('residuals', 'log loss')}, "
                f"{fit.get('weighting', 'point')} weights, {fit.get('n_points', '?')} points / "
                f"{fit.get('n_runs', '?')} runs, {fit.get('n_bootstrap', 0)} run-bootstrap refits"
                + ("" if card.bootstrap_params is None or len(card.bootstrap_params) else
                   ", none varies: no interval"),
                "       " + ("fitted on this store's runs (fitting reads them to the card's data hash)" if ctx.here.get(str(card.sha256))
                             else f"NOT fitted on this store: fitted on {card.data.source!r} (another data "
                                  "hash); its curves are drawn as a reference law, not as the fit")]
    return out


# -- curves and ratio -----------------------------------------------------------------------


def _label(ctx: Context, card: LawCard) -> str:
    return laws.label(card, ctx.here.get(str(card.sha256)))


def _card_for(ctx: Context, method: str, init: str, rows: pd.DataFrame) -> LawCard | None:
    """The first card that describes these runs (``method``, ``init``, family): drawn over them."""
    for card in ctx.cards:
        if card.law.store_init == init and (not card.methods or method in card.methods) \
                and not laws.card_rows(rows, card).empty:
            return card
    return None


def curve_pages(ctx: Context, pdf: "PdfPages") -> None:
    """Loss vs tokens (log-log) per parent, method and init; the matching card's law and band."""
    groups = []
    runs = ctx.shown.loc[~_is_parent_run(ctx.shown)]
    for parent in _parents(runs):
        sub = runs.loc[runs["parent"] == parent]
        for (method, init), rows in sub.groupby(["method", "init"], sort=True):
            groups.append((parent, str(method), str(init), rows))
    fits = {id(card): laws.predictions(ctx.shown, card) for card in ctx.cards}
    for chunk in _chunks(groups, ctx.config.panels_per_page):
        title = "Loss vs post-training tokens (L − L0 where every point is above L0)" + (
            ", the law and its bootstrap band" if ctx.cards else "")
        fig, axes = _figure(title, len(chunk))
        for ax, (parent, method, init, rows) in zip(axes, chunk):
            card = _card_for(ctx, method, init, rows)
            fit = fits[id(card)] if card is not None else None
            label = f"{parent} · {method} · {init} init" + (f"\nlaw: {_label(ctx, card)}" if card else "")
            plots.plot_loss_curves(rows, fit=fit, ax=ax, colors=ctx.colors, title=label, recoverable=True,
                                   law_label=laws.law_label(ctx.here.get(str(card.sha256))) if card else "fitted law")
        _save(ctx, pdf, fig, title)


def parent_pages(ctx: Context, pdf: "PdfPages") -> None:
    """The parents' own pretraining curves, all parents on one panel (they have no L0 and no ratio)."""
    runs = ctx.shown.loc[_is_parent_run(ctx.shown)]
    if runs.empty:
        return
    title = "Parents' pretraining: loss vs tokens"
    fig, (ax,) = _figure(title, 1)
    plots.plot_parent_curves(runs, ax=ax, title=f"{runs['run_id'].nunique()} parents, from random init; the "
                                                 "pruned runs start from the end of these curves")
    _save(ctx, pdf, fig, title)


def ratio_pages(ctx: Context, pdf: "PdfPages") -> None:
    """Loss right after pruning and after post-training vs ratio, one panel per parent."""
    pruned = _pruned(ctx.shown)
    title = "Loss after pruning and after post-training vs ratio"
    if pruned.empty:
        _note_page(ctx, pdf, title, ["Skipped: the store has no pruned-init runs."])
        return
    # One objective per panel: averaging lm with kd runs would hide the difference the
    # objective page measures. lm when present, else the most common one.
    objectives = pruned["objective"].fillna("?").astype(str)
    objective = "lm" if (objectives == "lm").any() else objectives.mode().iloc[0]
    pruned = pruned.loc[objectives == objective]
    for chunk in _chunks(_parents(pruned), ctx.config.panels_per_page):
        fig, axes = _figure(title, len(chunk))
        for ax, parent in zip(axes, chunk):
            rows = pruned.loc[pruned["parent"] == parent]
            last = format_count(float(tables.final_points(rows)["tokens"].median()))
            plots.plot_loss_vs_ratio(rows, ax=ax, colors=ctx.colors,
                                     title=f"{parent}, objective {objective} "
                                           f"(last evaluation: median D = {last})")
        _save(ctx, pdf, fig, title)


# -- per card -------------------------------------------------------------------------------


def card_pages(ctx: Context, pdf: "PdfPages") -> None:
    """For each card: parameters, residuals, held-out extrapolation, and the D* page (laws
    with token, size and ratio axes)."""
    for i, card in enumerate(ctx.cards, 1):
        rows = laws.card_rows(ctx.shown, card)
        params_page(ctx, pdf, i, card)
        if rows.empty:
            _note_page(ctx, pdf, f"[{i}] {_label(ctx, card)}: residuals",
                       [f"Skipped: no {card.law.store_init}-init runs of method(s) "
                        f"{', '.join(card.methods) or 'any'} in this store."])
            continue
        residual_page(ctx, pdf, i, card)
        if ctx.config.heldout:
            heldout_page(ctx, pdf, i, card)
        if card.law.plans_budgets:
            dstar_page(ctx, pdf, i, card, rows)


def params_page(ctx: Context, pdf: "PdfPages", i: int, card: LawCard) -> None:
    """Fitted parameters with intervals, the card's metrics and identifiability notes."""
    title = f"[{i}] Fitted parameters: {_label(ctx, card)}"
    fig, (ax,) = _figure(title, 1)
    plots.plot_param_table(laws.param_rows(card), ax=ax, level=card.level,
                           title=f"{card.law.formula}")
    metrics = ", ".join(f"{k} = {v:.4g}" for k, v in card.metrics.items() if v is not None)
    reasons = card.identifiability_notes()
    text = [f"fit metrics: {metrics}", "range: " + "; ".join(
        f"{a} {_fmt_axis(v['min'])}–{_fmt_axis(v['max'])}" for a, v in card.range.items())]
    text += [f"identifiability: {r}" for r in reasons]
    fig.text(0.04, 0.04, "\n".join(text), va="bottom", ha="left", fontsize=9, wrap=True)
    _save(ctx, pdf, fig, title)


def _fmt_axis(value: float) -> str:
    return format_count(value) if abs(value) >= 1e4 else f"{value:.4g}"


def residual_page(ctx: Context, pdf: "PdfPages", i: int, card: LawCard) -> None:
    """Observed minus predicted against tokens and, where the law has one, against ratio."""
    table = laws.residuals(ctx.shown, card)
    xs = laws.residual_columns(card)
    title = f"[{i}] Residuals: {_label(ctx, card)}"
    fig, axes = _figure(title, len(xs))
    rmse = float(np.sqrt(np.mean(table["residual"] ** 2)))
    for ax, x in zip(axes, xs):
        plots.plot_residuals(table, x=x, ax=ax, colors=ctx.colors,
                             title=f"against {x}: {len(table)} points, RMSE {rmse:.4f} nats")
    _save(ctx, pdf, fig, title)


def heldout_page(ctx: Context, pdf: "PdfPages", i: int, card: LawCard) -> None:
    """Fit on smaller parents / lower ratios / early tokens; predict the held-out rest."""
    title = f"[{i}] Held-out extrapolation: {_label(ctx, card)}"
    results, skipped = [], []
    for by in HELDOUT_SPLITS:
        try:
            result = laws.heldout(ctx.shown, card, by, ctx.config.runs)
        except BadInput as exc:
            skipped.append(f"by {by}: {exc}")
            continue
        (results if not result.points.empty else skipped).append(
            result if not result.points.empty else f"by {by}: {result.message or 'nothing held out'}")
    if not results:
        _note_page(ctx, pdf, title, ["Skipped: no split could be held out."] + skipped)
        return
    fig, axes = _figure(title, len(results))
    for ax, res in zip(axes, results):
        m = res.metrics
        plots.plot_heldout(res.points, ax=ax, colors=ctx.colors,
                           title=f"{_fill(f'by {res.by}: {res.split}', 70)}\nRMSE {m['rmse']:.4f}, MAPE {m['mape']:.2f}%, "
                                 f"R² {m['r2']:.3f}" + (f", slope diff {m['slope_diff']:.3g}"
                                                        if np.isfinite(m.get("slope_diff", np.nan)) else ""))
    if skipped:  # supxlabel: constrained layout keeps it clear of the axes labels
        fig.supxlabel("not shown: " + "; ".join(skipped), fontsize=8, x=0.02, ha="left")
    _save(ctx, pdf, fig, title)


def dstar_page(ctx: Context, pdf: "PdfPages", i: int, card: LawCard, rows: pd.DataFrame) -> None:
    """The planner's D* per ratio for each parent the card describes."""
    parents = {f"{p} (N0 = {format_count(n)})": n for p, n in _parent_sizes(rows)}
    table = laws.dstar_table(card, parents)
    title = f"[{i}] Recommended post-training tokens D*: {_label(ctx, card)}"
    fig, (ax,) = _figure(title, 1)
    tokens = card.axis_range(card.law.token_axis)
    plots.plot_dstar(table, ax=ax, title=f"D*: {laws.DSTAR_CRITERION} (band: {card.level:.0%} bootstrap "
                                         f"interval; shaded: extrapolation)",
                     fitted_ratios=card.axis_range(card.law.ratio_axis),
                     observed_tokens=None if tokens is None else tokens[1])
    if note := laws.ratio_free_note(table):
        fig.supxlabel(note, fontsize=7, x=0.02, ha="left", wrap=True)
    _save(ctx, pdf, fig, title)


# -- closed loop ----------------------------------------------------------------------------


def read_evidence(path: Path) -> dict[str, Any]:
    """The ``closed_loop`` block of an evidence file, checked for the rendered cells it needs."""
    import json

    try:
        loop = json.loads(Path(path).read_text())["closed_loop"]
        head = loop["head"]
        entries = {k: v for k, v in loop.items() if k != "head"}
        if not all(isinstance(v["cells"], list) and isinstance(v["summary"], dict) for v in entries.values()):
            raise KeyError("cells")
    except FileNotFoundError:
        raise BadInput(f"--evidence {str(path)!r}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"--evidence {str(path)!r} is not closed-loop evidence with rendered tables "
                       f"(missing {exc}); write it with: python scripts/reference_evidence.py") from None
    return {"head": head, **entries}


def evidence_pages(ctx: Context, pdf: "PdfPages") -> None:
    """The closed loop: fit without the held-out runs, the planner's D* and loss, what they did."""
    if ctx.config.evidence is None:
        return
    loop = read_evidence(ctx.config.evidence)
    head = loop.pop("head")
    for holdout, what in (("size", "the largest parent held out"), ("ratio", "each parent's highest ratio held out")):
        entries = {k: v for k, v in loop.items() if k.endswith(f"/{holdout}")}
        cells = [c for v in entries.values() for c in v["cells"]]
        title = f"Closed loop: {what}"
        if not cells:
            _note_page(ctx, pdf, title, [f"The evidence file holds no {holdout} hold-out rows."])
            continue
        fig, (ax,) = _figure(title, 1)
        lines = [f"{k.rsplit('/', 1)[0]}: {_loop_summary(v['summary'])}" for k, v in entries.items()]
        plots.plot_table(cells, head, ax=ax, widths=[0.06, 0.06, 0.06, 0.08, 0.06, 0.19, 0.2, 0.14, 0.08, 0.06],
                         title=f"From {ctx.config.evidence}: planner D* (default criterion) and the loss at "
                               f"D* (as dL = L - L0) against the run's own curve")
        fig.supxlabel("\n".join(lines), fontsize=8, x=0.02, ha="left")
        _save(ctx, pdf, fig, title)


def read_recon(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a reconstruction results file; BadInput names a bad one."""
    import json

    try:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise BadInput(f"--recon {str(path)!r}: no such file") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"--recon {str(path)!r} is not JSON lines ({exc}); write it with "
                       "benchmarks/recon_quality.py") from None
    if not rows or not all(isinstance(r, dict) and "cell" in r for r in rows):
        raise BadInput(f"--recon {str(path)!r} holds no result lines with a 'cell' "
                       "(benchmarks/recon_quality.py writes them)")
    return rows


def recon_pages(ctx: Context, pdf: "PdfPages") -> None:
    """Local reconstruction: eval loss after pruning, after reconstruction, after PEFT."""
    if ctx.config.recon is None:
        return
    rows = read_recon(ctx.config.recon)
    columns, cells = tables.recon_table(rows)
    dense = next((r["loss"] for r in rows if r.get("cell") == "dense" and "loss" in r), None)
    title = "Local reconstruction after pruning"
    fig, (ax,) = _figure(title, 1)
    rest = (1.0 - 0.27) / max(1, len(columns) - 1)
    plots.plot_table(cells, columns, ax=ax, widths=[0.27] + [rest] * (len(columns) - 1),
                     title=f"From {ctx.config.recon}: held-out eval loss (dense parent "
                           f"{'—' if dense is None else f'{dense:.3f}'}); columns: granularity @ calibration")
    evals = sorted({str(r.get("eval")) for r in rows if r.get("eval")})
    fig.supxlabel(f"eval set {', '.join(evals) or '?'} tokens; every row is one seed. LoRA: the adapter kept "
                  "beside the sparse weights / merged and re-masked. llm-compressor: its one-shot result on the same "
                  "calibration ids, no reconstruction.", fontsize=8, x=0.02, ha="left")
    _save(ctx, pdf, fig, title)


def _loop_summary(s: dict[str, Any]) -> str:
    err = s.get("median_abs_err_dl")
    return (f"{s['runs']} runs, {s['scored']} scored"
            + (f", median |err on L-L0| {err:.0%}" if err is not None else "")
            + f", {s['inside']}/{s['covered_of']} inside the interval, D* beyond the observed tokens "
              f"for {s['beyond_observed']}")


# -- domains and comparisons ----------------------------------------------------------------


def domain_pages(ctx: Context, pdf: "PdfPages") -> None:
    """Per-domain loss curves (pruned init), one page per domain, one panel per parent."""
    pruned = _pruned(ctx.shown)
    for column in tables.domain_columns(pruned):
        domain = column.split(".", 1)[1]
        for chunk in _chunks(_parents(pruned), ctx.config.panels_per_page):
            title = f"Per-domain loss: {domain}"
            fig, axes = _figure(title, len(chunk))
            for ax, parent in zip(axes, chunk):
                rows = pruned.loc[(pruned["parent"] == parent) & pruned[column].notna()]
                plots.plot_domain_curves(rows, column, ax=ax, colors=ctx.colors, title=f"{parent}: {domain}")
            _save(ctx, pdf, fig, title)


def comparison_pages(ctx: Context, pdf: "PdfPages") -> None:
    """Pruned vs random init, and kd/recon vs lm, at matched tokens, where both arms exist."""
    for column, reference, what in (("init", "pruned", "Pruned init vs random init"),
                                    ("objective", "lm", "Post-training objective vs lm")):
        if ctx.shown[column].dropna().nunique() < 2:
            continue
        table = tables.matched_comparison(ctx.shown, column, reference)
        title = f"{what} at matched tokens"
        if table.empty:
            _note_page(ctx, pdf, title, [f"Skipped: no grid cell has both a {reference!r} run and "
                                         f"another {column} (same parent, method, ratio, seed)."])
            continue
        _comparison_page(ctx, pdf, title, table)


def _comparison_page(ctx: Context, pdf: "PdfPages", title: str, table: pd.DataFrame) -> None:
    """Gap curves for up to three parents on top, the summary table across the page below."""
    import matplotlib.pyplot as plt

    paired = [p for p in _parents(ctx.shown) if p in set(table["parent"])]
    parents = paired[:3]
    fig = plt.figure(figsize=PAGE_SIZE, layout="constrained")
    shown = f" (curves: the {len(parents)} smallest of {len(paired)} parents; the table: all)" \
        if len(paired) > len(parents) else ""
    fig.suptitle(title + shown, fontsize=13, fontweight="bold")
    grid = fig.add_gridspec(2, len(parents), height_ratios=(1.6, 1.0))
    for k, parent in enumerate(parents):
        plots.plot_matched_gap(table.loc[table["parent"] == parent], ax=fig.add_subplot(grid[0, k]),
                               colors=ctx.colors, legend="outside" if k == len(parents) - 1 else None,
                               title=f"{parent}: below 0 the arm beats {table['reference'].iloc[0]}")
    # methods down, ratios across: one compact row per method and arm, whatever the grid size
    summary = tables.comparison_summary(table)
    index = ["method", "setting", "arm", "reference"]
    wide = summary.pivot_table(index=index, columns="ratio", values="gap")
    at = summary.groupby(index)["tokens"].median()
    cells = [[m, str(s), f"{a} − {r}", format_count(at[(m, s, a, r)])]
             + [f"{v:+.4f}" if np.isfinite(v) else "—" for v in row]
             for (m, s, a, r), row in wide.iterrows()]
    n = wide.shape[1]
    plots.plot_table(cells, ["method", "with", "arm − reference", "at tokens"] + [f"ρ = {c:g}" for c in wide.columns],
                     ax=fig.add_subplot(grid[1, :]), widths=[0.11, 0.1, 0.15, 0.09] + [0.55 / n] * n,
                     title="Loss gap (nats) at the largest matched budget, mean over parents and seeds, "
                           "each setting of the other axis apart (negative: the arm is better)")
    _save(ctx, pdf, fig, title)
