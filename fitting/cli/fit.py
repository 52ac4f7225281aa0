"""``fitting fit PATH --law p2|chinchilla``: fit, print a summary or the card, write the card."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fitting.cli import Parser, law_names, warn

EPILOG = """examples:
  fitting fit runs/ --law p2 --method depth --bootstrap 200 --out cards/depth.json
  fitting fit chinchilla.csv --law chinchilla --bootstrap 1000 --json > card.json
  fitting fit runs/ --law p2 --method 2:4 --weighting run --slope 0.002

PATH is a run-store directory (P2: pruned-init runs with status done, tokens > 0) or a
.csv/.parquet table whose columns are the law's axis names (p2: params_before, ratio, tokens,
loss_before, eval_loss [, run_id]; chinchilla: N, D, loss)."""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fitting fit", description=__doc__.splitlines()[0], epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="run-store directory or .csv/.parquet table")
    p.add_argument("--law", required=True, help=f"law to fit: {', '.join(law_names())}")
    p.add_argument("--method", help="pruning method to fit (required if the store mixes methods)")
    p.add_argument("--out", help="write the law card (JSON) here")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="run-bootstrap refits for intervals (default 0)")
    p.add_argument("--weighting", choices=("point", "run"), default="point",
                   help="'run' gives each run the same total weight (default point)")
    p.add_argument("--slope", type=float, default=1e-3,
                   help="P2 budget criterion: nats gained per extra 1e9 tokens (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the card as one JSON document")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fitting.card import card_dict, save_card
    from fitting.fit import FitConfig, fit
    from fitting.laws import get_law
    from fitting.table import load_data

    law = get_law(args.law)
    config = FitConfig(n_bootstrap=args.bootstrap, weighting=args.weighting, slope=args.slope,
                       seed=args.seed)
    data = load_data(args.path, law, method=args.method)
    result = fit(data, config)
    if args.out:
        save_card(result, args.out)
    if args.json:
        json.dump(card_dict(result), sys.stdout, indent=2)
        print()
        warn(result.notes)
    else:
        print(result.summary())
        if args.out:
            print(f"law card written to {args.out}")
    return 0 if result.success else 1
