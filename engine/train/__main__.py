"""``python -m engine.train``: the launcher's worker entry point (see engine.train.worker)."""

import sys

from data.cli import run_cli
from engine.train.worker import main

if __name__ == "__main__":
    sys.exit(run_cli("engine.train", main))
