"""``data prepare``: tokenise a corpus into packed, memory-mapped token shards."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

EPILOG = """examples:
  data prepare --corpus work/corpus --tokenizer work/tok --seq-len 256 --out work/shards
  data prepare --corpus work/corpus --tokenizer llama3 --seq-len 2048 --out work/shards-llama3
  data prepare --corpus work/corpus --tokenizer qwen2.5 --seq-len 1024 --out work/shards-qwen --num-proc 8
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="data prepare", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="corpus directory from 'data corpus build'")
    p.add_argument("--tokenizer", required=True, help="llama3, qwen2.5 or an HF tokenizer directory")
    p.add_argument("--seq-len", type=int, required=True, help="tokens per packed sequence")
    p.add_argument("--out", required=True, help="shard directory to write")
    p.add_argument("--num-proc", type=int, default=2, help="tokenisation worker processes (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard directory")
    p.add_argument("--json", action="store_true", help="print the shard manifest's splits as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from data.prepare import prepare
    from data.shards import ShardSet

    start = time.perf_counter()
    out = prepare(args.corpus, args.tokenizer, args.seq_len, args.out, num_proc=args.num_proc,
                  overwrite=args.overwrite)
    shards = ShardSet(out)
    if args.json:
        print(json.dumps({"path": str(out), "splits": shards.manifest["splits"]}))
        return 0
    print(f"shards written to {out} in {time.perf_counter() - start:.1f} s "
          f"(seq_len {shards.seq_len}, vocab {shards.vocab_size}, {shards.manifest['dtype']})")
    for split, domains in shards.manifest["splits"].items():
        for d, s in domains.items():
            note = "  (shorter than one sequence: not evaluated)" if s["sequences"] == 0 else ""
            print(f"  {split:<5} {d:<12} {s['sequences']:>8} seqs {s['tokens']:>11,} tokens{note}")
    return 0
