"""``fitting validate PATH --law p2``: held-out extrapolation by tokens, size and ratio."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from data.cli import BadInput
from fitting.cli import input_parser, load_input, warn

EPILOG = """examples:
  fitting validate runs/ --law p2 --method depth
  fitting validate runs/ --law p2 --method width --by size --json
  fitting validate curves.parquet --law p2 --by tokens

tokens: fit D <= f x Dmax of every run (--fraction, default 0.25), predict the rest; size:
leave the largest parent out; ratio: leave the highest ratio out. A train part that cannot
identify every parameter validates a reduced law, and says which. Metrics on held-out points:
RMSE, MAPE (%), R^2 on L, RMSE and MAPE on L - L0, average slope difference (P2 paper)."""


def build_parser() -> argparse.ArgumentParser:
    p = input_parser("fitting validate", __doc__, EPILOG, "law to validate")
    p.add_argument("--by", choices=("tokens", "size", "ratio", "all"), default="all",
                   help="which extrapolation to test (default all)")
    p.add_argument("--fraction", type=float, default=0.25,
                   help="tokens split: fit D <= FRACTION x Dmax of each run (default 0.25)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON document")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fitting.fit import FitConfig
    from fitting.laws import get_law
    from fitting.validate import render_table, validate

    law = get_law(args.law)
    if not 0 < args.fraction < 1:
        raise BadInput(f"--fraction {args.fraction!r} must be in (0, 1)")
    data = load_input(args, law)
    config = FitConfig(weighting=args.weighting, delta=args.huber_delta, space=args.space)
    results = validate(data, args.by, config, args.fraction)
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
