"""``data tokenizer train|show``: train a byte-level BPE or load a named/local tokenizer."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

EPILOG = """examples:
  data tokenizer train --corpus work/corpus --vocab 4096 --out work/tok
  data tokenizer show llama3
  data tokenizer show qwen2.5 --text "Hello world"
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="data tokenizer", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    t = sub.add_parser("train", help="train a byte-level BPE on a corpus's train split")
    t.add_argument("--corpus", required=True, help="corpus directory from 'data corpus build'")
    t.add_argument("--vocab", type=int, default=4096, help="vocabulary size, EOS included (default 4096)")
    t.add_argument("--out", required=True, help="HF tokenizer directory to write")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty --out directory that is not an earlier 'data tokenizer train' output")
    s = sub.add_parser("show", help="load a tokenizer (llama3, qwen2.5 or a directory) and describe it")
    s.add_argument("spec", help="llama3, qwen2.5 or an HF tokenizer directory")
    s.add_argument("--text", default=None, help="also print the ids of this text")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from data.cli import check_output_dir
    from data.tokenizers import OWN_MARKER, load_tokenizer, resolve_tokenizer_dir, train_bpe

    if args.action == "train":
        from data.corpus import read_manifest

        read_manifest(args.corpus)  # BadInput on a missing corpus before any work
        check_output_dir(args.out, overwrite=args.overwrite, own_marker=OWN_MARKER)
        out = train_bpe(args.corpus, args.vocab, args.out)
        tok = load_tokenizer(out)
        print(f"tokenizer written to {out} (vocab {len(tok)}, eos {tok.eos_token!r} = {tok.eos_token_id})")
        return 0
    tok = load_tokenizer(args.spec)
    info = {"spec": args.spec, "path": str(resolve_tokenizer_dir(args.spec)), "vocab_size": len(tok),
            "eos_token": tok.eos_token, "eos_id": tok.eos_token_id}
    if args.text is not None:
        info["ids"] = tok(args.text, add_special_tokens=False)["input_ids"]
    print(json.dumps(info))
    return 0
