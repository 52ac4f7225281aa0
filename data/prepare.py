"""``data prepare``: tokenise a corpus (``data corpus build``) or a ``datasets`` dataset and pack
each domain's documents into fixed-length sequences, EOS between documents, as memory-mappable
``.npy`` shards per split and domain, plus a manifest that makes corruption detectable.

Layout::

    SHARDS/manifest.json
    SHARDS/tokenizer/            the tokenizer (HF directory) the ids come from
    SHARDS/<split>/<domain>.npy  uint16 [n, seq_len] (uint32 when the vocab needs it)

Documents stream through a bounded window of tokeniser worker processes in their source
order, and each (split, domain) shard is appended to as they come back: memory holds a few
batches whatever the corpus size, and the shards are the same for any number of workers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from data.cli import BadInput
from data.paths import check_out_apart
from data.corpus import MIN_CHARS, clean_text, doc_hash, manifest_hash, read_manifest, split_of
from data.runs import atomic_dir

SPLITS = ("train", "eval")
FORMAT = "prunelaw-shards/1"


@dataclass(frozen=True)
class PrepareConfig:
    """What ``prepare`` writes."""

    seq_len: int                   # tokens per packed sequence
    num_proc: int = 2              # tokeniser worker processes (1: tokenise in this process)
    batch_size: int = 256          # documents per tokenizer call inside a worker
    overwrite: bool = False        # replace an existing shard directory
    max_tokens: int | None = None  # stop once this many tokens (EOS included) are written (None: all)
    eval_fraction: float = 0.05    # share of a dataset's documents (by text hash) in eval

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise BadInput(f"--seq-len {self.seq_len} must be at least 2")
        most = 4 * (os.cpu_count() or 1)  # beyond that, processes only compete for the same cores
        if not 1 <= self.num_proc <= most:
            raise BadInput(f"--num-proc {self.num_proc} must be between 1 and {most} (4x this machine's CPUs)")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise BadInput(f"--max-tokens {self.max_tokens} must be a positive token count (e.g. 500M, 1B)")
        if not 0.0 < self.eval_fraction < 1.0:
            raise BadInput(f"--eval-fraction {self.eval_fraction} must be in (0, 1)")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file, read in 4 MB chunks (shards can be larger than memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- tokenisation (runs in the worker processes) --------------------------------------------

_WORKER: dict = {}


def _init_worker(tokenizer_file: str, eos_id: int, dtype: str, eval_fraction: float, quiet: bool) -> None:
    """Load the tokenizer once per worker; the backend ``tokenizers.Tokenizer`` directly (no
    offsets, no Python-side padding logic: the wrapper's extra work buys nothing here)."""
    if quiet:  # each worker is one core already: its own thread pool would oversubscribe
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _WORKER.update(tok=Tokenizer.from_file(tokenizer_file), eos=eos_id, dtype=np.dtype(dtype),
                   eval_fraction=eval_fraction)


@dataclass
class Encoded:
    """A batch of documents as token ids: ``flat`` holds every kept document's ids and its EOS
    back to back; ``lengths``, ``is_eval`` and ``kept`` (its index in the batch) are per document."""

    flat: np.ndarray
    lengths: np.ndarray
    is_eval: np.ndarray
    kept: np.ndarray


def _encode(texts: list[str | None], splits: list[str] | None) -> Encoded:
    """Token ids of a batch. ``splits`` given (a built corpus: cleaned, split already) or None
    (a dataset: cleaned here, short documents dropped, the split taken from the text's hash
    exactly as ``data corpus build`` does)."""
    state = _WORKER
    if splits is None:
        cleaned = [clean_text(t) if isinstance(t, str) else "" for t in texts]
        kept = [i for i, t in enumerate(cleaned) if len(t) >= MIN_CHARS]
        texts = [cleaned[i] for i in kept]
        is_eval = np.array([split_of(doc_hash(t), state["eval_fraction"]) == "eval" for t in texts], dtype=bool)
    else:
        kept = range(len(texts))
        is_eval = np.array([s == "eval" for s in splits], dtype=bool)
    tok = state["tok"]
    encs = getattr(tok, "encode_batch_fast", tok.encode_batch)(texts, add_special_tokens=False)
    ids = [enc.ids for enc in encs]
    body = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter(chain.from_iterable(ids), dtype=state["dtype"], count=int(body.sum()))
    flat = np.insert(tokens, np.cumsum(body), state["eos"]).astype(state["dtype"], copy=False)
    return Encoded(flat, body + 1, is_eval, np.asarray(kept, dtype=np.int64))


Batch = tuple[list, list[str] | None, list[str]]  # texts, splits (or None), domains


def _encoded(batches: Iterable[Batch], cfg: PrepareConfig, init: tuple,
             documents: int | None = None) -> Iterator[tuple[Encoded, list[str]]]:
    """``(Encoded, domains)`` per batch, in order. At most two batches per worker are in
    flight, so reading never runs ahead of tokenising (memory stays bounded). ``documents``
    (where known) caps the workers at one per batch: starting one costs a tokenizer load."""
    procs = cfg.num_proc if documents is None else min(cfg.num_proc, -(-documents // cfg.batch_size))
    if procs <= 1:
        _init_worker(*init[:-1], quiet=False)
        for texts, splits, domains in batches:
            yield _encode(texts, splits), domains
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent holds pyarrow / datasets threads that a fork would copy mid-state
    pool = ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=init)
    pending: deque = deque()
    try:
        for texts, splits, domains in batches:
            pending.append((pool.submit(_encode, texts, splits), domains))
            if len(pending) >= 2 * procs:
                future, doms = pending.popleft()
                yield future.result(), doms
        while pending:
            future, doms = pending.popleft()
            yield future.result(), doms
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- packing ---------------------------------------------------------------------------------

class _ShardWriter:
    """One (split, domain) shard: documents appended in order to a raw file, which ``close``
    turns into the ``.npy`` of whole sequences (the tail shorter than one is dropped and
    recorded). The raw file avoids knowing the shard's size before the stream ends."""

    def __init__(self, root: Path, split: str, domain: str, dtype: np.dtype) -> None:
        (root / split).mkdir(exist_ok=True)
        self.root, self.split, self.domain, self.dtype = root, split, domain, dtype
        self.raw = root / split / f".{domain}.raw"
        self.handle = self.raw.open("wb")
        self.documents = self.tokens = 0

    def add(self, ids: np.ndarray, documents: int) -> None:
        self.handle.write(ids.tobytes())
        self.tokens += len(ids)
        self.documents += documents

    def close(self, seq_len: int) -> dict:
        self.handle.close()
        n_seq = self.tokens // seq_len
        path = self.root / self.split / f"{self.domain}.npy"
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": (n_seq, seq_len)})
        digest, left = hashlib.sha256(header.getvalue()), n_seq * seq_len * self.dtype.itemsize
        with path.open("wb") as out, self.raw.open("rb") as raw:
            out.write(header.getvalue())
            while left > 0:
                block = raw.read(min(left, 1 << 22))
                out.write(block)
                digest.update(block)
                left -= len(block)
        self.raw.unlink()
        return {"documents": self.documents, "sequences": n_seq, "tokens": n_seq * seq_len,
                "tokens_raw": self.tokens, "tokens_dropped": self.tokens - n_seq * seq_len,
                "file": f"{self.split}/{self.domain}.npy", "bytes": path.stat().st_size,
                "sha256": digest.hexdigest()}


@dataclass
class _Written:
    splits: dict[str, dict]
    documents: int
    tokens: int
    budget_reached: bool


def _pack(encoded: Iterable[tuple[Encoded, list[str]]], root: Path, dtype: np.dtype, cfg: PrepareConfig) -> _Written:
    """Append every batch's documents to their (split, domain) shard until the token budget."""
    writers: dict[tuple[str, str], _ShardWriter] = {}
    documents = tokens = 0
    budget = cfg.max_tokens
    for enc, domains in encoded:
        flat, lengths = enc.flat, enc.lengths
        if budget is not None and tokens + len(flat) >= budget:
            flat, lengths = _cut(flat, lengths, budget - tokens)
        doc_keys = list(zip((SPLITS[int(e)] for e in enc.is_eval), (domains[i] for i in enc.kept)))[:len(lengths)]
        for key in dict.fromkeys(doc_keys):  # first-seen order: the manifest lists domains as they come
            mask = np.fromiter((k == key for k in doc_keys), dtype=bool, count=len(doc_keys))
            if key not in writers:
                writers[key] = _ShardWriter(root, *key, dtype)
            writers[key].add(flat[np.repeat(mask, lengths)], int(mask.sum()))
        documents += len(lengths)
        tokens += len(flat)
        if budget is not None and tokens >= budget:
            break
    splits: dict[str, dict] = {s: {} for s in SPLITS}
    for (split, domain), writer in writers.items():
        splits[split][domain] = writer.close(cfg.seq_len)
    return _Written(splits, documents, tokens, budget is not None and tokens >= budget)


def _cut(flat: np.ndarray, lengths: np.ndarray, room: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``room`` tokens of a batch: the document that crosses the budget is cut."""
    ends = np.cumsum(lengths)
    last = int(np.searchsorted(ends, room))  # the document holding token number ``room``
    kept = lengths[:last + 1].copy()
    kept[-1] -= int(ends[last]) - room
    return flat[:room], kept


# -- sources and the public entry points -----------------------------------------------------

def _corpus_batches(corpus: Path, cmanifest: dict, batch_size: int) -> Iterator[Batch]:
    """A built corpus's documents, domain by domain in manifest order, with their recorded split
    (which may differ from the hash: eval-only domains, the forced eval document)."""
    for domain, info in cmanifest["domains"].items():
        count = 0
        with (corpus / info["file"]).open(encoding="utf-8") as handle:
            while lines := [line for _, line in zip(range(batch_size), handle)]:
                records = [json.loads(line) for line in lines]
                count += len(records)
                yield [r["text"] for r in records], [r["split"] for r in records], [domain] * len(records)
        if count != info["documents"]:
            raise RuntimeError(f"corpus file {info['file']} holds {count} documents, its manifest "
                               f"{info['documents']}: rebuild the corpus")


def _dataset_batches(opened, batch_size: int) -> Iterator[Batch]:
    from data.dataset_source import batches

    for texts, domains in batches(opened, batch_size):
        yield texts, None, domains


def _tokenizer_identity(tok, tok_dir: Path, spec: str) -> dict:
    return {"spec": spec, "name": tok.name_or_path, "vocab_size": len(tok), "eos_id": tok.eos_token_id,
            "eos_token": tok.eos_token, "sha256": sha256_file(tok_dir / "tokenizer.json"), "path": "tokenizer"}


def _check_out(out: Path, cfg: PrepareConfig, inputs: dict[str, Path | None]) -> None:
    check_out_apart(out, inputs)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise BadInput(f"shard directory {str(out)!r} already exists and is not empty; pass --overwrite")


def prepare(corpus: str | os.PathLike, tokenizer: str | os.PathLike, seq_len: int, out: str | os.PathLike,
            *, num_proc: int = 2, overwrite: bool = False, max_tokens: int | None = None) -> Path:
    """Tokenise a built corpus with ``tokenizer`` (``llama3``, ``qwen2.5`` or a path) into ``out``.

    Raises:
        BadInput: missing/empty corpus, bad seq_len, unknown tokenizer, existing ``out``, an
            ``out`` that is or holds one of the inputs.
    """
    cfg = PrepareConfig(seq_len, num_proc, overwrite=overwrite, max_tokens=max_tokens)
    corpus, out = Path(corpus), Path(out)
    cmanifest = read_manifest(corpus)
    if not cmanifest.get("domains"):
        raise BadInput(f"corpus {str(corpus)!r} has no domains")
    _check_out(out, cfg, {"--corpus": corpus, "--tokenizer": _named_path(tokenizer)})
    origin = {"corpus": {"path": str(corpus.resolve()), "manifest_sha256": manifest_hash(corpus)}}
    documents = sum(info["documents"] for info in cmanifest["domains"].values())
    return _write(lambda: _corpus_batches(corpus, cmanifest, cfg.batch_size), documents, origin, tokenizer, cfg,
                  out, f"corpus {str(corpus)!r}")


def prepare_dataset(dataset, tokenizer: str | os.PathLike, seq_len: int, out: str | os.PathLike, *,
                    num_proc: int = 2, overwrite: bool = False, max_tokens: int | None = None,
                    eval_fraction: float = 0.05) -> Path:
    """Tokenise a ``datasets`` dataset (a ``data.dataset_source.DatasetSpec``) into ``out``.

    Each document is cleaned, split into train/eval by its text's hash and packed exactly as a
    built corpus's would be; documents shorter than ``data.corpus.MIN_CHARS`` are skipped. The
    dataset is not de-duplicated (that would hold every document's hash in memory).

    Raises:
        BadInput: as ``prepare``, plus an unknown dataset/config/split and a missing text or
            domain field, all before any tokenising.
    """
    from data.dataset_source import open_dataset
    from data.tokenizers import resolve_tokenizer_dir

    cfg = PrepareConfig(seq_len, num_proc, overwrite=overwrite, max_tokens=max_tokens, eval_fraction=eval_fraction)
    out = Path(out)
    _check_out(out, cfg, {"--dataset": dataset.local_path, "--tokenizer": _named_path(tokenizer)})
    resolve_tokenizer_dir(tokenizer)  # an unknown tokenizer is refused before the dataset loads
    opened = open_dataset(dataset)
    origin = {"dataset": opened.source | {"eval_fraction": eval_fraction}}
    documents = len(opened.data) if hasattr(opened.data, "__len__") else None  # unknown when streamed
    return _write(lambda: _dataset_batches(opened, cfg.batch_size), documents, origin, tokenizer, cfg, out,
                  f"dataset {dataset.name!r}")


def _named_path(tokenizer: str | os.PathLike) -> Path | None:
    """The tokenizer directory the user named, if a path (``llama3``/``qwen2.5`` live in the cache)."""
    path = Path(tokenizer).expanduser()
    return path if path.exists() else None


def _write(batches, documents: int | None, origin: dict, tokenizer: str | os.PathLike, cfg: PrepareConfig, out: Path, what: str) -> Path:
    from data.tokenizers import load_tokenizer, resolve_tokenizer_dir

    tok, tok_dir = load_tokenizer(tokenizer), resolve_tokenizer_dir(tokenizer)
    dtype = np.dtype(np.uint16 if len(tok) <= 1 << 16 else np.uint32)
    init = (str(tok_dir / "tokenizer.json"), tok.eos_token_id, dtype.name, cfg.eval_fraction, True)
    with atomic_dir(out) as tmp:
        shutil.copytree(tok_dir, tmp / "tokenizer")
        written = _pack(_encoded(batches(), cfg, init, documents), tmp, dtype, cfg)
        if not any(s["sequences"] for s in written.splits["train"].values()):
            raise BadInput(f"{what} yields no train sequence of {cfg.seq_len} tokens; "
                           f"use a smaller --seq-len or more data")
        if not any(s["sequences"] for s in written.splits["eval"].values()):  # eval_loss would be undefined
            raise BadInput(f"{what} yields no eval sequence of {cfg.seq_len} tokens; use a smaller --seq-len, "
                           f"a larger eval fraction, a larger --max-tokens or more data")
        manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "seq_len": cfg.seq_len, "dtype": dtype.name, "vocab_size": len(tok),
                    "tokenizer": _tokenizer_identity(tok, tok_dir, str(tokenizer)), **origin,
                    "budget": {"max_tokens": cfg.max_tokens, "reached": written.budget_reached,
                               "documents": written.documents, "tokens": written.tokens},
                    "splits": written.splits}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), "utf-8")
    return out
