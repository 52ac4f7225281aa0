"""Build a multi-domain text corpus: one document per record, exact duplicates removed, a
deterministic train/eval split by document hash, and a manifest naming every document's
source and licence.

On disk (``build_corpus`` output)::

    CORPUS/<domain>.jsonl   records {text, source, licence, doc_id, split}
    CORPUS/manifest.json    per-domain counts, sources, licences, every document's id/split

Any local corpus (text files, jsonl/json with a ``text`` field, parquet with a ``text``
column) is read through HF ``datasets`` and treated exactly like a built-in source.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data import assets
from data.cli import BadInput
from data.paths import check_out_apart
from data.runs import atomic_dir
from data.sources import ALL_DOMAINS, DEFAULT_DOMAINS, EVAL_ONLY_DOMAINS, Source, sources_for

MANIFEST = "manifest.json"
MIN_CHARS = 32  # shorter "documents" (blank fortunes, stub entries) carry no signal


@dataclass(frozen=True)
class CorpusConfig:
    """What ``build_corpus`` assembles."""

    domains: tuple[str, ...] = DEFAULT_DOMAINS  # built-in domains (see data.sources.ALL_DOMAINS)
    local: dict[str, str] = field(default_factory=dict)  # extra domain name -> local file/dir
    max_docs: int | None = None   # per-domain cap on documents kept (None: all)
    max_mb: float | None = None   # per-domain cap on UTF-8 megabytes kept (None: all)
    eval_fraction: float = 0.05   # share of documents (by hash) in the eval split
    overwrite: bool = False       # replace an existing corpus directory
    debian: bool = True           # use Debian-packaged sources where apt-get exists (else skip them)

    def __post_init__(self) -> None:
        unknown = [d for d in self.domains if d not in ALL_DOMAINS]
        if unknown:
            raise BadInput(f"unknown domain {unknown[0]!r}; allowed: {', '.join(ALL_DOMAINS)}")
        clash = sorted(set(self.local) & set(self.domains))
        if clash:
            raise BadInput(f"local domain {clash[0]!r} clashes with a built-in domain; pick another name")
        if not self.domains and not self.local:
            raise BadInput("no domains selected; pass --domains and/or --local NAME=PATH")
        if not 0.0 < self.eval_fraction < 1.0:
            raise BadInput(f"eval fraction {self.eval_fraction} must be in (0, 1)")
        for name, value in (("--max-docs", self.max_docs), ("--max-mb", self.max_mb)):
            # ``not value > 0`` also refuses NaN; infinity is "everything", spelled 0 on the CLI
            if value is not None and (not value > 0 or math.isinf(value)):
                raise BadInput(f"{name} {value} must be a positive finite number (0 on the CLI: no cap)")


def doc_hash(text: str) -> str:
    """sha256 of the document text: its identity for de-duplication and the split."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_of(digest: str, eval_fraction: float) -> str:
    """``eval`` when the hash's leading 64 bits fall below the eval fraction: stable across
    runs, machines and corpus slices, since it depends on nothing but the text."""
    return "eval" if int(digest[:16], 16) / 2**64 < eval_fraction else "train"


def clean_text(text: str) -> str:
    # Normalise newlines and trailing space so that CRLF copies count as exact duplicates.
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip()


def local_source(name: str, path: str) -> Source:
    """A user's corpus as a source, read with HF ``datasets`` (text, jsonl/json, parquet)."""
    root = Path(path)
    if root.is_dir() and ((root / "state.json").is_file() or (root / "dataset_dict.json").is_file()):
        raise BadInput(f"--local {name}={path!r} is a datasets save_to_disk directory, not text files; "
                       f"tokenise it with 'data prepare --dataset {path} --text-field FIELD'")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    files = [p for p in files if p.suffix in (".txt", ".jsonl", ".json", ".parquet")]
    if not root.exists() or not files:
        raise BadInput(f"local corpus {path!r} for domain {name!r} has no .txt/.jsonl/.json/.parquet files")
    kinds = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
    kind = kinds[files[0].suffix]
    if any(kinds[p.suffix] != kind for p in files):
        raise BadInput(f"local corpus {path!r} mixes file kinds; use one of .txt, .jsonl/.json, .parquet")

    def read() -> Iterator[tuple[str, str]]:
        import datasets  # heavy: only when a local corpus is used

        datasets.disable_progress_bars()
        extra = {"sample_by": "document"} if kind == "text" else {}  # one .txt file = one document
        ds = datasets.load_dataset(kind, data_files=[str(p) for p in files], split="train", **extra)
        if "text" not in ds.column_names:
            raise BadInput(f"local corpus {path!r} has no 'text' field (fields: {', '.join(ds.column_names)})")
        for i, text in enumerate(ds["text"]):
            yield f"{root.name}#{i}", text or ""

    return Source(f"local:{root.resolve()}", name, "user-provided (see the source)", read, needs="none")


@dataclass
class _DomainStats:
    documents: int = 0
    train: int = 0
    eval: int = 0
    bytes: int = 0
    duplicates: int = 0
    sources: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _collect(domain: str, sources: Sequence[Source], cfg: CorpusConfig, seen: set[str],
             out, index: list[dict]) -> _DomainStats:
    """Stream one domain's documents into ``out`` (a jsonl handle) within the caps."""
    stats = _DomainStats()
    cap_bytes = None if cfg.max_mb is None else int(cfg.max_mb * 1e6)
    for src in sources:
        if src.needs == "debian" and not (cfg.debian and assets.debian_available()):
            stats.skipped.append(src.name)  # e.g. Jane Austen in `books` on a machine without apt
            continue
        stats.sources[src.name] = src.licence
        for origin, raw in src.reader():
            text = clean_text(raw)
            if len(text) < MIN_CHARS:
                continue
            digest = doc_hash(text)
            if digest in seen:
                stats.duplicates += 1
                continue
            seen.add(digest)
            split = "eval" if domain in EVAL_ONLY_DOMAINS else split_of(digest, cfg.eval_fraction)
            record = {"text": text, "source": f"{src.name}/{origin}", "licence": src.licence,
                      "doc_id": digest[:20], "split": split}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            index.append({k: record[k] for k in ("doc_id", "source", "licence", "split")} | {"domain": domain})
            stats.documents += 1
            stats.bytes += len(text.encode("utf-8"))
            setattr(stats, split, getattr(stats, split) + 1)
            if (cfg.max_docs and stats.documents >= cfg.max_docs) or (cap_bytes and stats.bytes >= cap_bytes):
                return stats
    return stats


def _ensure_eval(path: Path, stats: _DomainStats, index: list[dict], domain: str) -> None:
    """A small slice can leave a domain without eval documents; then the document with the
    smallest hash (again deterministic) moves to eval so every domain can be evaluated."""
    if stats.eval or stats.documents < 2:
        return
    records = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    pick = min(range(len(records)), key=lambda i: records[i]["doc_id"])
    records[pick]["split"] = "eval"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    for entry in index:
        if entry["domain"] == domain and entry["doc_id"] == records[pick]["doc_id"]:
            entry["split"] = "eval"
    stats.train, stats.eval = stats.train - 1, 1


def build_corpus(out: str | os.PathLike, domains: Sequence[str] = DEFAULT_DOMAINS, *,
                 local: dict[str, str] | None = None, max_docs: int | None = None,
                 max_mb: float | None = None, eval_fraction: float = 0.05,
                 overwrite: bool = False, debian: bool = True) -> Path:
    """Assemble the corpus into ``out`` and return its path.

    Written to a temporary sibling directory and renamed at the end, so a failure (or a bad
    input found half way) never leaves a damaged corpus behind.

    Raises:
        BadInput: an unknown domain, an empty local corpus, a domain without documents, or an
            existing ``out`` without ``overwrite``.
    """
    cfg = CorpusConfig(tuple(domains), dict(local or {}), max_docs, max_mb, eval_fraction, overwrite, debian)
    out = Path(out)
    check_out_apart(out, {f"--local {name}": path for name, path in cfg.local.items()})
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise BadInput(f"corpus directory {str(out)!r} already exists and is not empty; pass --overwrite")
    plan = {d: sources_for(d) for d in cfg.domains} | {n: [local_source(n, p)] for n, p in cfg.local.items()}
    with atomic_dir(out) as tmp:
        manifest = _write_domains(tmp, plan, cfg)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), "utf-8")
    return out


def _write_domains(tmp: Path, plan: dict[str, list[Source]], cfg: CorpusConfig) -> dict:
    seen: set[str] = set()  # shared across domains: a text appears once in the whole corpus
    index: list[dict] = []
    domains: dict[str, dict] = {}
    for domain, sources in plan.items():
        path = tmp / f"{domain}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            stats = _collect(domain, sources, cfg, seen, handle, index)
        if stats.documents == 0:
            used = ", ".join(stats.sources) or "none usable"
            extra = f"; skipped (need apt-get): {', '.join(stats.skipped)}" if stats.skipped else ""
            raise BadInput(f"domain {domain!r} has no documents (sources: {used}{extra})")
        _ensure_eval(path, stats, index, domain)
        domains[domain] = stats.__dict__ | {"file": path.name, "eval_only": domain in EVAL_ONLY_DOMAINS}
    return {"format": "prunelaw-corpus/1", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": {"max_docs": cfg.max_docs, "max_mb": cfg.max_mb, "eval_fraction": cfg.eval_fraction},
            "domains": domains, "documents": index}



def read_manifest(corpus: str | os.PathLike) -> dict:
    """The manifest of a built corpus; BadInput when the directory is not one."""
    path = Path(corpus) / MANIFEST
    if not path.is_file():
        raise BadInput(f"{str(corpus)!r} is not a corpus directory (no {MANIFEST}); build one with 'data corpus build'")
    return json.loads(path.read_text("utf-8"))


def manifest_hash(corpus: str | os.PathLike) -> str:
    """sha256 of the corpus manifest: the corpus identity recorded in shard manifests."""
    return hashlib.sha256((Path(corpus) / MANIFEST).read_bytes()).hexdigest()
