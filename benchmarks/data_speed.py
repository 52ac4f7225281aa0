"""Data pipeline speed and memory, each against a baseline measured in the same run.

1. ``data prepare`` tokenisation throughput vs a bare ``tokenizers`` batch encode of the same
   texts (goal: >= 0.8x with 2 workers). The pipeline figure is end to end: JSON loading,
   the parallel ``datasets`` map, packing, writing and hashing the shards.
2. The loader's time per batch as a fraction of a tiny LlamaForCausalLM training step
   (forward, backward, AdamW; goal: < 5%).
3. Peak RSS of a process iterating the loader over shard sets of growing size (memory-mapped:
   goal: flat).

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/data_speed.py [--work DIR] [--max-mb 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")


def _best(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` runs: the least disturbed by other load on the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_tokenize(work: Path, max_mb: float, repeats: int) -> dict:
    from tokenizers import Tokenizer

    from data.corpus import build_corpus, read_manifest
    from data.prepare import prepare
    from data.tokenizers import train_bpe

    corpus, tok = work / "corpus", work / "tok"
    if not (corpus / "manifest.json").is_file():
        build_corpus(corpus, max_mb=max_mb, overwrite=True)
    if not (tok / "tokenizer.json").is_file():
        train_bpe(corpus, 4096, tok)
    texts = [json.loads(line)["text"] for info in read_manifest(corpus)["domains"].values()
             for line in (corpus / info["file"]).read_text("utf-8").splitlines()]
    bare_tok = Tokenizer.from_file(str(tok / "tokenizer.json"))
    n_tokens = sum(len(e.ids) + 1 for e in bare_tok.encode_batch_fast(texts, add_special_tokens=False))
    bare = _best(lambda: bare_tok.encode_batch_fast(texts, add_special_tokens=False), repeats)
    pipe = _best(lambda: prepare(corpus, tok, 256, work / "shards", num_proc=2, overwrite=True), repeats)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    return {"text_mb": mb, "tokens": n_tokens, "bare_tok_per_s": n_tokens / bare,
            "prepare_tok_per_s": n_tokens / pipe, "ratio": bare / pipe}


def bench_loader_vs_step(shards_dir: Path, micro_batch: int = 8, steps: int = 15) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from data.loader import MixtureLoader
    from data.shards import ShardSet

    torch.manual_seed(0)
    shards = ShardSet(shards_dir)
    cfg = LlamaConfig(vocab_size=shards.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=shards.seq_len)
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = MixtureLoader(shards, micro_batch=micro_batch)
    batch_times, step_times = [], []
    for i in range(steps + 2):
        start = time.perf_counter()
        batch = next(loader)
        mid = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:  # skip warm-up (first page faults, allocator)
            batch_times.append(mid - start)
            step_times.append(time.perf_counter() - mid)
    b, s = statistics.median(batch_times), statistics.median(step_times)
    return {"micro_batch": micro_batch, "seq_len": shards.seq_len, "params": sum(p.numel() for p in model.parameters()),
            "batch_ms": b * 1e3, "step_ms": s * 1e3, "fraction": b / s}


def _scaled_shards(src: Path, dst: Path, factor: int) -> None:
    """A shard set ``factor`` times larger: the real train shards tiled (same format/manifest)."""
    from data.prepare import sha256_file

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.npy"))
    manifest = json.loads((src / "manifest.json").read_text())
    for split, domains in manifest["splits"].items():
        (dst / split).mkdir(exist_ok=True)
        for info in domains.values():
            arr = np.load(src / info["file"], mmap_mode="r")
            out = np.lib.format.open_memmap(dst / info["file"], mode="w+", dtype=arr.dtype,
                                            shape=(len(arr) * factor, arr.shape[1]))
            for k in range(factor):
                out[k * len(arr):(k + 1) * len(arr)] = arr
            out.flush()
            del out
            info["sequences"] *= factor
            info["tokens"] *= factor
            info["bytes"] = (dst / info["file"]).stat().st_size
            info["sha256"] = sha256_file(dst / info["file"])
    (dst / "manifest.json").write_text(json.dumps(manifest))


_RSS_CHILD = """
import json, sys
from data.loader import MixtureLoader
from data.shards import ShardSet
loader = MixtureLoader(ShardSet(sys.argv[1]), micro_batch=8)
for _ in range(int(sys.argv[2])):
    next(loader)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kb = lambda key: float(status[key].split()[0]) / 1024
# VmHWM, not ru_maxrss: the latter keeps the pre-exec peak of the (large) parent process.
print(json.dumps({"peak_rss_mb": kb("VmHWM"), "anon_mb": kb("RssAnon"), "file_mb": kb("RssFile")}))
"""


def bench_loader_memory(shards_dir: Path, work: Path, factors: list[int], batches: int = 300) -> list[dict]:
    rows = []
    for factor in factors:
        path = shards_dir if factor == 1 else work / f"shards_x{factor}"
        if factor != 1:
            _scaled_shards(shards_dir, path, factor)
        size = sum(p.stat().st_size for p in path.rglob("*.npy"))
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), str(batches)], capture_output=True,
                             text=True, check=True, env=os.environ | {"PYTHONPATH": str(Path.cwd())})
        rows.append({"factor": factor, "shard_mb": size / 1e6} | json.loads(out.stdout.strip().splitlines()[-1]))
        if factor != 1:
            shutil.rmtree(path)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="work dir (default: a temp dir, removed at the end)")
    parser.add_argument("--max-mb", type=float, default=4.0, help="corpus MB per pip-only domain")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best is kept)")
    parser.add_argument("--factors", default="1,10,100", help="shard-set size multiples for the memory test")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="data_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        tok = bench_tokenize(work, args.max_mb, args.repeats)
        print(f"[tokenise] {tok['text_mb']:.1f} MB text, {tok['tokens']:,} tokens: bare tokenizers "
              f"{tok['bare_tok_per_s'] / 1e6:.2f} M tok/s, data prepare (2 workers, end to end) "
              f"{tok['prepare_tok_per_s'] / 1e6:.2f} M tok/s -> ratio {tok['ratio']:.2f}x (goal >= 0.8x)")
        step = bench_loader_vs_step(work / "shards")
        print(f"[loader ] batch [{step['micro_batch']}, {step['seq_len']}] {step['batch_ms']:.2f} ms vs tiny "
              f"Llama ({step['params'] / 1e6:.2f}M params) train step {step['step_ms']:.1f} ms -> "
              f"{100 * step['fraction']:.2f}% (goal < 5%)")
        mem = bench_loader_memory(work / "shards", work, [int(f) for f in args.factors.split(",")])
        for row in mem:
            print(f"[memory ] shards {row['shard_mb']:8.1f} MB -> loader peak RSS {row['peak_rss_mb']:.0f} MB "
                  f"(anonymous {row['anon_mb']:.0f} MB, file-backed {row['file_mb']:.0f} MB)")
        growth = mem[-1]["peak_rss_mb"] / mem[0]["peak_rss_mb"]
        print(f"[memory ] {mem[-1]['shard_mb'] / mem[0]['shard_mb']:.0f}x more data -> {growth:.2f}x peak RSS "
              f"(goal: flat; rows are read with pread from the shard files)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
