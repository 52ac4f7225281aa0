"""``data corpus build``: assemble a multi-domain corpus (data.corpus.build_corpus)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from data.cli import BadInput
from data.sources import ALL_DOMAINS, DEFAULT_DOMAINS, EVAL_ONLY_DOMAINS

EPILOG = """examples:
  data corpus build --out work/corpus                       # pip-only books, wiki, code; 2 MB each
  data corpus build --out work/full --max-mb 0 --domains books wiki code dictionary tech shortform news
  data corpus build --out work/mine --domains code --local legal=~/texts/contracts --max-docs 5000
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="data corpus", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["build"], help="what to do")
    p.add_argument("--out", required=True, help="corpus directory to write (jsonl per domain + manifest.json)")
    p.add_argument("--domains", nargs="*", default=list(DEFAULT_DOMAINS),
                   help=f"built-in domains (default: {' '.join(DEFAULT_DOMAINS)}, pip-only); all: "
                        f"{' '.join(ALL_DOMAINS)}; {', '.join(sorted(EVAL_ONLY_DOMAINS))} is eval-only; "
                        f"the others need apt-get download")
    p.add_argument("--local", action="append", default=[], metavar="NAME=PATH",
                   help="extra domain from your own .txt (one document per file), .jsonl/.json or .parquet "
                        "(field 'text'); repeatable (a datasets dataset: 'data prepare --dataset')")
    p.add_argument("--max-docs", type=int, default=None, help="at most this many documents per domain")
    p.add_argument("--max-mb", type=float, default=2.0,
                   help="at most this many MB of text per domain (default 2: a small, fast slice; 0: everything)")
    p.add_argument("--eval-fraction", type=float, default=0.05, help="share of documents in eval (by hash)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus directory")
    p.add_argument("--no-debian", action="store_true",
                   help="skip Debian-packaged sources even where apt-get exists (pip and local sources only)")
    p.add_argument("--json", action="store_true", help="print the per-domain summary as JSON")
    return p


def _locals(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BadInput(f"--local {item!r} must be NAME=PATH")
        out[name] = path
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from data.corpus import build_corpus, read_manifest

    path = build_corpus(args.out, args.domains, local=_locals(args.local), max_docs=args.max_docs,
                        max_mb=args.max_mb or None, eval_fraction=args.eval_fraction, overwrite=args.overwrite,
                        debian=not args.no_debian)
    summary = {d: {k: s[k] for k in ("documents", "train", "eval", "bytes", "duplicates")}
               for d, s in read_manifest(path)["domains"].items()}
    if args.json:
        print(json.dumps({"path": str(path), "domains": summary}))
        return 0
    print(f"corpus written to {path}")
    for d, s in summary.items():
        print(f"  {d:<12} {s['documents']:>7} docs ({s['train']} train / {s['eval']} eval) "
              f"{s['bytes'] / 1e6:8.2f} MB  {s['duplicates']} duplicates removed")
    return 0
