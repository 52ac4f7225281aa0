"""DeepSpeed checkpoints inside the run directory; only the latest is kept.

Resume contract (docs/design-contract.md): a killed run restarts from its last checkpoint, its curve is
truncated to that step, and the rows after it are recomputed, so no ``(run_id, step)`` is
ever duplicated and no gap appears. The curve row of an eval point is written BEFORE the
checkpoint of that point: a kill in between only loses work, never a row.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoint"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR


def has_checkpoint(run_dir: Path) -> bool:
    """True when DeepSpeed's ``latest`` tag file names an existing checkpoint."""
    latest = checkpoint_dir(run_dir) / "latest"
    tag = latest.read_text().strip() if latest.is_file() else ""
    return bool(tag) and (checkpoint_dir(run_dir) / tag).is_dir()  # a kill mid-save can leave it empty


def save(engine: Any, run_dir: Path, step: int, client_state: dict[str, Any], is_main: bool) -> None:
    """Collective: every rank calls it. Older tags are removed once the new one is complete."""
    root = checkpoint_dir(run_dir)
    tag = f"step{step:08d}"
    engine.save_checkpoint(str(root), tag=tag, client_state=client_state)
    if is_main:
        for old in root.iterdir():
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old, ignore_errors=True)


def load(engine: Any, run_dir: Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and return the client state saved with them."""
    path, client_state = engine.load_checkpoint(str(checkpoint_dir(run_dir)))
    if path is None:
        raise RuntimeError(f"could not load the checkpoint in {checkpoint_dir(run_dir)}")
    return client_state or {}


def remove(run_dir: Path) -> None:
    """A finished run needs no resume point (a checkpoint of an 8B model is ~100 GB)."""
    shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)
