"""Copy a run store's curves into the repository (run.json + curve.parquet per done run).

The bundled cards are fitted from what this writes (docs/reference_runs/), so a clean clone
can refit and check every card (tests/planner/test_bundled_cards.py). Machine paths in run.json (the
store and shard directories a job was given) are rewritten relative to the repository root,
and nothing else is copied: no checkpoints, no job files; the grid's pretrained parents keep
their small ``model/`` directory (save_pretrained, a few MB in all) so later work can prune
the same parents without pretraining them again.

    python scripts/export_reference_runs.py work/reference/runs docs/reference_runs
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _relative(value):
    if isinstance(value, str) and value.startswith(str(ROOT) + "/"):
        return value[len(str(ROOT)) + 1:]
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v) for v in value]
    return value


def export(store: Path, out: Path) -> int:
    count = 0
    for run in sorted(p for p in store.iterdir() if (p / "run.json").is_file()):
        record = json.loads((run / "run.json").read_text())
        if record.get("status") != "done":
            continue
        dest = out / run.name
        dest.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_relative(record), indent=1, sort_keys=True)
        if str(ROOT) in text:
            raise SystemExit(f"{run.name}: a machine path survived in run.json")
        (dest / "run.json").write_text(text + "\n")
        shutil.copy2(run / "curve.parquet", dest / "curve.parquet")
        if (run / "model").is_dir() and record.get("meta", {}).get("method") == "none":
            shutil.copytree(run / "model", dest / "model", dirs_exist_ok=True)
        count += 1
    return count


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    print(f"{export(Path(sys.argv[1]), Path(sys.argv[2]))} runs exported to {sys.argv[2]}")
