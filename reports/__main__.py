"""``reports``: PDF reports from a run store and law cards (``python -m reports`` or ``reports``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from data.cli import dispatch

COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("reports.cli.build", "build the PDF report of a run store (curves, fitted laws, D*)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("reports", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
