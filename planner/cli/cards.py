"""``planner cards``: list the bundled law cards, their slot and provenance.

--json schema: ``{"command": "cards", "directory": str, "cards": [{file, ok, problem, law,
family, method, source, content_hash, created, n_runs, n_bootstrap, range}]}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from data.cli import BadInput
from planner.cards import CARDS_ENV, cards_dir, scan
from planner.cli.common import new_parser, print_json

EPILOG = f"""\
Cards are read from planner/cards/ (package data) or ${CARDS_ENV}.

examples:
  planner cards
  planner cards --dir runs/cards --json
  {CARDS_ENV}=runs/cards planner recommend --params 8B --ratio 0.5
"""


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("planner cards", "List the bundled law cards the planner chooses from.", EPILOG)
    parser.add_argument("--dir", type=Path, help=f"cards directory (default: ${CARDS_ENV} or the package's)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    directory = args.dir or cards_dir()
    if args.dir is not None and not args.dir.is_dir():
        raise BadInput(f"--dir {str(args.dir)!r} is not a directory; pass the folder holding the *.json cards")
    entries = []
    for path, card, problem in scan(directory):
        entry = {"file": path.name, "ok": card is not None, "problem": problem or None}
        if card is not None:
            entry |= {k: v for k, v in card.provenance().items() if k != "path"}
            entry["range"] = card.range
        entries.append(entry)
    if args.json:
        print_json({"command": "cards", "directory": str(directory), "cards": entries})
        return 0
    if not entries:
        print(f"no law cards in {directory}; make one with 'fitting fit RUNS --law p2 --out CARD.json'")
        return 0
    for e in entries:
        if not e["ok"]:
            print(f"{e['file']:<32} UNREADABLE: {e['problem']}")
            continue
        span = e["range"].get("params_before") or e["range"].get("N") or {}
        print(f"{e['file']:<32} {e['law']:<10} {e['family'] or 'any':<8} {e['method'] or '-':<14} "
              f"{e['n_runs']} runs, N0 {span.get('min', 0):.3g}..{span.get('max', 0):.3g}, "
              f"created {e['created']}, data {e['source']}")
    return 0
