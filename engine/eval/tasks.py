"""The offline perplexity task: held-out documents of the project's corpus as lm-eval tasks.

``corpus_ppl`` is a ``loglikelihood_rolling`` task (the harness's wikitext recipe: word and
byte perplexity, bits per byte) over the eval split of a corpus built by ``data corpus build``;
``corpus_ppl_<domain>`` restricts it to one domain. The split is the one the training eval
shards were tokenised from, so a model is scored on text no run trained on.

Written as ordinary lm-eval task YAML plus a local JSONL dataset (``dataset_path: json``),
loaded through a ``TaskManager`` include path: the same directory works with the harness's
own CLI (``lm_eval --include_path DIR --tasks corpus_ppl``). torch-free, lm-eval-free.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from data.cli import BadInput, read_json

TASK = "corpus_ppl"
"""Every eval document of the source; ``corpus_ppl_<domain>`` holds one domain's."""
TEXT_SUFFIXES = (".txt", ".md")
JSON_SUFFIXES = (".jsonl", ".json")
METRICS = (  # the harness's own aggregations for rolling loglikelihoods (lower is better)
    {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
    {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
    {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
)


@dataclass(frozen=True)
class Documents:
    """Held-out texts per domain, and where they came from."""

    source: str
    """What the user passed as ``--data`` (corpus, shard directory or text file)."""
    by_domain: dict[str, list[str]]

    def sha256(self) -> str:
        """Identity of the exact texts scored (recorded with the results)."""
        digest = hashlib.sha256()
        for domain in sorted(self.by_domain):
            for text in self.by_domain[domain]:
                digest.update(f"{domain}\0{text}\0".encode())
        return digest.hexdigest()


def task_names(domains: list[str]) -> list[str]:
    """The local tasks a source with ``domains`` provides: all of them, then one per domain."""
    return [TASK] + [f"{TASK}_{d}" for d in domains]


def is_local(name: str) -> bool:
    return name == TASK or name.startswith(f"{TASK}_")


def _corpus_documents(corpus: Path) -> dict[str, list[str]]:
    from data.corpus import read_manifest

    by_domain: dict[str, list[str]] = {}
    for domain, info in read_manifest(corpus)["domains"].items():
        with (corpus / info["file"]).open(encoding="utf-8") as handle:
            texts = [r["text"] for r in map(json.loads, handle) if r.get("split") == "eval"]
        if texts:
            by_domain[domain] = texts
    return by_domain


def _shard_corpus(shards: Path) -> Path:
    """The corpus a shard directory was prepared from, if it is still as it was then."""
    from data.corpus import manifest_hash

    origin = (read_json(shards / "manifest.json", "shard manifest") or {}).get("corpus") or {}
    corpus = Path(origin.get("path", ""))
    if not origin.get("path") or not (corpus / "manifest.json").is_file():
        raise BadInput(f"--data {str(shards)!r}: its corpus {origin.get('path')!r} is gone; "
                       "pass the corpus directory (data corpus build) or a text file")
    if origin.get("manifest_sha256") != manifest_hash(corpus):
        raise BadInput(f"--data {str(shards)!r}: corpus {str(corpus)!r} changed since these shards were "
                       f"prepared; pass --data {str(corpus)!r} to evaluate on it as it is now")
    return corpus


def _file_documents(path: Path) -> dict[str, list[str]]:
    """A ``.txt``/``.md`` file (documents split at blank lines) or a ``.jsonl``/``.json`` file
    of ``{"text": ...}`` records; the file's stem names the domain."""
    text = path.read_text("utf-8")
    if path.suffix.lower() in TEXT_SUFFIXES:
        texts = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    else:
        try:
            rows = json.loads(text) if path.suffix.lower() == ".json" else [json.loads(l) for l in text.splitlines() if l.strip()]
        except json.JSONDecodeError as exc:
            raise BadInput(f"--data {str(path)!r} is not valid JSON ({exc})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("text"), str) for r in rows):
            raise BadInput(f"--data {str(path)!r} must hold records with a string 'text' field")
        texts = [r["text"] for r in rows if r["text"].strip()]
    return {path.stem: texts} if texts else {}


def read_documents(source: str) -> Documents:
    """Held-out documents from a corpus directory, a shard directory or a text/JSONL file.

    Raises:
        BadInput: a path that is none of these, or one without a single eval document.
    """
    path = Path(source)
    if (path / "manifest.json").is_file():
        manifest = read_json(path / "manifest.json", "manifest")
        is_shards = isinstance(manifest, dict) and "splits" in manifest
        by_domain = _corpus_documents(_shard_corpus(path) if is_shards else path)
    elif path.is_file() and path.suffix.lower() in TEXT_SUFFIXES + JSON_SUFFIXES:
        try:
            by_domain = _file_documents(path)
        except UnicodeDecodeError:
            raise BadInput(f"--data {source!r} is not UTF-8 text") from None
    else:
        raise BadInput(f"--data {source!r} is not a corpus directory, a shard directory or a "
                       f"{'/'.join(TEXT_SUFFIXES + JSON_SUFFIXES)} file")
    if not by_domain:
        raise BadInput(f"--data {source!r} holds no eval documents")
    return Documents(source, by_domain)


def _task_config(name: str, data_file: Path, cache: Path) -> dict:
    return {
        "task": name,
        "dataset_path": "json",
        # the cache beside the data: nothing lands in the user's HF cache, nothing is fetched
        "dataset_kwargs": {"data_files": {"test": str(data_file)}, "cache_dir": str(cache)},
        "output_type": "loglikelihood_rolling",
        "test_split": "test",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [dict(m) for m in METRICS],
        "metadata": {"version": 1.0},
    }


def write_tasks(docs: Documents, out: Path) -> list[str]:
    """Write the task YAMLs and their JSONL datasets into ``out``; returns the task names."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    domains = sorted(docs.by_domain)
    names = task_names(domains)
    for name in names:
        picked = domains if name == TASK else [name[len(TASK) + 1:]]
        data_file = out / f"{name}.jsonl"
        with data_file.open("w", encoding="utf-8") as handle:
            for domain in picked:
                for text in docs.by_domain[domain]:
                    handle.write(json.dumps({"text": text, "domain": domain}, ensure_ascii=False) + "\n")
        config = _task_config(name, data_file.resolve(), (out / "hf_cache").resolve())
        (out / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    return names
