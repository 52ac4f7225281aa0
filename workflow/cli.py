"""``engine demo`` / ``prunelaw demo``: a thin adapter over :func:`workflow.demo.run_demo`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EPILOG = """examples:
  engine demo                                  the embedded default (grids/demo.yaml)
  engine demo --grid grids/demo.yaml --procs-per-job 2
  engine demo --fresh                          start over (deletes the demo's work dir)
"""


def main(argv: Sequence[str] | None = None) -> int:
    from workflow import demo

    parser = argparse.ArgumentParser(prog="engine demo", description=demo.__doc__.split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", type=Path, default=Path("grids/demo.yaml"), help="grid spec (default %(default)s)")
    parser.add_argument("--procs-per-job", type=int, default=1, help="processes per deepspeed launch (default 1)")
    parser.add_argument("--bootstrap", type=int, default=100,
                        help=f"run-bootstrap refits per card, 0..{demo.MAX_BOOTSTRAP} (default 100)")
    parser.add_argument("--fresh", action="store_true", help="delete the demo's work directory first")
    args = parser.parse_args(argv)
    cfg = demo.DemoConfig(args.grid, bootstrap=args.bootstrap, procs_per_job=args.procs_per_job)
    result = demo.run_demo(cfg, fresh=args.fresh)
    return 0 if result.report is not None else 1


def prunelaw(argv: Sequence[str] | None = None) -> int:
    """``prunelaw demo ...``: the workflows' own console script."""
    from data.cli import dispatch

    return dispatch("prunelaw", "prunelaw workflows across every package",
                    {"demo": ("workflow.cli", "the whole product on the embedded default grid")}, argv)


if __name__ == "__main__":
    sys.exit(main())
