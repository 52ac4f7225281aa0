"""``engine``: prune, post-train and run grids (``python -m engine`` or the ``engine`` script)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from data.cli import dispatch

# ``demo`` is the one command not in engine: it chains every package, so it lives in the
# top-level ``workflow`` package (engine imports only ``data``; this table names a module, the
# dispatcher imports it only when ``engine demo`` runs).
COMMANDS: dict[str, tuple[str, str]] = {
    "model": ("engine.cli.model", "fetch the real SmolLM2-135M parent, list presets"),
    "prune": ("engine.cli.prune", "prune a model (depth, width, 2:4, unstructured) and save it"),
    "recon": ("engine.cli.recon", "reconstruct a pruned model layer/block-wise against its parent"),
    "train": ("engine.cli.train", "post-train or pretrain one job through DeepSpeed"),
    "eval": ("engine.cli.eval", "score a model with lm-evaluation-harness (offline corpus_ppl task)"),
    "grid": ("engine.cli.grid", "plan, launch, watch and cancel grids of jobs (local or SLURM)"),
    "demo": ("workflow.cli", "the whole product on the embedded default grid (grids/demo.yaml)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("engine", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
