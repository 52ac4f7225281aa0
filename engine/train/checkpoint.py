"""DeepSpeed checkpoints inside the run directory; only the latest complete one is kept.

Resume contract (docs/design-contract.md): a killed run restarts from its last checkpoint, its curve is
truncated to that step, and the rows after it are recomputed, so no ``(run_id, step)`` is
ever duplicated and no gap appears. The curve row of an eval point is written BEFORE the
checkpoint of that point: a kill in between only loses work, never a row.

A tag is *complete* once every rank's files are on disk: DeepSpeed's ``save_checkpoint`` ends
with a barrier, after which rank 0 lists the tag's files and their sizes in
:data:`MANIFEST`, then points ``latest`` at the tag (DeepSpeed's own ``latest`` is switched
off: it writes it before the barrier, while other ranks may still be writing their ZeRO
shards), and only then removes the older tags. Resume loads the tag ``latest`` names when its
manifest still matches the disk, else the newest tag that does: a kill at any moment, or a
shard lost afterwards, costs at most the work since the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from engine.train.protocols import Engine

CHECKPOINT_DIR = "checkpoint"
LATEST = "latest"
MANIFEST = "complete.json"
"""Per tag: ``{file name relative to the tag: size in bytes}`` of every file every rank wrote."""


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINT_DIR


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _files(tag_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(tag_dir)): p.stat().st_size for p in sorted(tag_dir.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def is_complete(tag_dir: Path) -> bool:
    """The tag's manifest exists and every file it lists is on disk at its recorded size."""
    try:
        listed = json.loads((tag_dir / MANIFEST).read_text())
        return bool(listed) and all((tag_dir / name).stat().st_size == size for name, size in listed.items())
    except (OSError, ValueError, AttributeError):
        return False


def _named_by_latest(root: Path) -> str:
    latest = root / LATEST
    try:
        return latest.read_text().strip()
    except OSError:
        return ""


def resume_tag(run_dir: Path) -> str | None:
    """The tag to resume from: ``latest``'s when complete, else the newest complete tag.

    A tag saved before manifests existed (none on disk anywhere) is trusted when ``latest``
    names it, as it was then.
    """
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return None
    named = _named_by_latest(root)
    if named and is_complete(root / named):
        return named
    complete = sorted(p.name for p in root.iterdir() if p.is_dir() and is_complete(p))
    if complete:
        return complete[-1]  # tags are step{step:08d}: name order is step order
    legacy = named and (root / named).is_dir() and not any(root.glob(f"*/{MANIFEST}"))
    return named if legacy else None


def has_checkpoint(run_dir: Path) -> bool:
    """True when a complete checkpoint exists to resume from."""
    return resume_tag(run_dir) is not None


def save(engine: Engine, run_dir: Path, step: int, client_state: dict[str, Any], is_main: bool) -> None:
    """Collective: every rank calls it. ``latest`` moves to the new tag only once its files
    are all written; older tags are removed after that."""
    root = checkpoint_dir(run_dir)
    tag = f"step{step:08d}"
    if is_main:  # a torn attempt at this tag (resumed from an older one): nothing of it may count.
        # Safe before the call: no rank writes into the tag before save_checkpoint's first barrier.
        shutil.rmtree(root / tag, ignore_errors=True)
    engine.save_checkpoint(str(root), tag=tag, client_state=client_state, save_latest=False)
    if not is_main:  # save_checkpoint's closing barrier: every rank's files are written
        return
    _write_atomic(root / tag / MANIFEST, json.dumps(_files(root / tag), indent=1))
    _write_atomic(root / LATEST, tag)
    for old in root.iterdir():
        if old.is_dir() and old.name != tag:
            shutil.rmtree(old, ignore_errors=True)


def load(engine: Engine, run_dir: Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler from :func:`resume_tag`'s checkpoint and return the
    client state saved with them."""
    tag = resume_tag(run_dir)
    if tag is None:
        raise RuntimeError(f"no complete checkpoint in {checkpoint_dir(run_dir)}")
    named = _named_by_latest(checkpoint_dir(run_dir))
    if named and named != tag and engine.global_rank == 0:
        print(f"[engine.train] checkpoint {named} is incomplete; resuming from {tag}", flush=True)
    path, client_state = engine.load_checkpoint(str(checkpoint_dir(run_dir)), tag=tag)
    if path is None:
        raise RuntimeError(f"could not load the checkpoint {tag} in {checkpoint_dir(run_dir)}")
    return client_state or {}


def remove(run_dir: Path) -> None:
    """A finished run needs no resume point (a checkpoint of an 8B model is ~100 GB)."""
    shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)
