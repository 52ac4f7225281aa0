"""From the SmolLM2-135M grid (a real pretrained parent) to committed curves, cards and numbers.

1. copy the finished runs of ``grids/smollm2-cpu.yaml`` and ``grids/smollm2-cpu-controls.yaml``
   into docs/smollm2_runs/ (run.json + curve.parquet, no weights; scripts/export_reference_runs.py);
2. fit one P2 card per method with >= 2 finished KD ratios, by the product's own command, into
   planner/cards/p2_smollm2_<method>.json (one parent size: the card's pins say which terms the
   data cannot fix and what the fit collapses to), without the points inside each run's LR
   warm-up (``--after-warmup``: on these curves they left a 0.37-nat RMSE, 0.07 without);
3. the numbers behind docs/FINDINGS.md's real-parent section, into docs/smollm2_runs/evidence.json:
   per run the loss right after pruning and at the end, throughput, the loss of every run at
   equal tokens and at equal training seconds (pruned vs random init, KD vs LM), beta per card
   against the toy cards', and the eval-set noise (the standard error of the parent's loss over
   the eval sequences, by bootstrap).

    python scripts/smollm2_evidence.py                        # export + cards + numbers
    python scripts/smollm2_evidence.py --skip-export --skip-cards --skip-noise
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from export_reference_runs import export  # noqa: E402 - a sibling script, not a package

STORES = (Path("work/smollm2/runs"), Path("work/smollm2/controls"))
"""The main grid's store and the controls grid's (grids/smollm2-cpu*.yaml)."""
RUNS = Path("docs/smollm2_runs")
CARDS = Path("planner/cards")
FAMILY = "smollm2"
BOOTSTRAP = 100
TOY_CARDS = ("p2_llama3_depth.json", "p2_llama3_width.json", "p2_llama3_2-4.json",
             "p2_qwen2.5_depth.json", "p2_qwen2.5_width.json", "p2_qwen2.5_2-4.json")


def finals(frame) -> "object":
    """One row per finished run: its last point, the loss right after pruning, its throughput."""
    done = frame[(frame["status"] == "done") & (frame["method"] != "none")].sort_values("tokens")
    first = done.groupby("run_id").first()
    last = done.groupby("run_id").last().reset_index()
    last["loss_pruned"] = last["run_id"].map(first["eval_loss"])
    last["dl"] = last["eval_loss"] - last["loss_before"]
    last["tok_per_s"] = last["tokens"] / last["elapsed_s"]
    return last


def kd_methods(last) -> list[str]:
    kd = last[(last["objective"] == "kd") & (last["init"] == "pruned")]
    counts = kd.groupby("method")["ratio"].nunique()
    return sorted(counts[counts >= 2].index)


def fit_cards(store: Path, methods: list[str]) -> list[str]:
    written = []
    for method in methods:
        out = CARDS / f"p2_{FAMILY}_{method.replace(':', '-')}.json"
        cmd = [sys.executable, "-m", "fitting", "fit", str(store), "--law", "p2", "--family", FAMILY,
               "--method", method, "--objective", "kd", "--after-warmup", "--bootstrap", str(BOOTSTRAP),
               "--out", str(out), "--force"]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
        written.append(str(out))
    return written


def at_equal(frame, last, axis: str, points: tuple[float, ...]) -> list[dict]:
    """Every finished run's loss at the same values of ``axis`` (those the run reached)."""
    from planner.evidence import loss_at

    rows = []
    for r in last.itertuples():
        curve = frame[frame["run_id"] == r.run_id]
        end = float(getattr(r, axis))
        # a run of "500K" stops at its last whole step (499,712 tokens): within 1 % is reached,
        # and read at that last point
        reached = [t for t in points if t <= end * 1.01]
        rows.append({"run_id": r.run_id, "method": r.method, "ratio": round(float(r.ratio), 3),
                     "objective": r.objective, "init": r.init,
                     "loss": {f"{t:.0f}": round(loss_at(curve, min(t, end), axis), 4) for t in reached}})
    return rows


def card_betas(names: list[str]) -> dict:
    """beta and its interval from each card (the token exponent the law fitted)."""
    out = {}
    for name in names:
        path = ROOT / CARDS / name
        if not path.is_file():
            continue
        card = json.loads(path.read_text())
        ci = card.get("ci", {}).get("params", {}).get("beta")
        out[name] = {"beta": card["params"]["beta"], "ci": ci}
    return out


def sequence_losses(model, shard_set, max_sequences: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(summed token CE, predicted tokens) per eval sequence, in the engine's eval order."""
    from data.loader import eval_batches
    from engine.train.evaluate import sequence_sums

    sums, counts = [], []
    for domain in shard_set.split_domains("eval"):
        for ids in eval_batches(shard_set, domain, batch_size=8, max_sequences=max_sequences):
            sums += sequence_sums(model, ids).tolist()  # under no_grad itself
            counts += [ids.shape[1] - 1] * ids.shape[0]
    return np.array(sums), np.array(counts, float)


def _bootstrap_se(stat, n: int, seed: int = 0, draws: int = 2000) -> float:
    rng = np.random.default_rng(seed)
    return float(np.std([stat(rng.integers(0, n, n)) for _ in range(draws)], ddof=1))


def eval_noise(parent: Path, shards: Path, ratio: float = 0.25) -> dict:
    """How much of a reported loss is the eval set's sampling (bootstrap over its sequences):
    ``se`` of one model's token-weighted loss, and ``paired_se`` of the difference between two
    models scored on the same sequences (the parent and its depth-pruned child before any
    training, a difference of the size this grid reports), which is what a comparison of two
    runs on this fixed eval set carries."""
    from data.methods import METHODS
    from data.shards import ShardSet
    from engine.models import load_model

    shard_set = ShardSet(str(shards))
    model = load_model(str(parent)).eval()
    s0, n = sequence_losses(model, shard_set)
    calib = _calibration(shard_set)
    METHODS["depth"].function()(model, ratio, calib)
    s1, _ = sequence_losses(model.eval(), shard_set)
    idx = np.arange(len(s0))
    mean = lambda s, i: s[i].sum() / n[i].sum()  # noqa: E731 - a one-line statistic
    return {"sequences": len(s0), "tokens": int(n.sum()), "loss": float(mean(s0, idx)),
            "se": _bootstrap_se(lambda i: mean(s0, i), len(s0)),
            "pruned_depth_ratio": ratio, "pruned_loss": float(mean(s1, idx)),
            "paired_se": _bootstrap_se(lambda i: mean(s1, i) - mean(s0, i), len(s0))}


def _calibration(shard_set, n: int = 32) -> "object":
    from data.calib import sample_calibration

    return sample_calibration(shard_set.path, n, int(shard_set.seq_len), split="train", seed=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, action="append", help="a run store to export (repeatable; default: "
                   + ", ".join(map(str, STORES)) + ")")
    p.add_argument("--parent", type=Path, default=Path("work/smollm2-135m"))
    p.add_argument("--shards", type=Path, default=Path("work/smollm2/shards"))
    p.add_argument("--skip-export", action="store_true")
    p.add_argument("--skip-cards", action="store_true")
    p.add_argument("--skip-noise", action="store_true")
    a = p.parse_args(argv)
    from data.runs import load

    if not a.skip_export:
        stores = [ROOT / s for s in a.store or STORES if (ROOT / s).is_dir()]
        print(f"{sum(export(s, ROOT / RUNS) for s in stores)} runs exported to {RUNS}")
    frame = load(ROOT / RUNS)
    last = finals(frame)
    methods = kd_methods(last)
    cards = [] if a.skip_cards else fit_cards(RUNS, methods)
    out_path = ROOT / RUNS / "evidence.json"
    old = json.loads(out_path.read_text()) if out_path.is_file() else {}
    evidence = {
        "runs": [{"run_id": r.run_id, "method": r.method, "ratio": round(float(r.ratio), 4),
                  "objective": r.objective, "init": r.init, "tokens": int(r.tokens),
                  "loss_before": round(float(r.loss_before), 4), "loss_pruned": round(float(r.loss_pruned), 4),
                  "loss_final": round(float(r.eval_loss), 4), "dl_final": round(float(r.dl), 4),
                  "tok_per_s": round(float(r.tok_per_s), 1)} for r in last.itertuples()],
        "equal_tokens": at_equal(frame, last, "tokens", (25e3, 1e5, 2.5e5, 5e5)),
        # training seconds (eval excluded), each run on one thread beside one other job: KD
        # pays a teacher forward per step, so equal tokens and equal compute can disagree
        "equal_seconds": at_equal(frame, last, "elapsed_s", (600.0, 1200.0, 1800.0, 3000.0)),
        "cards": cards or old.get("cards", []),
        "betas": card_betas([Path(c).name for c in cards or old.get("cards", [])] + list(TOY_CARDS)),
        "eval_noise": old.get("eval_noise") if a.skip_noise else eval_noise(ROOT / a.parent, ROOT / a.shards),
    }
    out_path.write_text(json.dumps(evidence, indent=1) + "\n")
    for r in evidence["runs"]:
        print(f"{r['method']:6s} r={r['ratio']:.3f} {r['objective']} {r['init']:6s} L0 {r['loss_before']:.3f} "
              f"pruned {r['loss_pruned']:.3f} -> {r['loss_final']:.3f} at {r['tokens']:,} tokens "
              f"(dL {r['dl_final']:+.3f}, {r['tok_per_s']:.0f} tok/s)")
    print(json.dumps({k: evidence[k] for k in ("betas", "eval_noise")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
