"""``fitting compare PATH --law p2``: P2 against alternative forms, by LORO error and AIC/BIC."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fitting.cli import input_parser, load_input, warn

EPILOG = """examples:
  fitting compare runs/ --law p2 --method depth
  fitting compare curves.csv --law p2 --laws p2,p2_no_l0 --json
  fitting compare runs/ --law p2 --method width --weighting run

Candidates (default): every law that reads only the input's axes (for P2 data: p2, p2_counts,
p2_no_l0). Each is fitted by the same solver; AIC/BIC on the fit's residuals, and the RMSE of
every run predicted by a fit on all the others (leave-one-run-out), on L and on L - L0."""


def build_parser() -> argparse.ArgumentParser:
    p = input_parser("fitting compare", __doc__, EPILOG, "law the input is read for")
    p.add_argument("--laws", help="comma-separated candidate laws (default: all that fit the input)")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON document")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fitting.compare import compare, render
    from fitting.fit import FitConfig
    from fitting.laws import get_law

    law = get_law(args.law)
    laws = [get_law(n.strip()).name for n in args.laws.split(",")] if args.laws else None
    config = FitConfig(weighting=args.weighting, delta=args.huber_delta, space=args.space)
    data = load_input(args, law)
    results = compare(data, laws, config)
    if args.json:
        json.dump({"command": "compare", "source": data.source, "n_points": data.n_points,
                   "n_runs": data.n_runs, "candidates": [c.to_dict() for c in results]},
                  sys.stdout, indent=2)
        print()
        warn(data.notes)
    else:
        print(f"{data.n_points} points, {data.n_runs} runs from {data.source}")
        print(render(results))
    return 0
