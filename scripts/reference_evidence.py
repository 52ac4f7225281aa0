"""From the committed reference curves to the bundled cards and the findings' numbers.

1. one P2 card per family and method, fitted by the product's own command
   (``fitting fit docs/reference_runs --law p2 --family F --method M``) into planner/cards/;
2. the closed loop of planner.evidence (size and ratio hold-outs) per family and method,
   written to docs/reference_runs/closed_loop.json with its rendered table cells, which fill the
   generated block of docs/FINDINGS.md and the closed-loop pages of the reference report
   (``reports build ... --evidence docs/reference_runs/closed_loop.json``);
3. the P2 paper's claims checked on the curves (loss after post-training vs ratio, D* vs N0).

    python scripts/reference_evidence.py                  # all of it (a few minutes on 2 cores)
    python scripts/reference_evidence.py --skip-cards     # numbers only, cards as they are
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path("docs/reference_runs")
CARDS = Path("planner/cards")
BOOTSTRAP = 100


def pairs(store: Path) -> list[tuple[str, str]]:
    from data.runs import load

    frame = load(ROOT / store)
    done = frame[(frame["status"] == "done") & (frame["method"] != "none")]
    return sorted(set(zip(done["family"], done["method"])))


def card_name(family: str, method: str) -> Path:
    return CARDS / f"p2_{family}_{method.replace(':', '-')}.json"


def fit_cards(store: Path) -> list[Path]:
    written = []
    for family, method in pairs(store):
        out = card_name(family, method)
        cmd = [sys.executable, "-m", "fitting", "fit", str(store), "--law", "p2", "--family", family,
               "--method", method, "--bootstrap", str(BOOTSTRAP), "--out", str(out), "--force"]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
        written.append(out)
    index = {"default": {"p2": card_name("llama3", "depth").name}}
    (ROOT / CARDS / "index.json").write_text(json.dumps(index) + "\n")
    return written


def loop_tables(store: Path) -> dict:
    from planner.evidence import HOLDOUTS, TABLE_HEAD, closed_loop, markdown, summary, table_cells

    out: dict = {"head": list(TABLE_HEAD)}
    for family, method in pairs(store):
        for holdout in HOLDOUTS:
            rows = closed_loop(ROOT / store, family, method, holdout, n_bootstrap=BOOTSTRAP)
            key = f"{family}/{method}/{holdout}"
            # The rendered cells travel with the numbers: the findings and `reports build
            # --evidence` print these strings, so the two documents cannot disagree.
            out[key] = {"summary": summary(rows), "rows": [r.to_dict() for r in rows],
                        "cells": [table_cells(r.to_dict()) for r in rows]}
            print(f"\n### {key}: {summary(rows)}\n{markdown(rows)}", flush=True)
    return out


FINDINGS = Path("docs/FINDINGS.md")
BEGIN, END = "<!-- closed-loop tables: begin (scripts/reference_evidence.py) -->", "<!-- closed-loop tables: end -->"


def findings_section(loop: dict) -> str:
    """The closed-loop tables of docs/FINDINGS.md, from the same cells the report prints."""
    head = loop["head"]
    lines = [BEGIN, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, entry in loop.items():
        if key != "head":
            lines += ["| " + " | ".join(cells) + " |" for cells in entry["cells"]]
    return "\n".join(lines + ["", END])


def write_findings(loop: dict) -> None:
    """Replace the generated block of docs/FINDINGS.md (the prose around it is written by hand)."""
    path = ROOT / FINDINGS
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{FINDINGS}: markers {BEGIN!r} ... {END!r} not found")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    path.write_text(before + findings_section(loop) + after)


def claims(store: Path) -> dict:
    """Loss after post-training vs ratio, per family, method and parent (Spearman's rho)."""
    from scipy.stats import spearmanr

    from data.runs import load

    frame = load(ROOT / store)
    done = frame[(frame["status"] == "done") & (frame["method"] != "none")]
    final = done.sort_values("tokens").groupby("run_id").last().reset_index()
    final["dl"] = final["eval_loss"] - final["loss_before"]
    rows = []
    for (family, method, n0), group in final.groupby(["family", "method", "params_before"]):
        if len(group) >= 3:
            rho = spearmanr(group["ratio"], group["dl"]).statistic
            rows.append({"family": family, "method": method, "params_before": float(n0),
                         "ratios": [round(float(r), 3) for r in group.sort_values("ratio")["ratio"]],
                         "dl_final": [round(float(x), 5) for x in group.sort_values("ratio")["dl"]],
                         "spearman": float(rho)})
    for r in rows:
        print(f"{r['family']:8s} {r['method']:6s} N0={r['params_before']:>9,.0f} spearman(ratio, dL)={r['spearman']:+.2f} "
              f"dL={r['dl_final']}")
    return {"loss_vs_ratio": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=RUNS)
    p.add_argument("--skip-cards", action="store_true")
    args = p.parse_args(argv)
    if not args.skip_cards:
        fit_cards(args.store)
    evidence = {"closed_loop": loop_tables(args.store), "claims": claims(args.store)}
    (ROOT / args.store / "closed_loop.json").write_text(json.dumps(evidence, indent=1, default=float) + "\n")
    write_findings(evidence["closed_loop"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
