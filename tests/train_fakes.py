"""In-memory corpora for the training tests: structured token streams a tiny model can learn."""

from __future__ import annotations

from typing import Any

import torch


def _sequences(n: int, seq_len: int, vocab: int, step: int, seed: int) -> torch.Tensor:
    """Rows where the next token is mostly (token * step + 1) % vocab: learnable, not trivial."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.empty(n, seq_len, dtype=torch.long)
    rows[:, 0] = torch.randint(0, vocab, (n,), generator=g)
    for t in range(1, seq_len):
        nxt = (rows[:, t - 1] * step + 1) % vocab
        noise = torch.randint(0, vocab, (n,), generator=g)
        rows[:, t] = torch.where(torch.rand(n, generator=g) < 0.15, noise, nxt)
    return rows


class MemStream:
    """Endless, checkpointable stream of [rows, T] batches over a fixed train split."""

    def __init__(self, train: torch.Tensor, rows: int, seed: int) -> None:
        self.train, self.rows, self.pos = train, rows, 0
        self.order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))

    def __iter__(self) -> "MemStream":
        return self

    def __next__(self) -> torch.Tensor:
        idx = [(self.pos + i) % len(self.train) for i in range(self.rows)]
        self.pos += self.rows
        return self.train[self.order[idx]]

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


class MemData:
    """Two domains with different rules; the TokenData protocol of engine.train.sources."""

    def __init__(self, vocab: int = 96, seq_len: int = 32, n_train: int = 512, n_eval: int = 32) -> None:
        self.vocab_size, self.seq_len, self.domains = vocab, seq_len, ["code", "books"]
        self.eval_domains = list(self.domains)
        self.eval = {d: _sequences(n_eval, seq_len, vocab, 3 + k, 100 + k) for k, d in enumerate(self.domains)}
        parts = [_sequences(n_train // 2, seq_len, vocab, 3 + k, k) for k in range(2)]
        self.train = torch.cat(parts)

    def train_batches(self, rows: int, seed: int, reference: dict | None = None) -> MemStream:
        return MemStream(self.train, rows, seed)

    def eval_batches(self, domain: str, batch_size: int, max_sequences: int):
        data = self.eval[domain][:max_sequences]
        return [data[i:i + batch_size] for i in range(0, len(data), batch_size)]

    def calibration(self, n: int, seed: int) -> torch.Tensor:
        return self.train[:n]


def write_shards(path, data: MemData):
    """Write ``data`` as a real ``data.shards`` directory (manifest + .npy memmaps)."""
    import json
    from pathlib import Path

    import numpy as np

    from data.shards import FORMAT

    path = Path(path)
    splits: dict = {"train": {}, "eval": {}}
    for split in splits:
        (path / split).mkdir(parents=True, exist_ok=True)
        for k, domain in enumerate(data.domains):
            arr = data.train[k::2] if split == "train" else data.eval[domain]
            file = path / split / f"{domain}.npy"
            np.save(file, arr.numpy().astype(np.uint16))
            splits[split][domain] = {"file": f"{split}/{domain}.npy", "bytes": file.stat().st_size,
                                     "sequences": len(arr), "tokens": arr.numel(), "sha256": ""}
    (path / "tokenizer").mkdir(exist_ok=True)
    manifest = {"format": FORMAT, "seq_len": data.seq_len, "dtype": "uint16", "vocab_size": data.vocab_size,
                "tokenizer": {"eos_id": 0, "path": "tokenizer"}, "splits": splits}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path
