"""``reports build RUNS --law CARD --out report.pdf``: a thin adapter over ``build_report``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from data.cli import BadInput

EPILOG = """examples:
  reports build runs/ --out report.pdf
      curves only (no law card): the title page says so
  reports build runs/ --law cards/p2_depth.json --law cards/p2_width.json --out report.pdf
      one set of law pages (parameters, residuals, held-out, D*) per card
  reports build docs/reference_runs --law planner/cards/p2_llama3_depth.json \\
      --evidence docs/reference_runs/closed_loop.json --out reference.pdf
      adds the closed-loop pages (the tables docs/FINDINGS.md prints)
  reports build runs/ --law card.json --no-heldout --panels 6 --out quick.pdf --force
      skip the held-out refits, six panels per page; replace an existing quick.pdf

Pages: title (version, commit, runs, card hashes, criterion); loss vs tokens per parent, method
and init with the fitted law and its bootstrap band; loss after pruning and after post-training
vs ratio; per card: parameter table, residuals, held-out extrapolation, D* per ratio; per-domain
curves; pruned vs random init and kd/recon vs lm at matched tokens (where the store has them)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises BadInput (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="reports build", description=__doc__.splitlines()[0], epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", help="run-store directory (runs/<run_id>/run.json + curve.parquet)")
    p.add_argument("--law", action="append", default=[], metavar="CARD.json",
                   help="law card written by 'fitting fit' (repeatable); none: curves only")
    p.add_argument("--out", required=True, help="PDF file to write (must end in .pdf)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--status", action="append", default=None, metavar="S",
                   help="statuses of the runs to draw (repeatable; default done and running)")
    p.add_argument("--panels", type=int, default=4, help="panels per page: 1, 2, 4 or 6 (default 4)")
    p.add_argument("--evidence", metavar="closed_loop.json", default=None,
                   help="closed-loop evidence of scripts/reference_evidence.py: adds its tables")
    p.add_argument("--recon", metavar="results.jsonl", default=None,
                   help="reconstruction results of benchmarks/recon_quality.py: adds their table")
    p.add_argument("--no-heldout", action="store_true",
                   help="skip the held-out extrapolation pages (three refits per card)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from reports.build import ReportConfig, build_report

    config = ReportConfig(runs=Path(args.runs), out=Path(args.out), cards=tuple(map(Path, args.law)),
                          statuses=tuple(args.status or ("done", "running")),
                          panels_per_page=args.panels, heldout=not args.no_heldout, force=args.force,
                          evidence=Path(args.evidence) if args.evidence else None,
                          recon=Path(args.recon) if args.recon else None)
    summary = build_report(config)
    print(f"wrote {summary.out} ({len(summary.pages)} pages, {summary.seconds:.1f} s)")
    for note in summary.notes:
        print(f"note: {note}")
    return 0
