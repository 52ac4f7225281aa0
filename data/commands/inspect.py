"""``data inspect``: summarise and verify a corpus or a shard directory."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from data.cli import BadInput, read_json

EPILOG = """examples:
  data inspect work/shards              # sizes checked against the manifest
  data inspect work/shards --verify     # also re-hash every shard (sha256)
  data inspect work/corpus --json
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="data inspect", description=__doc__.splitlines()[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", help="a shard directory (data prepare) or a corpus directory (data corpus build)")
    p.add_argument("--verify", action="store_true", help="re-hash every shard against the manifest")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def _shard_summary(path: Path, verify: bool) -> dict:
    from data.shards import ShardSet

    shards = ShardSet(path, verify=verify)
    return {"kind": "shards", "path": str(path), "seq_len": shards.seq_len, "vocab_size": shards.vocab_size,
            "tokenizer": shards.manifest["tokenizer"]["name"], "verified": "sha256" if verify else "size",
            "source": {key: shards.manifest[key] for key in ("corpus", "dataset", "budget") if key in shards.manifest},
            "splits": {s: {d: {"sequences": v["sequences"], "tokens": v["tokens"]} for d, v in ds.items()}
                       for s, ds in shards.manifest["splits"].items()}}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = Path(args.path)
    manifest = path / "manifest.json"
    if not manifest.is_file():
        raise BadInput(f"{args.path!r} has no manifest.json; expected a corpus or shard directory")
    doc = read_json(manifest, "manifest")
    if not isinstance(doc, dict):
        raise BadInput(f"{str(manifest)!r} is not a corpus or shard manifest (expected a JSON object)")
    if str(doc.get("format", "")).startswith("prunelaw-shards"):
        info = _shard_summary(path, args.verify)
    else:
        from data.corpus import read_manifest

        domains = read_manifest(path)["domains"]
        info = {"kind": "corpus", "path": str(path),
                "domains": {d: {k: s[k] for k in ("documents", "train", "eval", "bytes")} for d, s in domains.items()}}
    if args.json:
        print(json.dumps(info))
        return 0
    print(json.dumps(info, indent=1))
    return 0
