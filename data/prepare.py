"""``data prepare``: tokenise a corpus with HF ``datasets`` (parallel map) and pack each
domain's documents into fixed-length sequences, EOS between documents, as memory-mappable
``.npy`` shards per split and domain, plus a manifest that makes corruption detectable.

Layout::

    SHARDS/manifest.json
    SHARDS/tokenizer/            the tokenizer (HF directory) the ids come from
    SHARDS/<split>/<domain>.npy  uint16 [n, seq_len] (uint32 when the vocab needs it)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.cli import BadInput
from data.runs import atomic_dir
from data.corpus import manifest_hash, read_manifest

SPLITS = ("train", "eval")
FORMAT = "prunelaw-shards/1"


@dataclass(frozen=True)
class PrepareConfig:
    """What ``prepare`` writes."""

    seq_len: int                 # tokens per packed sequence
    num_proc: int = 2            # datasets.map worker processes
    batch_size: int = 256        # documents per tokenizer call inside a worker
    overwrite: bool = False      # replace an existing shard directory

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise BadInput(f"--seq-len {self.seq_len} must be at least 2")
        if self.num_proc < 1:
            raise BadInput(f"--num-proc {self.num_proc} must be at least 1")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in 4 MB chunks (shards can be larger than memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _tokenize_fn(tokenizer_dir: str, eos_id: int):
    """The batched map function: ids of each document followed by EOS (int32 lists).

    Uses the backend ``tokenizers.Tokenizer`` directly (no offsets, no Python-side padding
    logic): the wrapper's extra work would cost throughput for nothing here.
    """
    state: dict = {}

    def encode(batch: dict) -> dict:
        if "tok" not in state:  # loaded once per worker process, after the fork
            from tokenizers import Tokenizer

            state["tok"] = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
        tok = state["tok"]
        fast = getattr(tok, "encode_batch_fast", tok.encode_batch)
        encs = fast(batch["text"], add_special_tokens=False)
        return {"ids": [enc.ids + [eos_id] for enc in encs]}

    return encode


def _tokenized(files: list[Path], tokenizer_dir: Path, eos_id: int, cfg: PrepareConfig, cache: Path):
    """One ``datasets.Dataset`` of every domain's documents (file order kept) with columns
    ``ids`` and ``split``: a single parallel map, so worker start-up is paid once."""
    import datasets

    datasets.disable_progress_bars()
    ds = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train", cache_dir=str(cache))
    procs = min(cfg.num_proc, max(1, len(ds) // cfg.batch_size))
    keep = [c for c in ds.column_names if c != "split"]
    return ds.map(_tokenize_fn(str(tokenizer_dir), eos_id), batched=True, batch_size=cfg.batch_size,
                  num_proc=procs if procs > 1 else None, remove_columns=keep,
                  features=datasets.Features({"split": datasets.Value("string"),
                                              "ids": datasets.Sequence(datasets.Value("int32"))}))


def _blocks(table, rows: range, split: str, block: int = 2048):
    """Flat int32 token arrays of the rows in ``rows`` whose split is ``split``, block by block
    (memory stays bounded by one block, whatever the corpus size)."""
    import pyarrow.compute as pc

    for start in range(rows.start, rows.stop, block):
        part = table.slice(start, min(block, rows.stop - start))
        part = part.filter(pc.equal(part.column("split"), split))
        for chunk in part.column("ids").chunks:
            yield chunk.flatten().to_numpy(zero_copy_only=False)


def _pack(table, rows: range, split: str, seq_len: int, dtype: np.dtype, path: Path) -> dict:
    """Pack one domain's split into a memory-mapped [n, seq_len] array; the tail shorter than
    one sequence is dropped (and recorded)."""
    total = sum(len(values) for values in _blocks(table, rows, split))
    n_seq = total // seq_len
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_seq, seq_len))
    flat = out.reshape(-1)
    pos, limit = 0, n_seq * seq_len
    for values in _blocks(table, rows, split):
        take = min(len(values), limit - pos)
        if take <= 0:
            break
        flat[pos:pos + take] = values[:take]
        pos += take
    out.flush()
    del flat, out
    documents = sum(part == split for part in table.slice(rows.start, len(rows)).column("split").to_pylist())
    return {"documents": documents, "sequences": n_seq, "tokens": n_seq * seq_len,
            "tokens_raw": total, "tokens_dropped": total - n_seq * seq_len}


def _tokenizer_identity(tok, tok_dir: Path, spec: str) -> dict:
    return {"spec": spec, "name": tok.name_or_path, "vocab_size": len(tok), "eos_id": tok.eos_token_id,
            "eos_token": tok.eos_token, "sha256": sha256_file(tok_dir / "tokenizer.json"), "path": "tokenizer"}


def prepare(corpus: str | os.PathLike, tokenizer: str | os.PathLike, seq_len: int, out: str | os.PathLike,
            *, num_proc: int = 2, overwrite: bool = False) -> Path:
    """Tokenise ``corpus`` with ``tokenizer`` (``llama3``, ``qwen2.5`` or a path) into ``out``.

    Raises:
        BadInput: missing/empty corpus, bad seq_len, unknown tokenizer, existing ``out``.
    """
    from data.tokenizers import load_tokenizer, resolve_tokenizer_dir

    cfg = PrepareConfig(seq_len, num_proc, overwrite=overwrite)
    corpus, out = Path(corpus), Path(out)
    cmanifest = read_manifest(corpus)
    if not cmanifest.get("domains"):
        raise BadInput(f"corpus {str(corpus)!r} has no domains")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise BadInput(f"shard directory {str(out)!r} already exists and is not empty; pass --overwrite")
    tok, tok_dir = load_tokenizer(tokenizer), resolve_tokenizer_dir(tokenizer)
    dtype = np.dtype(np.uint16 if len(tok) <= 1 << 16 else np.uint32)
    with atomic_dir(out) as tmp:
        shutil.copytree(tok_dir, tmp / "tokenizer")
        splits = _write_shards(corpus, cmanifest, tmp, tok_dir, tok.eos_token_id, dtype, cfg)
        manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "seq_len": seq_len, "dtype": dtype.name, "vocab_size": len(tok),
                    "tokenizer": _tokenizer_identity(tok, tok_dir, str(tokenizer)),
                    "corpus": {"path": str(corpus.resolve()), "manifest_sha256": manifest_hash(corpus)},
                    "splits": splits}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), "utf-8")
    return out


def _write_shards(corpus: Path, cmanifest: dict, tmp: Path, tok_dir: Path, eos_id: int, dtype: np.dtype,
                  cfg: PrepareConfig) -> dict:
    cache = tmp / ".hf-cache"  # private datasets cache: removed with the temp dir
    domains = cmanifest["domains"]
    ds = _tokenized([corpus / info["file"] for info in domains.values()], tok_dir, eos_id, cfg, cache)
    table, first = ds.data, 0  # map() output is a fresh table: row i is document i, no indices mapping
    splits: dict[str, dict] = {s: {} for s in SPLITS}
    for domain, info in domains.items():
        rows = range(first, first + info["documents"])
        first = rows.stop
        for split in SPLITS:
            if info.get(split, 0) == 0:
                continue  # e.g. the train split of an eval-only domain
            (tmp / split).mkdir(exist_ok=True)
            path = tmp / split / f"{domain}.npy"
            stats = _pack(table, rows, split, cfg.seq_len, dtype, path)
            stats |= {"file": f"{split}/{domain}.npy", "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            splits[split][domain] = stats
    if first != len(ds):
        raise RuntimeError(f"corpus files hold {len(ds)} documents, its manifest {first}: rebuild the corpus")
    del ds, table
    shutil.rmtree(cache, ignore_errors=True)
    if not any(s["sequences"] for s in splits["train"].values()):
        raise BadInput(f"corpus {str(corpus)!r} yields no train sequence of {cfg.seq_len} tokens; "
                       f"use a smaller --seq-len or a larger corpus")
    return splits

