"""``data``: corpora, tokenizers and token shards (``python -m data`` or the ``data`` script)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from data.cli import dispatch

COMMANDS: dict[str, tuple[str, str]] = {
    "corpus": ("data.commands.corpus", "build a multi-domain text corpus from offline sources (or your files)"),
    "tokenizer": ("data.commands.tokenizer", "train a byte-level BPE, or fetch/show the Llama-3 / Qwen-2.5 tokenizer"),
    "prepare": ("data.commands.prepare", "tokenise a corpus into packed, memory-mapped token shards"),
    "inspect": ("data.commands.inspect", "show and verify a corpus or a shard directory"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("data", __doc__.splitlines()[0], COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
