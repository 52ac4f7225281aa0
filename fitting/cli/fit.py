"""``fitting fit PATH --law p2|chinchilla|...``: fit, print a summary or the card, write the card."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fitting.cli import input_parser, load_input, warn

EPILOG = """examples:
  fitting fit runs/ --law p2 --method depth --bootstrap 200 --out cards/depth.json
  fitting fit chinchilla.csv --law chinchilla --bootstrap 1000 --json > card.json
  fitting fit runs/ --law p2 --method 2:4 --weighting run --slope 0.002
  fitting fit vit.csv --law sparsity --huber-delta 0.01 --space linear --json

PATH is a run-store directory (P2: pruned-init runs with status done, tokens > 0) or a
.csv/.parquet table whose columns are the law's axis names (p2: params_before, ratio, tokens,
loss_before, eval_loss [, run_id]; chinchilla: N, D, loss; sparsity: S, N, D, loss).
An existing --out file is refused unless --force is given."""


def build_parser() -> argparse.ArgumentParser:
    from fitting.fit import MAX_BOOTSTRAP

    p = input_parser("fitting fit", __doc__, EPILOG, "law to fit")
    p.add_argument("--out", help="write the law card (JSON) here")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help=f"run-bootstrap refits for intervals, 0..{MAX_BOOTSTRAP} (default 0)")
    p.add_argument("--workers", type=int, default=None,
                   help="bootstrap processes (default: all cores)")
    p.add_argument("--slope", type=float, default=1e-3,
                   help="P2 budget criterion: nats gained per extra 1e9 tokens (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the card as one JSON document")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pathlib import Path

    from data.cli import BadInput
    from fitting.card import card_dict, save_card
    from fitting.fit import FitConfig, fit
    from fitting.laws import get_law

    law = get_law(args.law)
    if args.out and Path(args.out).exists() and not args.force:
        raise BadInput(f"--out {args.out!r} exists; pass --force to overwrite it")
    config = FitConfig(n_bootstrap=args.bootstrap, weighting=args.weighting, slope=args.slope,
                       seed=args.seed, delta=args.huber_delta, space=args.space,
                       workers=args.workers)
    data = load_input(args, law)
    result = fit(data, config)
    if args.out:
        save_card(result, args.out, force=args.force)
    if args.json:
        json.dump(card_dict(result), sys.stdout, indent=2)
        print()
        warn(result.notes)
    else:
        print(result.summary())
        if args.out:
            print(f"law card written to {args.out}")
    return 0 if result.success else 1
