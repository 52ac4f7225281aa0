"""``engine demo``: the whole product on the embedded default grid, in one command.

corpus -> tokenizer -> token shards -> pretrain tiny parents -> prune (depth, width, 2:4) ->
post-train with eval checkpoints -> fit the P2 law per method -> held-out check on the largest
parent -> PDF report -> the planner's recommendation.

Every step is the same library call as its own command (``data corpus build``, ``engine grid
launch``, ``fitting fit``, ``reports build``, ``planner recommend``), and every step skips work
that is already done, so a killed demo resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data.cli import BadInput

EPILOG = """examples:
  engine demo                                  the embedded default (grids/demo.yaml)
  engine demo --grid grids/demo.yaml --procs-per-job 2
  engine demo --fresh                          start over (deletes the demo's work dir)
"""


@dataclass(frozen=True)
class DemoConfig:
    """Data-side knobs of the demo; the grid YAML holds everything about the jobs."""

    grid: Path
    """Grid spec; its ``data.shards`` directory decides where corpus and tokenizer go."""
    max_mb: float = 1.5
    """Megabytes of clean text per domain (pip-only domains: code, books, wiki)."""
    vocab: int = 2048
    """Byte-level BPE vocabulary: tiny parents spend most parameters on embeddings otherwise."""
    seq_len: int = 128
    bootstrap: int = 100
    """Run-bootstrap refits per law card (intervals for the planner and the report)."""
    procs_per_job: int = 1
    recommend: tuple[str, ...] = ("--params", "8B", "--ratio", "0.5")


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, step: Callable[[], object]) -> object:
        print(f"\n==> [{len(self.steps) + 1}] {name}", flush=True)
        t0 = time.perf_counter()
        out = step()
        self.steps[name] = time.perf_counter() - t0
        print(f"    {name}: {self.steps[name]:.1f} s", flush=True)
        return out


def _call(main: Callable[[Sequence[str]], int], prog: str, argv: list[str]) -> None:
    """Run a command's ``main`` in-process under the CLI contract; stop the demo if it fails."""
    from data.cli import run_cli

    print(f"    $ {prog} {' '.join(argv)}", flush=True)
    code = run_cli(prog, main, argv)
    if code:
        raise RuntimeError(f"'{prog} {argv[0]}' exited with {code}")


def _data_steps(cfg: DemoConfig, shards: Path, t: Timings) -> None:
    from data.__main__ import main as data_main

    work = shards.parent
    corpus, tok = work / "corpus", work / "tokenizer"
    if not (corpus / "manifest.json").is_file():
        t.run("corpus (pip-only: code, books, wiki)", lambda: _call(
            data_main, "data", ["corpus", "build", "--out", str(corpus), "--max-mb", str(cfg.max_mb)]))
    if not (tok / "tokenizer.json").is_file():
        t.run(f"tokenizer (byte-level BPE, {cfg.vocab})", lambda: _call(
            data_main, "data", ["tokenizer", "train", "--corpus", str(corpus), "--vocab", str(cfg.vocab),
                                "--out", str(tok)]))
    if not (shards / "manifest.json").is_file():
        t.run("token shards", lambda: _call(
            data_main, "data", ["prepare", "--corpus", str(corpus), "--tokenizer", str(tok),
                                "--seq-len", str(cfg.seq_len), "--out", str(shards)]))


def _grid_step(cfg: DemoConfig, runs: Path, t: Timings) -> None:
    from engine.__main__ import main as engine_main

    def launch() -> None:
        try:
            _call(engine_main, "engine", ["grid", "launch", str(cfg.grid), "--runs", str(runs),
                                          "--procs-per-job", str(cfg.procs_per_job)])
        except RuntimeError as exc:
            # Failed jobs keep their reason in run.json; the fits use the runs that finished.
            print(f"    warning: {exc}; see 'engine grid status {cfg.grid} --runs {runs}'", flush=True)

    t.run("grid: pretrain parents, prune, post-train", launch)


def _fit_steps(cfg: DemoConfig, runs: Path, cards: Path, methods: list[str], t: Timings) -> list[Path]:
    from fitting.__main__ import main as fitting_main

    written = []
    for method in methods:
        card = cards / f"p2_tiny_{method.replace(':', '-')}.json"
        t.run(f"fit P2 ({method}), {cfg.bootstrap} run-bootstrap refits", lambda: _call(
            fitting_main, "fitting", ["fit", str(runs), "--law", "p2", "--method", method,
                                      "--bootstrap", str(cfg.bootstrap), "--out", str(card)]))
        t.run(f"held-out check ({method}): fit smaller parents, predict the largest", lambda: _call(
            fitting_main, "fitting", ["validate", str(runs), "--law", "p2", "--method", method, "--by", "size"]))
        written.append(card)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine demo", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, default=Path("grids/demo.yaml"), help="grid spec (default %(default)s)")
    parser.add_argument("--procs-per-job", type=int, default=1, help="processes per deepspeed launch (default 1)")
    parser.add_argument("--bootstrap", type=int, default=100, help="run-bootstrap refits per card (default 100)")
    parser.add_argument("--fresh", action="store_true", help="delete the demo's work directory first")
    args = parser.parse_args(argv)
    if not args.grid.is_file():
        raise BadInput(f"grid spec {str(args.grid)!r} not found; run from the repository root or pass --grid")
    cfg = DemoConfig(args.grid, bootstrap=args.bootstrap, procs_per_job=args.procs_per_job)
    return run_demo(cfg, fresh=args.fresh)


def run_demo(cfg: DemoConfig, *, fresh: bool = False) -> int:
    """Run every step of the demo; returns 0 when all of them succeed."""
    import shutil

    from engine.grid.spec import load_grid

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    grid = load_grid(cfg.grid)
    shards = Path(grid.spec.data["shards"]).resolve()
    work = shards.parent
    if fresh and work.exists():
        shutil.rmtree(work)
    runs, cards = work / "runs", work / "cards"
    t0, t = time.perf_counter(), Timings()
    _data_steps(cfg, shards, t)
    _grid_step(cfg, runs, t)
    card_paths = _fit_steps(cfg, runs, cards, list(grid.spec.methods), t)
    report = work / "report.pdf"
    from reports.__main__ import main as reports_main
    from planner.__main__ import main as planner_main

    laws = [arg for card in card_paths for arg in ("--law", str(card))]
    t.run("PDF report", lambda: _call(reports_main, "reports", ["build", str(runs), *laws, "--out", str(report)]))
    default = next((c for c in card_paths if "width" in c.name), card_paths[0])
    t.run("planner recommendation", lambda: _call(
        planner_main, "planner", ["recommend", *cfg.recommend, "--method", _method_of(default), "--law", str(default)]))
    _summary(work, runs, card_paths, report, t, time.perf_counter() - t0)
    return 0


def _method_of(card: Path) -> str:
    return json.loads(card.read_text())["data"]["method"]


def _summary(work: Path, runs: Path, cards: list[Path], report: Path, t: Timings, total: float) -> None:
    from data.runs import RunStore

    store = RunStore(runs)
    statuses = [store.status(r) for r in store.run_ids()]
    print("\n" + "=" * 72)
    print(f"demo finished in {total / 60:.1f} min; work directory: {work}")
    print(f"  runs:   {len(statuses)} in {runs} ({statuses.count('done')} done, {statuses.count('failed')} failed)")
    for card in cards:
        body = json.loads(card.read_text())
        metrics = body.get("metrics", {})
        print(f"  card:   {card}  (rmse {metrics.get('rmse', float('nan')):.4f}, "
              f"mape {metrics.get('mape', float('nan')):.2f}%)")
    print(f"  report: {report}")
    slowest = sorted(t.steps.items(), key=lambda kv: -kv[1])[:3]
    print("  slowest steps: " + ", ".join(f"{name} {sec:.0f} s" for name, sec in slowest))
    print("=" * 72)
