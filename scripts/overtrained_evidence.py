"""Is the reference cards' delta < 0 a regime artefact? Over-trained vs 10-tokens/param parents.

Fits P2 (one law per method, run-bootstrap intervals) on the runs of
``grids/overtrained-tiny.yaml`` (parents l1-l3 pretrained to 200 tokens per parameter) and on
the SAME cells of docs/reference_runs (the same three shapes pretrained to 10 tokens per
parameter, the same methods and ratios, the same post-training), and prints delta with its
interval, the parents' losses, and each run's loss gap right after pruning and at the end.
The finished runs are first copied into docs/overtrained_runs/ (no weights but the parents'
small model directories), where the fit reads them.

    python scripts/overtrained_evidence.py                   # export + fits (a few minutes)
    python scripts/overtrained_evidence.py --skip-export
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from export_reference_runs import export  # noqa: E402 - a sibling script, not a package
from smollm2_evidence import finals  # noqa: E402 - the same per-run first/last points

STORE = Path("work/overtrained/runs")
RUNS = Path("docs/overtrained_runs")
REFERENCE = Path("docs/reference_runs")
BOOTSTRAP = 100


def cells(store: Path) -> set[tuple[str, str, float]]:
    """(parent name, method, ratio target) of the store's finished pruned runs."""
    from data.runs import load

    frame = load(store)
    done = frame[(frame["status"] == "done") & (frame["method"] != "none")]
    return {(p.split("_")[0], m, round(float(r), 3)) for p, m, r in
            zip(done["run_id"], done["method"], done["ratio_target"])}


def matching_reference(wanted: set[tuple[str, str, float]], out: Path) -> int:
    """Copy the reference runs of the same parents, methods and ratio targets (and their
    parents) into ``out``: the 10-tokens-per-parameter twin of the over-trained store."""
    count = 0
    for run in sorted(p for p in (ROOT / REFERENCE).iterdir() if (p / "run.json").is_file()):
        meta = json.loads((run / "run.json").read_text())["meta"]
        name = run.name.split("_")[0]
        key = (name, meta["method"], round(float(meta.get("ratio_target") or 0), 3))
        parent = meta["method"] == "none" and any(w[0] == name for w in wanted)
        if key in wanted or parent:
            shutil.copytree(run, out / run.name, ignore=shutil.ignore_patterns("model"))
            count += 1
    return count


def fit(store: Path, method: str) -> dict:
    cmd = [sys.executable, "-m", "fitting", "fit", str(store), "--law", "p2", "--method", method,
           "--bootstrap", str(BOOTSTRAP), "--json"]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    card = json.loads(out)
    return {"params": card["params"], "ci": card.get("ci", {}).get("params", {}),
            "not_identified": sorted(k for k, v in card.get("identifiable", {}).items()
                                     if not v.get("identified", True))}


def gaps(store: Path) -> list[dict]:
    """Per finished pruned run: parent L0, the loss right after pruning and at the end."""
    from data.runs import load

    return [{"run_id": r.run_id, "method": r.method, "ratio": round(float(r.ratio), 3),
             "params_before": int(r.params_before), "loss_before": round(float(r.loss_before), 4),
             "gap_pruned": round(float(r.loss_pruned - r.loss_before), 4), "gap_final": round(float(r.dl), 4)}
            for r in finals(load(store)).itertuples()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=STORE)
    p.add_argument("--skip-export", action="store_true")
    a = p.parse_args(argv)
    if not a.skip_export:
        print(f"{export(ROOT / a.store, ROOT / RUNS)} runs exported to {RUNS}")
    wanted = cells(ROOT / RUNS)
    out: dict = {"cells": sorted(map(list, wanted))}
    with tempfile.TemporaryDirectory() as tmp:
        twin = Path(tmp) / "runs"
        twin.mkdir()
        print(f"{matching_reference(wanted, twin)} reference runs of the same cells")
        for regime, store in (("200 tok/param", ROOT / RUNS), ("10 tok/param", twin)):
            out[regime] = {"gaps": gaps(store)}
            for method in sorted({m for _, m, _ in wanted}):
                out[regime][method] = fit(store, method)
                par, ci = out[regime][method]["params"], out[regime][method]["ci"].get("delta")
                print(f"{regime:14s} {method:6s} delta {par['delta']:+.3f} CI {ci} beta {par['beta']:.3f} "
                      f"gamma {par['gamma']:+.3f}")
    (ROOT / RUNS / "evidence.json").write_text(json.dumps(out, indent=1, default=float) + "\n")
    for regime in ("200 tok/param", "10 tok/param"):
        for g in sorted(out[regime]["gaps"], key=lambda g: (g["method"], g["ratio"], g["params_before"])):
            print(f"{regime:14s} {g['method']:6s} r={g['ratio']:.3f} N0={g['params_before']:>7,} L0 {g['loss_before']:.3f} "
                  f"gap after pruning {g['gap_pruned']:+.3f} -> {g['gap_final']:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
