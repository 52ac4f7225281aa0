"""``data prepare``: tokenise a corpus or a ``datasets`` dataset into packed, memory-mapped token shards."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

from data.cli import BadInput

EPILOG = """examples:
  data prepare --corpus work/corpus --tokenizer work/tok --seq-len 256 --out work/shards
  data prepare --corpus work/corpus --tokenizer qwen2.5 --seq-len 1024 --out work/shards-qwen --num-proc 8
  data prepare --dataset cerebras/SlimPajama-627B --domain-field meta.redpajama_set_name --streaming \\
      --max-tokens 1B --tokenizer llama3 --seq-len 2048 --out work/shards-slimpajama --num-proc 16
  data prepare --dataset work/my_saved_dataset --text-field content --tokenizer llama3 --seq-len 2048 --out work/s
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="data prepare", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="corpus directory from 'data corpus build'")
    source.add_argument("--dataset", help="a datasets dataset: hub name (org/name) or a local save_to_disk, "
                                          "arrow, parquet or jsonl directory (or file)")
    p.add_argument("--tokenizer", required=True, help="llama3, qwen2.5 or an HF tokenizer directory")
    p.add_argument("--seq-len", type=int, required=True, help="tokens per packed sequence")
    p.add_argument("--out", required=True, help="shard directory to write")
    p.add_argument("--num-proc", type=int, default=2, help="tokenisation worker processes (default 2)")
    p.add_argument("--max-tokens", default=None,
                   help="stop once this many tokens are written, EOS included (e.g. 500M, 1B; default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shard directory")
    p.add_argument("--json", action="store_true", help="print the shard manifest's splits as JSON")
    d = p.add_argument_group("with --dataset")
    d.add_argument("--config", default=None, help="the dataset's configuration (subset)")
    d.add_argument("--split", default=None, help="the dataset's split to read (default train)")
    d.add_argument("--revision", default=None, help="hub branch, tag or commit (default: the main branch)")
    d.add_argument("--text-field", default="text", help="field holding the text (default text; dotted: a.b)")
    d.add_argument("--domain-field", default=None,
                   help="field naming each document's domain (dotted for nested, e.g. meta.redpajama_set_name); "
                        "default: one domain named after the dataset")
    d.add_argument("--streaming", action="store_true",
                   help="stream the dataset instead of downloading/converting it first (memory stays bounded)")
    d.add_argument("--eval-fraction", type=float, default=0.05, help="share of documents in eval (by text hash)")
    return p


def _max_tokens(text: str | None) -> int | None:
    from data.units import parse_count

    if text is None:
        return None
    try:
        return parse_count(text, what="--max-tokens")
    except ValueError:
        raise BadInput(f"--max-tokens {text!r} must be a positive token count (e.g. 500M, 1B, 2e9)") from None


def _dataset_only(args: argparse.Namespace) -> None:
    """Dataset options given with --corpus would be silently ignored: refuse them."""
    given = [flag for flag, value, default in (("--config", args.config, None), ("--split", args.split, None),
                                               ("--revision", args.revision, None),
                                               ("--text-field", args.text_field, "text"),
                                               ("--domain-field", args.domain_field, None),
                                               ("--streaming", args.streaming, False),
                                               ("--eval-fraction", args.eval_fraction, 0.05)) if value != default]
    if given:
        raise BadInput(f"{given[0]} applies to --dataset only; a corpus has its fields and split already")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from data.prepare import prepare, prepare_dataset
    from data.shards import ShardSet

    start = time.perf_counter()
    common = {"num_proc": args.num_proc, "overwrite": args.overwrite, "max_tokens": _max_tokens(args.max_tokens)}
    if args.corpus is not None:
        _dataset_only(args)
        out = prepare(args.corpus, args.tokenizer, args.seq_len, args.out, **common)
    else:
        from data.dataset_source import DatasetSpec

        spec = DatasetSpec(args.dataset, args.config, args.split, args.revision, args.text_field,
                           args.domain_field, args.streaming)
        out = prepare_dataset(spec, args.tokenizer, args.seq_len, args.out, eval_fraction=args.eval_fraction,
                              **common)
    shards = ShardSet(out)
    if args.json:
        print(json.dumps({"path": str(out), "budget": shards.manifest.get("budget"),
                          "splits": shards.manifest["splits"]}))
        return 0
    budget = shards.manifest.get("budget") or {}
    print(f"shards written to {out} in {time.perf_counter() - start:.1f} s "
          f"(seq_len {shards.seq_len}, vocab {shards.vocab_size}, {shards.manifest['dtype']}"
          f"{', stopped at --max-tokens' if budget.get('reached') else ''})")
    for split, domains in shards.manifest["splits"].items():
        for d, s in domains.items():
            note = "  (shorter than one sequence: not evaluated)" if s["sequences"] == 0 else ""
            print(f"  {split:<5} {d:<12} {s['sequences']:>8} seqs {s['tokens']:>11,} tokens{note}")
    return 0
