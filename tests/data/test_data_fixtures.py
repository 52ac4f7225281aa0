"""Shared, session-cached data for the tests/data/test_data_*.py files (no tests in here).

The corpus, tokenizer and shards are built once per pytest session under the session's base
temp dir and reused by every data test module. Network-free: the ``code`` domain is the
Python stdlib on disk and the ``docs`` domain is a local jsonl of real English prose (the
stdlib's module docstrings), which also exercises the bring-your-own-corpus path.
"""

from __future__ import annotations

import ast
import json
import sysconfig
from pathlib import Path

SEQ_LEN = 64
VOCAB = 512


def write_docstring_corpus(path: Path, limit: int = 400) -> Path:
    """A jsonl of real prose: module docstrings of the stdlib (at least 200 chars each)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rows = []
    for file in sorted(root.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(file.read_text("utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if doc and len(doc) >= 200:
            rows.append({"text": doc, "title": file.stem})
        if len(rows) >= limit:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


def built(tmp_path_factory) -> dict[str, Path]:
    """Corpus -> BPE -> shards, built on first use in this session, then reused."""
    base = tmp_path_factory.getbasetemp() / "data_session"
    paths = {"corpus": base / "corpus", "tok": base / "tok", "shards": base / "shards",
             "docs": base / "src" / "docs.jsonl"}
    if (paths["shards"] / "manifest.json").is_file():
        return paths
    from data.corpus import build_corpus
    from data.prepare import prepare
    from data.tokenizers import train_bpe

    write_docstring_corpus(paths["docs"])
    build_corpus(paths["corpus"], ["code"], local={"docs": str(paths["docs"])}, max_mb=0.3,
                 eval_fraction=0.1, overwrite=True)
    train_bpe(paths["corpus"], VOCAB, paths["tok"])
    prepare(paths["corpus"], paths["tok"], SEQ_LEN, paths["shards"], num_proc=2, overwrite=True)
    return paths
