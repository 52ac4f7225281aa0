"""Data pipeline speed and memory, each against a baseline measured in the same run.

1. ``data prepare`` tokenisation throughput vs a bare ``tokenizers`` batch encode of the same
   texts (goal: >= 0.8x with 2 workers). The pipeline figure is end to end: JSON loading,
   the parallel ``datasets`` map, packing, writing and hashing the shards.
2. The loader's time per batch as a fraction of a tiny LlamaForCausalLM training step
   (forward, backward, AdamW; goal: < 5%).
3. Peak RSS of a process iterating the loader over shard sets of growing size (memory-mapped:
   goal: flat).
4. ``data prepare --dataset`` (Llama-3 tokenizer, a local parquet dataset of >= ``--tokens``
   tokens built from the offline corpus) against a plain ``datasets.map(tokenizer)`` plus a
   numpy write of the same tokens, each a fresh process with a fresh datasets cache (goal:
   >= 1x); and the pipeline's peak RSS when streaming the whole dataset and a quarter of it
   (``--max-tokens``): it must not grow with the corpus.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/data_speed.py [--work DIR] [--max-mb 4]
    .venv/bin/python benchmarks/data_speed.py --sections dataset --tokens 50M --work work/bench
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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


# -- 4. data prepare --dataset vs a plain datasets.map(tokenizer) -----------------------------

def build_local_dataset(work: Path, tokens: int, domains: list[str], debian: bool) -> tuple[Path, int]:
    """A parquet dataset of about ``tokens`` Llama-3 tokens, fields ``text`` and ``meta.domain``.

    The text is the offline corpus (``data corpus build``); where it holds fewer tokens than
    asked, it is written again until the size is reached (the throughput of a tokenizer does
    not depend on whether it saw a document before; the split and the domains do not either).
    Returns the directory and its document count.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from data.corpus import build_corpus, read_manifest
    from data.tokenizers import resolve_tokenizer_dir

    out, done = work / f"dataset-{tokens}", work / f"dataset-{tokens}.json"  # beside it: not a data file
    if done.is_file():
        return out, json.loads(done.read_text())["documents"]
    corpus = work / f"corpus-{'-'.join(domains)}-{tokens}"
    if not (corpus / "manifest.json").is_file():
        per_domain_mb = tokens * 4.5 / len(domains) / 1e6  # about 4 characters per Llama-3 token, plus margin
        build_corpus(corpus, domains, max_mb=per_domain_mb, overwrite=True, debian=debian)
    records = [(json.loads(line)["text"], domain) for domain, info in read_manifest(corpus)["domains"].items()
               for line in (corpus / info["file"]).read_text("utf-8").splitlines()]
    random.Random(0).shuffle(records)  # mixed domains throughout, as in a hub corpus: a prefix is a sample
    tok = Tokenizer.from_file(str(resolve_tokenizer_dir("llama3") / "tokenizer.json"))
    counts = [len(e.ids) + 1 for e in tok.encode_batch_fast([t for t, _ in records], add_special_tokens=False)]
    shutil.rmtree(out, ignore_errors=True)  # an interrupted earlier build
    out.mkdir(parents=True)
    written = documents = part = 0
    while written < tokens:  # whole passes over the corpus, the last one cut at the size asked
        for start in range(0, len(records), 2000):
            chunk = records[start:start + 2000]
            table = pa.table({"text": [t for t, _ in chunk], "meta": [{"domain": d} for _, d in chunk]})
            pq.write_table(table, out / f"part-{part:05d}.parquet")
            part += 1
            documents += len(chunk)
            written += sum(counts[start:start + 2000])
            if written >= tokens:
                break
    done.write_text(json.dumps({"documents": documents, "tokens": written, "corpus_tokens": sum(counts)}))
    return out, documents


_TREE_RSS = """
import threading, psutil
PEAK = {"tree_mb": 0.0}
def _sample():  # the sum over this process and its workers: what the machine must hold at once
    me = psutil.Process()
    while True:
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        PEAK["tree_mb"] = max(PEAK["tree_mb"], total / 2**20)
        threading.Event().wait(0.1)
threading.Thread(target=_sample, daemon=True).start()
"""

_PIPELINE_CHILD = _TREE_RSS + """
import json, sys, time
start = time.perf_counter()
from data.dataset_source import DatasetSpec
from data.prepare import prepare_dataset
spec = DatasetSpec(sys.argv[1], domain_field="meta.domain", streaming=sys.argv[4] == "stream")
budget = int(sys.argv[5]) or None
out = prepare_dataset(spec, "llama3", 1024, sys.argv[2], num_proc=int(sys.argv[3]), overwrite=True, max_tokens=budget)
seconds = time.perf_counter() - start
manifest = json.loads((out / "manifest.json").read_text())
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"seconds": seconds, "tokens": manifest["budget"]["tokens"], "tree_peak_mb": PEAK["tree_mb"],
                  "peak_rss_mb": float(status["VmHWM"].split()[0]) / 1024}))
"""

_BASELINE_CHILD = _TREE_RSS + """
import json, sys, time
start = time.perf_counter()
import datasets, numpy as np, pyarrow.compute as pc
from transformers import AutoTokenizer
from data.tokenizers import resolve_tokenizer_dir
datasets.disable_progress_bars()
tok = AutoTokenizer.from_pretrained(str(resolve_tokenizer_dir("llama3")))
eos = tok.eos_token_id
ds = datasets.load_dataset(sys.argv[1], split="train")
def encode(batch):
    return {"input_ids": [ids + [eos] for ids in tok(batch["text"], add_special_tokens=False)["input_ids"]]}
ds = ds.map(encode, batched=True, num_proc=int(sys.argv[3]), remove_columns=ds.column_names)
ids = pc.list_flatten(ds.data.column("input_ids")).to_numpy().astype(np.uint32)
np.save(sys.argv[2], ids)
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": int(len(ids)), "tree_peak_mb": PEAK["tree_mb"]}))
"""


def _child(code: str, *args: str, cache: Path) -> dict:
    """Run ``code`` in a fresh interpreter with an empty datasets cache (nothing reused)."""
    shutil.rmtree(cache, ignore_errors=True)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_DATASETS_CACHE": str(cache),
                        "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {proc.stderr.strip()[-2000:]}")
    shutil.rmtree(cache, ignore_errors=True)
    # CPU seconds of the child and all its workers: less disturbed than wall time by other load
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"cpu_s": cpu}


def bench_dataset(work: Path, tokens: int, num_proc: int, domains: list[str], debian: bool) -> dict:
    data, documents = build_local_dataset(work, tokens, domains, debian)
    cache, out = work / "hf-cache", work / "ds-shards"
    pipe = _child(_PIPELINE_CHILD, str(data), str(out), str(num_proc), "map", "0", cache=cache)
    base = _child(_BASELINE_CHILD, str(data), str(work / "baseline.npy"), str(num_proc), cache=cache)
    stream = _child(_PIPELINE_CHILD, str(data), str(out), str(num_proc), "stream", "0", cache=cache)
    quarter = _child(_PIPELINE_CHILD, str(data), str(out), str(num_proc), "stream", str(pipe["tokens"] // 4),
                     cache=cache)
    (work / "baseline.npy").unlink()
    shutil.rmtree(out, ignore_errors=True)
    if base["tokens"] != pipe["tokens"]:
        raise RuntimeError(f"the baseline tokenised {base['tokens']:,} tokens, the pipeline {pipe['tokens']:,}")
    return {"documents": documents, "tokens": pipe["tokens"], "pipeline": pipe, "baseline": base,
            "streaming": stream, "streaming_quarter": quarter, "ratio": base["seconds"] / pipe["seconds"],
            "ratio_streaming": base["seconds"] / stream["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="work dir (default: a temp dir, removed at the end)")
    parser.add_argument("--max-mb", type=float, default=4.0, help="corpus MB per pip-only domain")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best is kept)")
    parser.add_argument("--factors", default="1,10,100", help="shard-set size multiples for the memory test")
    parser.add_argument("--sections", default="tokenise,loader,memory,dataset",
                        help="which measurements to run (comma-separated)")
    parser.add_argument("--tokens", default="50M", help="size of the local dataset of the dataset section")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 2,
                        help="tokeniser processes of the dataset section, for both sides")
    parser.add_argument("--domains", default="books,wiki,code",
                        help="corpus domains the dataset is built from (pip-only by default)")
    parser.add_argument("--debian", action="store_true",
                        help="let the dataset's corpus use Debian-packaged sources (apt-get download)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    work = Path(args.work or tempfile.mkdtemp(prefix="data_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if sections & {"tokenise", "loader", "memory"}:
            _shard_sections(work, args, sections)
        if "dataset" in sections:
            _dataset_section(work, args)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _shard_sections(work: Path, args: argparse.Namespace, sections: set[str]) -> None:
    tok = bench_tokenize(work, args.max_mb, args.repeats)  # also writes the shards the others read
    if "tokenise" in sections:
        print(f"[tokenise] {tok['text_mb']:.1f} MB text, {tok['tokens']:,} tokens: bare tokenizers "
              f"{tok['bare_tok_per_s'] / 1e6:.2f} M tok/s, data prepare (2 workers, end to end) "
              f"{tok['prepare_tok_per_s'] / 1e6:.2f} M tok/s -> ratio {tok['ratio']:.2f}x (goal >= 0.8x)")
    if "loader" in sections:
        step = bench_loader_vs_step(work / "shards")
        print(f"[loader ] batch [{step['micro_batch']}, {step['seq_len']}] {step['batch_ms']:.2f} ms vs tiny "
              f"Llama ({step['params'] / 1e6:.2f}M params) train step {step['step_ms']:.1f} ms -> "
              f"{100 * step['fraction']:.2f}% (goal < 5%)")
    if "memory" in sections:
        mem = bench_loader_memory(work / "shards", work, [int(f) for f in args.factors.split(",")])
        for row in mem:
            print(f"[memory ] shards {row['shard_mb']:8.1f} MB -> loader peak RSS {row['peak_rss_mb']:.0f} MB "
                  f"(anonymous {row['anon_mb']:.0f} MB, file-backed {row['file_mb']:.0f} MB)")
        growth = mem[-1]["peak_rss_mb"] / mem[0]["peak_rss_mb"]
        print(f"[memory ] {mem[-1]['shard_mb'] / mem[0]['shard_mb']:.0f}x more data -> {growth:.2f}x peak RSS "
              f"(goal: flat; rows are read with pread from the shard files)")


def _dataset_section(work: Path, args: argparse.Namespace) -> None:
    from data.units import parse_count

    res = bench_dataset(work, parse_count(args.tokens, what="--tokens"), args.num_proc, args.domains.split(","),
                        args.debian)
    pipe, base, stream, quarter = res["pipeline"], res["baseline"], res["streaming"], res["streaming_quarter"]
    rate = lambda r: r["tokens"] / r["seconds"] / 1e6  # noqa: E731
    print(f"[dataset] {res['tokens']:,} Llama-3 tokens in {res['documents']:,} documents, {args.num_proc} processes "
          f"each side, fresh process and datasets cache per run")
    print(f"[dataset] datasets.map(tokenizer) + numpy write {base['seconds']:.1f} s ({rate(base):.2f} M tok/s); "
          f"data prepare --dataset {pipe['seconds']:.1f} s ({rate(pipe):.2f} M tok/s) -> {res['ratio']:.2f}x; "
          f"--streaming {stream['seconds']:.1f} s -> {res['ratio_streaming']:.2f}x (goal >= 1x)")
    print(f"[dataset] CPU seconds, all processes: baseline {base['cpu_s']:.1f}, data prepare --dataset "
          f"{pipe['cpu_s']:.1f} ({base['cpu_s'] / pipe['cpu_s']:.2f}x), --streaming {stream['cpu_s']:.1f} "
          f"({base['cpu_s'] / stream['cpu_s']:.2f}x)")
    print(f"[dataset] peak RSS, main process + workers: streaming all {stream['tokens']:,} tokens "
          f"{stream['tree_peak_mb']:.0f} MB (main {stream['peak_rss_mb']:.0f} MB), a quarter "
          f"{quarter['tree_peak_mb']:.0f} MB (main {quarter['peak_rss_mb']:.0f} MB) -> "
          f"{stream['tree_peak_mb'] / quarter['tree_peak_mb']:.2f}x for 4x the data (goal: flat); not streaming "
          f"{pipe['tree_peak_mb']:.0f} MB; the baseline {base['tree_peak_mb']:.0f} MB")


if __name__ == "__main__":
    main()
