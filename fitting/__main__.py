"""fitting: fit scaling laws to runs, validate by held-out extrapolation, write law cards."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from data.cli import dispatch

COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("fitting.cli.fit", "fit a law (p2, chinchilla, ...) to a run store or table; write a law card"),
    "compare": ("fitting.cli.compare", "P2 against alternative forms: leave-one-run-out error, AIC/BIC"),
    "validate": ("fitting.cli.validate", "held-out extrapolation by tokens, parent size or ratio"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("fitting", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
