"""``fitting validate PATH --law p2``: held-out extrapolation by tokens, size and ratio."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fitting.cli import Parser, law_names, warn

EPILOG = """examples:
  fitting validate runs/ --law p2 --method depth
  fitting validate runs/ --law p2 --method width --by size --json
  fitting validate curves.parquet --law p2 --by tokens

tokens: fit the first 80% of every curve, predict the last 20%; size: fit the smaller parents,
predict the largest; ratio: fit the lower ratios, predict the highest. Metrics on held-out
points: RMSE, MAPE (%), R^2, average slope difference (dL/dlog10 D, P2 paper)."""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="fitting validate", description=__doc__.splitlines()[0], epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="run-store directory or .csv/.parquet table")
    p.add_argument("--law", required=True, help=f"law to validate: {', '.join(law_names())}")
    p.add_argument("--method", help="pruning method (required if the store mixes methods)")
    p.add_argument("--by", choices=("tokens", "size", "ratio", "all"), default="all",
                   help="which extrapolation to test (default all)")
    p.add_argument("--weighting", choices=("point", "run"), default="point",
                   help="'run' gives each run the same total weight (default point)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON document")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fitting.fit import FitConfig
    from fitting.laws import get_law
    from fitting.table import load_data
    from fitting.validate import render_table, validate

    law = get_law(args.law)
    data = load_data(args.path, law, method=args.method)
    results = validate(data, args.by, FitConfig(weighting=args.weighting))
    if args.json:
        doc = {"law": law.name, "source": data.source, "n_points": data.n_points,
               "n_runs": data.n_runs, "results": [r.to_dict() for r in results]}
        json.dump(doc, sys.stdout, indent=2)
        print()
        warn(data.notes)
    else:
        print(f"law {law.name}, {data.n_points} points, {data.n_runs} runs from {data.source}")
        print(render_table(results))
    return 0
