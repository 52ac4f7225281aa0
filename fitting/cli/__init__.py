"""One module per ``fitting`` subcommand: thin adapters over library functions."""

from __future__ import annotations

import argparse
import sys

from data.cli import BadInput


class Parser(argparse.ArgumentParser):
    """argparse that raises ``BadInput`` (exit 2, one line) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(message)


def law_names() -> list[str]:
    from fitting.laws import LAWS

    return list(LAWS)


def warn(lines: tuple[str, ...] | list[str]) -> None:
    """Notes go to stderr, so ``--json`` keeps stdout to one document."""
    for line in lines:
        print(f"note: {line}", file=sys.stderr)
