"""Calibration samples for pruning methods: N token windows of length L, drawn reproducibly
from a shard directory (chosen split and domains) or from a plain text file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from data.cli import BadInput


def _streams_from_shards(path: Path, split: str, domains: list[str] | None) -> list[np.ndarray]:
    """Each domain's shard viewed as one flat token stream (memory-mapped, nothing copied)."""
    from data.shards import ShardSet

    shards = ShardSet(path)
    have = shards.split_domains(split)
    chosen = have if domains is None else list(domains)
    unknown = [d for d in chosen if d not in have]
    if unknown:
        raise BadInput(f"calibration domain {unknown[0]!r} is not in split {split!r}; allowed: {', '.join(have)}")
    return [shards.sequences(split, d).reshape(-1) for d in chosen]


def _stream_from_text(path: Path, tokenizer) -> list[np.ndarray]:
    if tokenizer is None:
        raise BadInput(f"calibration text {str(path)!r} needs a tokenizer (llama3, qwen2.5 or a directory)")
    if isinstance(tokenizer, (str, os.PathLike)):
        from data.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    ids = tokenizer(path.read_text("utf-8", "replace"), add_special_tokens=False)["input_ids"]
    return [np.asarray(ids, dtype=np.int64)]


def sample_calibration(source: str | os.PathLike, n: int, seq_len: int, *, split: str = "train",
                       domains: list[str] | None = None, seed: int = 0, tokenizer=None) -> torch.Tensor:
    """``n`` non-overlapping windows of ``seq_len`` tokens -> LongTensor ``[n, seq_len]``.

    ``source`` is a shard directory (then ``split``/``domains`` choose where from) or a text
    file (then ``tokenizer`` is needed). Windows are aligned slots of the concatenated token
    streams, chosen without replacement by ``seed``, so domains contribute in proportion to
    their size and no token is used twice.

    Raises:
        BadInput: a missing source, an unknown domain, or fewer than ``n`` windows available.
    """
    if n < 1 or seq_len < 1:
        raise BadInput(f"calibration n={n} and seq_len={seq_len} must be >= 1")
    path = Path(source)
    if path.is_dir():
        streams = _streams_from_shards(path, split, domains)
    elif path.is_file():
        streams = _stream_from_text(path, tokenizer)
    else:
        raise BadInput(f"calibration source {str(source)!r} is neither a shard directory nor a text file")
    slots = [(s, start) for s in range(len(streams)) for start in range(0, len(streams[s]) - seq_len + 1, seq_len)]
    if len(slots) < n:
        raise BadInput(f"calibration source {str(source)!r} holds {len(slots)} windows of {seq_len} tokens; "
                       f"asked for n={n}")
    pick = np.random.default_rng(seed).choice(len(slots), size=n, replace=False)
    out = torch.empty((n, seq_len), dtype=torch.long)
    for row, k in enumerate(pick):
        s, start = slots[k]
        out[row] = torch.from_numpy(np.asarray(streams[s][start:start + seq_len], dtype=np.int64))
    return out
