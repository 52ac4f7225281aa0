"""Options and helpers shared by ``planner recommend`` and ``planner compare``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from data.cli import BadInput
from planner.cards import Selection, planning_card, select_card
from data.compute import DEFAULT_GPU, DEFAULT_MFU, GPUS
from planner.query import DEFAULT_METHOD, METHODS


class Parser(argparse.ArgumentParser):
    """argparse that raises BadInput (exit 2, one line) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(message)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's examples as written; reads the width without ``shutil``.

    argparse builds a formatter for every ``add_argument`` and each one imports ``shutil`` for
    the terminal width: a few ms of a command that must answer in well under a second.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            try:
                width = int(os.environ.get("COLUMNS", "")) - 2
            except ValueError:
                width = 98
        super().__init__(prog, indent_increment, max_help_position, width)


def new_parser(prog: str, description: str, epilog: str) -> Parser:
    return Parser(prog=prog, description=description, epilog=epilog, formatter_class=Formatter)


def add_parent_options(parser: argparse.ArgumentParser) -> None:
    """--params, --family, --method, --law, --loss-before."""
    parser.add_argument("--params", required=True, metavar="SIZE|MODEL",
                        help="parent size N0 (8B, 1.5B, 500M, 8e9, 8030261248) or a model name "
                             "(llama-3.1-8b, qwen2.5-7b: exact count, fixes the family)")
    parser.add_argument("--family", help="llama3 or qwen2.5 (smollm2, tiny); default llama3 "
                                         "unless --params names a model")
    parser.add_argument("--method", help=f"pruning method (default {DEFAULT_METHOD}); one of "
                                         f"{', '.join(METHODS)}")
    parser.add_argument("--law", metavar="CARD.json",
                        help="law card from 'fitting fit' (P2, or any law with token, size and ratio axes); default: the bundled card for the "
                             "family and method (see 'planner cards')")
    parser.add_argument("--loss-before", type=float, metavar="L0",
                        help="the parent's eval loss in nats (same eval data); default: a pilot's own, "
                             "else unknown and losses are shown as dL above L0 (never taken from "
                             "another family's or scale's parents)")


def add_cost_options(parser: argparse.ArgumentParser) -> None:
    """--gpu, --mfu, --price."""
    gpus = ", ".join(f"{g.name} {g.peak_flops / 1e12:g}e12 FLOP/s ${g.price:.2f}/h" for g in GPUS.values())
    parser.add_argument("--gpu", default=DEFAULT_GPU, help=f"accelerator ({gpus}; dense BF16 peak, "
                                                          f"indicative on-demand price); default {DEFAULT_GPU}")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU,
                        help=f"model FLOPs utilisation, default {DEFAULT_MFU}")
    parser.add_argument("--price", type=float, help="USD per GPU-hour (default: the --gpu's price above)")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")


def law_card(path: str | None, family: str, method: str, n0: float) -> Selection:
    """The card to plan with: ``--law`` if given, else the bundled lookup (with its reason);
    of any registered law with token, size and ratio axes (``Law.plans_budgets``)."""
    if path is not None:
        return Selection(planning_card(path), "given with --law")
    return select_card(None, family, method, n0)


def print_json(obj: Any) -> None:
    """One JSON document on stdout (NaN/inf are never emitted: JSON has none)."""
    json.dump(obj, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def check_loss_before(value: float | None) -> float | None:
    if value is not None and not (value > 0 and value != float("inf")):
        raise BadInput(f"bad --loss-before {value!r}: expected the parent's eval loss in nats (> 0), e.g. 2.1")
    return value


