"""One module per ``fitting`` subcommand: thin adapters over library functions."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from data.cli import BadInput

if TYPE_CHECKING:  # pragma: no cover
    from fitting.table import FitData


class Parser(argparse.ArgumentParser):
    """argparse that raises ``BadInput`` (exit 2, one line) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(message)


def input_parser(prog: str, doc: str, epilog: str, law_help: str) -> Parser:
    """A subcommand parser with what every fitting command reads: the input, the law, the
    method, and how to fit (weighting, Huber delta, residual space)."""
    p = Parser(prog=prog, description=doc.splitlines()[0], epilog=epilog,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="run-store directory or .csv/.parquet table")
    p.add_argument("--law", required=True, help=f"{law_help}: {', '.join(law_names())}")
    p.add_argument("--method", help="pruning method (required if the store mixes methods)")
    p.add_argument("--family", help="model family of a run store to fit (llama3, qwen2.5, ...)")
    p.add_argument("--objective", help="post-training objective of a run store's runs (kd, lm; "
                   "required if the runs mix them)")
    p.add_argument("--allow-unordered", action="store_true",
                   help="fit parents whose pretrained loss does not fall with size (a warning, not a refusal)")
    p.add_argument("--after-warmup", action="store_true",
                   help="leave out each run's points inside its learning-rate warm-up (the pilot fit's rule; "
                        "recorded in the card)")
    p.add_argument("--weighting", choices=("point", "run"), default="point",
                   help="'run' gives each run the same total weight (default point)")
    p.add_argument("--huber-delta", type=float, default=1e-3,
                   help="Huber threshold on the residual (default 1e-3)")
    p.add_argument("--space", choices=("log", "linear"), default="log",
                   help="residuals in log loss (default) or in the loss itself")
    return p


def law_names() -> list[str]:
    from fitting.laws import LAWS

    return list(LAWS)


def warn(lines: tuple[str, ...] | list[str]) -> None:
    """Notes go to stderr, so ``--json`` keeps stdout to one document."""
    for line in lines:
        print(f"note: {line}", file=sys.stderr)


def load_input(args: argparse.Namespace, law) -> "FitData":
    """The fit input the shared parser's flags describe (path, method, family, ordering check);
    every fitting command reads its data through this one call, so no flag is ignored."""
    from fitting.table import load_data

    return load_data(args.path, law, method=args.method, family=args.family,
                     allow_unordered=args.allow_unordered, objective=args.objective,
                     after_warmup=args.after_warmup)
