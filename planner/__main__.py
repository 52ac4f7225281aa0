"""``planner``: token budgets for pruned post-training from law cards (``python -m planner``).

Sub-second on purpose: this path imports numpy, the standard library, ``data.models``/``units``
and ``fitting.laws``/``fitting.card`` only (no torch, pandas, scipy, matplotlib; a test checks).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from data.cli import dispatch

COMMANDS: dict[str, tuple[str, str]] = {
    "recommend": ("planner.cli.recommend", "post-training tokens, predicted loss and cost for one pruned model"),
    "compare": ("planner.cli.compare", "loss per pruning ratio at equal tokens and equal compute, vs from scratch"),
    "design": ("planner.cli.design", "the cheapest grid of runs that pins down D* at one query"),
    "cards": ("planner.cli.cards", "list the bundled law cards and their provenance"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("planner", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
