"""The demo workflow: the whole product on one grid, as library calls with typed results.

corpus -> tokenizer -> token shards -> pretrain tiny parents -> prune (depth, width, 2:4) ->
post-train with eval checkpoints -> fit the P2 law per method -> held-out check on the largest
parent -> PDF report -> the planner's recommendation.

Each step is the library function its own command wraps (``data.corpus.build_corpus``,
``engine.grid.local.launch``, ``fitting.fit.fit``, ``reports.build.build_report``,
``planner.recommend.recommend``) and returns what it made, and every step skips work that is
already done, so a killed demo resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from data.cli import BadInput

T = TypeVar("T")
MAX_BOOTSTRAP = 10_000
"""Most run-bootstrap refits per card: each is a full refit (minutes at 10k on two cores)."""


@dataclass(frozen=True)
class DemoConfig:
    """Data-side knobs of the demo; the grid YAML holds everything about the jobs."""

    grid: Path
    """Grid spec; its ``data.shards`` directory decides where corpus and tokenizer go."""
    max_mb: float = 1.5
    """Megabytes of clean text per domain (pip-only domains: code, books, wiki)."""
    vocab: int = 512
    """Byte-level BPE vocabulary: the reference presets (ref-llama-*) are sized for 512."""
    seq_len: int = 128
    bootstrap: int = 100
    """Run-bootstrap refits per law card (intervals for the planner and the report)."""
    procs_per_job: int = 1
    params: str | None = None
    """The planner question at the end: a parent of this size (default: the grid's largest
    parent, inside the card's range, with its measured L0; an 8B question is 10^5x outside a
    card fitted on these parents and is what ``--pilot`` is for)..."""
    ratio: float = 0.5
    """...pruned by this ratio."""

    def __post_init__(self) -> None:
        if not Path(self.grid).is_file():
            raise BadInput(f"grid spec {str(self.grid)!r} not found; run from the repository root or pass --grid")
        if not 0 <= self.bootstrap <= MAX_BOOTSTRAP:
            raise BadInput(f"--bootstrap {self.bootstrap} must be between 0 and {MAX_BOOTSTRAP}")
        if not 1 <= self.procs_per_job <= 1024:
            raise BadInput(f"--procs-per-job {self.procs_per_job} must be between 1 and 1024")
        if not (self.max_mb > 0 and math.isfinite(self.max_mb)):
            raise BadInput(f"max_mb {self.max_mb} must be a positive finite number")


@dataclass
class Timings:
    """Seconds per step, printed as the demo goes."""

    steps: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, step: Callable[[], T]) -> T:
        print(f"\n==> [{len(self.steps) + 1}] {name}", flush=True)
        t0 = time.perf_counter()
        out = step()
        self.steps[name] = time.perf_counter() - t0
        print(f"    {name}: {self.steps[name]:.1f} s", flush=True)
        return out


@dataclass
class DemoResult:
    """What the demo made: paths, the grid's outcome, the cards and the recommendation."""

    work: Path
    runs: Path
    report: Path | None = None
    cards: list[Path] = field(default_factory=list)
    launch: Any = None
    """``engine.grid.executor.Submission`` of the grid step (``engine.grid.local.launch``)."""
    recommendation: Any = None
    """``planner.recommend.Recommendation`` for ``params`` at ``ratio``."""
    timings: Timings = field(default_factory=Timings)
    seconds: float = 0.0


def data_steps(cfg: DemoConfig, shards: Path, t: Timings) -> None:
    """Corpus, tokenizer and shards next to ``shards`` (each skipped when already there)."""
    from data.corpus import build_corpus
    from data.prepare import prepare
    from data.tokenizers import train_bpe

    work = shards.parent
    corpus, tok = work / "corpus", work / "tokenizer"
    if not (corpus / "manifest.json").is_file():
        t.run("corpus (pip-only: code, books, wiki)",
              lambda: build_corpus(corpus, max_mb=cfg.max_mb, debian=False, overwrite=True))
    if not (tok / "tokenizer.json").is_file():
        t.run(f"tokenizer (byte-level BPE, {cfg.vocab})", lambda: train_bpe(corpus, cfg.vocab, tok))
    if not (shards / "manifest.json").is_file():
        t.run("token shards", lambda: prepare(corpus, tok, cfg.seq_len, shards, overwrite=True))


def grid_step(cfg: DemoConfig, grid: Any, runs: Path, t: Timings) -> Any:
    """Launch the grid (parents, then prune + post-train), saying how far it got and the time
    left (``engine.grid.progress``); failed jobs do not stop the demo."""
    from engine.grid.local import launch
    from engine.grid.lock import grid_lock

    def echo(line: str) -> None:  # flushed: in a log the grid's minutes must not look silent
        print(f"    {line}", flush=True)

    def step():
        with grid_lock(runs, grid.name):
            result = launch(grid, runs, procs=cfg.procs_per_job, echo=echo)
        if not result.ok:  # failed jobs keep their reason in run.json; the fits use the rest
            print(f"    warning: {sum(s != 'done' for s in result.statuses.values())} job(s) not done; "
                  f"see 'engine grid status {cfg.grid} --runs {runs}'", flush=True)
        return result

    return t.run("grid: pretrain parents, prune, post-train", step)


def fit_steps(cfg: DemoConfig, runs: Path, cards: Path, methods: list[str], t: Timings) -> list[Path]:
    """One P2 card per method, and the held-out check on the largest parent."""
    from fitting.card import save_card
    from fitting.fit import FitConfig, fit
    from fitting.table import load_data
    from fitting.validate import render_table, validate

    written = []
    for method in methods:
        card_path = cards / f"p2_demo_{method.replace(':', '-')}.json"
        data = load_data(runs, "p2", method=method)
        card = t.run(f"fit P2 ({method}), {cfg.bootstrap} run-bootstrap refits",
                     lambda: fit(data, FitConfig(n_bootstrap=cfg.bootstrap)))
        save_card(card, card_path, force=True)  # the demo's own output: replaced on a rerun
        print(card.summary())
        checks = t.run(f"held-out check ({method}): fit smaller parents, predict the largest",
                       lambda: validate(data, "size"))
        print(render_table(checks))
        written.append(card_path)
    return written


def report_step(runs: Path, cards: list[Path], report: Path, t: Timings) -> Path:
    from reports.build import ReportConfig, build_report

    summary = t.run("PDF report", lambda: build_report(
        ReportConfig(runs=runs, out=report, cards=tuple(cards), force=True)))
    for note in summary.notes:
        print(f"    note: {note}")
    return summary.out


def plan_step(cfg: DemoConfig, card_path: Path, runs: Path, t: Timings) -> Any:
    """The planner's answer from the demo's own card: for ``cfg.params``, or by default for the
    largest parent the grid trained, with the L0 it measured (an in-range question)."""
    from data.runs import load
    from planner.cards import load_card
    from planner.cli.recommend import render
    from data.compute import DEFAULT_GPU, DEFAULT_MFU, get_gpu
    from planner.query import parse_method, parse_parent
    from planner.recommend import recommend
    from fitting.criteria import DEFAULT_CRITERION

    card = load_card(card_path, law="p2")
    method = parse_method(card.method)
    loss_before = None
    params = cfg.params
    if params is None:
        frame = load(runs)
        largest = frame.loc[frame["params_before"] == frame["params_before"].max()]
        params, loss_before = str(int(largest["params_before"].iloc[0])), float(largest["loss_before"].iloc[0])
    print(f"    question: a {params}-parameter parent pruned by {method} at ratio {cfg.ratio}"
          + (f" (L0 = {loss_before:.4f}, measured by the grid)" if loss_before is not None else ""))
    result = t.run("planner recommendation", lambda: recommend(
        parse_parent(params, card.family if cfg.params is None else None), method, cfg.ratio, card,
        f"the demo's card {card_path}",
        criterion=DEFAULT_CRITERION, gpu=get_gpu(DEFAULT_GPU), mfu=DEFAULT_MFU, price=None,
        loss_before=loss_before))
    print(render(result))
    print("    at your own scale: planner recommend --params 8B --ratio 0.5   (the verdict, published practice "
          "and the pilot run that grounds it)")
    return result


def run_demo(cfg: DemoConfig, *, fresh: bool = False) -> DemoResult:
    """Run every step of the demo; returns what it made."""
    import shutil

    from engine.grid.spec import check_shards, load_grid, validate

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    grid = load_grid(cfg.grid)
    shards = Path(grid.spec.data["shards"]).resolve()
    work = shards.parent
    if fresh and work.exists():
        shutil.rmtree(work)
    out = DemoResult(work=work, runs=work / "runs")
    t0, t = time.perf_counter(), out.timings
    data_steps(cfg, shards, t)
    check_shards(grid)
    validate(grid, out.runs, cfg.procs_per_job)
    out.launch = grid_step(cfg, grid, out.runs, t)
    out.cards = fit_steps(cfg, out.runs, work / "cards", list(grid.spec.methods), t)
    out.report = report_step(out.runs, out.cards, work / "report.pdf", t)
    # depth: the demo's best-fitting card (width's loss jumps at 0.5 when the hidden size shrinks)
    default = next((c for c in out.cards if "depth" in c.name), out.cards[0])
    out.recommendation = plan_step(cfg, default, out.runs, t)
    out.seconds = time.perf_counter() - t0
    print(summary(out))
    return out


def planner_line(rec: Any) -> list[str]:
    """The planner's D* in the closing block: the number the report's title page prints for the
    same card, parent and ratio (both use the planner's default criterion)."""
    from data.units import format_count

    if rec is None or rec.tokens is None:
        return []
    t = rec.tokens
    span = "" if t.low is None else f" [{format_count(t.low)}, {format_count(t.high)}]"
    return [f"  plan:   D* = {format_count(t.value)}{span} tokens for {rec.parent.describe()}, {rec.method} at "
            f"ratio {rec.ratio:g} ({rec.criterion.describe().split(' (')[0]}; as on the report's title page)"]


def summary(result: DemoResult) -> str:
    """The closing block: where everything is, card quality, the slowest steps."""
    import json

    from data.runs import RunStore

    store = RunStore(result.runs)
    statuses = [store.status(r) for r in store.run_ids()]
    lines = ["", "=" * 72, f"demo finished in {result.seconds / 60:.1f} min; work directory: {result.work}",
             f"  runs:   {len(statuses)} in {result.runs} ({statuses.count('done')} done, "
             f"{statuses.count('failed')} failed)"]
    for card in result.cards:
        metrics = json.loads(card.read_text()).get("metrics", {})
        lines.append(f"  card:   {card}  (rmse {metrics.get('rmse') or float('nan'):.4f}, "
                     f"mape {metrics.get('mape') or float('nan'):.2f}%)")
    lines.append(f"  report: {result.report}")
    lines += planner_line(result.recommendation)
    slowest = sorted(result.timings.steps.items(), key=lambda kv: -kv[1])[:3]
    lines += ["  slowest steps: " + ", ".join(f"{name} {sec:.0f} s" for name, sec in slowest), "=" * 72]
    return "\n".join(lines)
