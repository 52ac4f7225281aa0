"""``data prepare --dataset``: a ``datasets`` dataset (save_to_disk, parquet, streamed) into the
same shards as a built corpus, offline, with the dataset source in the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from data.__main__ import main as data_main
from data.corpus import build_corpus, clean_text, doc_hash, split_of
from data.prepare import prepare
from data.shards import ShardSet
from test_data_fixtures import built, write_docstring_corpus

SEQ = 32


@pytest.fixture(scope="module")
def dataset_dirs(tmp_path_factory) -> dict[str, Path]:
    """The stdlib's module docstrings as a dataset with a nested domain field (SlimPajama's
    shape: ``meta.redpajama_set_name``), saved with ``save_to_disk`` and as parquet files."""
    import datasets

    root = tmp_path_factory.mktemp("datasets")
    rows = [json.loads(line) for line in write_docstring_corpus(root / "docs.jsonl", 150).read_text().splitlines()]
    names = ["RedPajamaBook", "RedPajama/Wiki"]
    ds = datasets.Dataset.from_dict({"content": [r["text"] for r in rows], "id": list(range(len(rows))),
                                     "meta": [{"redpajama_set_name": names[i % 3 == 0]} for i in range(len(rows))]})
    ds.save_to_disk(str(root / "saved"))
    ds.to_parquet(str(root / "parquet" / "part-00000.parquet"))
    ds.to_json(str(root / "json" / "part-00000.jsonl"))
    (root / "arrow").mkdir()
    shutil.copy(next((root / "saved").glob("*.arrow")), root / "arrow" / "part-00000.arrow")
    return {"saved": root / "saved", "parquet": root / "parquet", "json": root / "json", "arrow": root / "arrow",
            "rows": root / "docs.jsonl", "root": root}


def _prepare(tmp_path, tok, source, *extra, out="shards") -> ShardSet:
    argv = ["prepare", "--dataset", str(source), "--text-field", "content", "--tokenizer", str(tok),
            "--seq-len", str(SEQ), "--out", str(tmp_path / out), "--num-proc", "1", *extra]
    assert data_main(argv) == 0
    return ShardSet(tmp_path / out, verify=True)


def _arrays(shards: ShardSet) -> dict[str, np.ndarray]:
    return {f"{s}/{d}": np.asarray(shards.sequences(s, d)) for s in ("train", "eval") for d in shards.split_domains(s)}


def test_domains_from_a_nested_field_hold_exactly_the_tokenizer_tokens(dataset_dirs, tmp_path, tmp_path_factory,
                                                                       capsys):
    tok_dir = built(tmp_path_factory)["tok"]
    shards = _prepare(tmp_path, tok_dir, dataset_dirs["saved"], "--domain-field", "meta.redpajama_set_name")
    assert shards.domains == ["RedPajama_Wiki", "RedPajamaBook"]  # as they come; "/" made file-safe
    tok = AutoTokenizer.from_pretrained(str(shards.tokenizer_path))
    texts = [clean_text(json.loads(line)["text"]) for line in dataset_dirs["rows"].read_text().splitlines()]
    for split in ("train", "eval"):
        expected: list[int] = []
        for i, text in enumerate(texts):
            if i % 3 != 0 and split_of(doc_hash(text), 0.05) == split:  # the book documents
                expected += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        arr = shards.sequences(split, "RedPajamaBook")
        assert arr.shape == (len(expected) // SEQ, SEQ) and arr.reshape(-1).tolist() == expected[: arr.size]
        assert shards.manifest["splits"][split]["RedPajamaBook"]["tokens_raw"] == len(expected)
    source = shards.manifest["dataset"]
    assert source["path"] == str(dataset_dirs["saved"].resolve()) and source["format"] == "save_to_disk"
    assert source["split"] == "train" and source["domain_field"] == "meta.redpajama_set_name"
    assert len(source["fingerprint"]) == 16 and "corpus" not in shards.manifest
    capsys.readouterr()
    assert data_main(["inspect", str(shards.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"]["dataset"] == source


@pytest.mark.parametrize("kind, extra", [("saved", ["--streaming"]), ("parquet", ["--streaming", "--num-proc", "2"]),
                                         ("json", []), ("arrow", [])])
def test_every_local_form_streamed_or_not_gives_the_same_shards(dataset_dirs, tmp_path, tmp_path_factory,
                                                                kind, extra):
    tok_dir = built(tmp_path_factory)["tok"]
    field = ["--domain-field", "meta.redpajama_set_name"]
    saved = _arrays(_prepare(tmp_path, tok_dir, dataset_dirs["saved"], *field, out="a"))
    other = _prepare(tmp_path, tok_dir, dataset_dirs[kind], *field, *extra, out="b")
    source = other.manifest["dataset"]
    assert source["streaming"] == ("--streaming" in extra) and source["path"] == str(dataset_dirs[kind].resolve())
    assert source.get("resolved") or source.get("fingerprint")  # changes with the data
    arrays = _arrays(other)
    assert saved.keys() == arrays.keys() and all(np.array_equal(saved[k], arrays[k]) for k in saved)


def test_the_split_and_tokens_match_the_corpus_path(dataset_dirs, tmp_path, tmp_path_factory):
    """A document lands in the same split with the same tokens whichever way it comes in."""
    tok_dir = built(tmp_path_factory)["tok"]
    via_dataset = _prepare(tmp_path, tok_dir, dataset_dirs["parquet"])
    assert via_dataset.domains == ["parquet"]  # no domain field: one domain named after the dataset
    corpus = build_corpus(tmp_path / "corpus", [], local={"parquet": str(dataset_dirs["rows"])})
    via_corpus = ShardSet(prepare(corpus, tok_dir, SEQ, tmp_path / "from_corpus", num_proc=1))
    for split in ("train", "eval"):
        assert np.array_equal(via_dataset.sequences(split, "parquet"), via_corpus.sequences(split, "parquet"))


def test_max_tokens_stops_there(dataset_dirs, tmp_path, tmp_path_factory):
    tok_dir = built(tmp_path_factory)["tok"]
    full = _prepare(tmp_path, tok_dir, dataset_dirs["parquet"], out="full")
    cut = _prepare(tmp_path, tok_dir, dataset_dirs["parquet"], "--max-tokens", "20000", "--streaming", out="cut")
    raw = sum(s["tokens_raw"] for split in cut.manifest["splits"].values() for s in split.values())
    assert raw == 20000 and cut.manifest["budget"] == {"max_tokens": 20000, "reached": True,
                                                      "documents": cut.manifest["budget"]["documents"], "tokens": 20000}
    assert not full.manifest["budget"]["reached"] and full.manifest["budget"]["tokens"] > 20000
    # the budget takes the first documents in order: the cut shard is a prefix of the full one
    n = len(cut.sequences("train", "parquet"))
    assert np.array_equal(cut.sequences("train", "parquet"), full.sequences("train", "parquet")[:n])


BAD = [
    (["--text-field", "body"], "--text-field 'body': dataset '{saved}' has no field 'body' (fields: content, id, "
                               "meta, meta.redpajama_set_name)"),
    (["--text-field", "id"], "holds int64, not text; text fields: content, meta.redpajama_set_name"),
    (["--text-field", "content", "--domain-field", "meta.set"], "has no field 'meta.set'"),
    (["--text-field", "content", "--max-tokens", "0"], "--max-tokens '0' must be a positive token count"),
    (["--text-field", "content", "--split", "test"], "--split 'test'"),
    (["--text-field", "content", "--out", "{saved}", "--overwrite"], "is the input"),
    (["--text-field", "content", "--out", "{root}", "--overwrite"], "contains the input"),
]


@pytest.mark.parametrize("extra, needle", BAD, ids=[n[:30] for _, n in BAD])
def test_bad_dataset_inputs_exit_2_with_one_line_and_write_nothing(dataset_dirs, tmp_path, tmp_path_factory,
                                                                   capsys, extra, needle, monkeypatch):
    import data.prepare

    monkeypatch.setattr(data.prepare, "_pack", lambda *a, **k: pytest.fail("tokenising began"))
    fill = {"saved": dataset_dirs["saved"], "root": dataset_dirs["root"]}
    argv = ["prepare", "--dataset", str(dataset_dirs["saved"]), "--tokenizer", str(built(tmp_path_factory)["tok"]),
            "--seq-len", str(SEQ), "--out", str(tmp_path / "s"), *[e.format(**fill) for e in extra]]
    before = sorted(p.name for p in dataset_dirs["saved"].iterdir())
    assert data_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle.format(**fill) in err[0], err
    assert not (tmp_path / "s").exists() and sorted(p.name for p in dataset_dirs["saved"].iterdir()) == before


def test_a_hub_name_offline_and_not_cached_is_one_line(tmp_path, tmp_path_factory, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    argv = ["prepare", "--dataset", "nosuch-org/nosuch-dataset", "--tokenizer", str(built(tmp_path_factory)["tok"]),
            "--seq-len", str(SEQ), "--out", str(tmp_path / "s")]
    assert data_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nosuch-org/nosuch-dataset' cannot be loaded" in err[0] and "offline" in err[0], err


def test_reading_never_runs_ahead_of_tokenising(tmp_path_factory):
    """Memory stays bounded whatever the corpus size: with 2 workers, at most 4 batches are read
    beyond the one being packed, however fast the source could produce them."""
    from data.prepare import PrepareConfig, _encoded

    tok_dir = built(tmp_path_factory)["tok"]
    produced = []

    def source():
        for i in range(40):
            produced.append(i)
            yield [f"document {i} " + "words about pruning and tokens. " * 10] * 8, None, ["d"] * 8

    init = (str(tok_dir / "tokenizer.json"), 0, "uint16", 0.05, True)
    ahead = []
    for k, (enc, domains) in enumerate(_encoded(source(), PrepareConfig(16, num_proc=2), init)):
        ahead.append(len(produced) - (k + 1))
        assert len(enc.lengths) == 8 and domains == ["d"] * 8
    assert len(ahead) == 40 and max(ahead) <= 4


def test_a_budget_too_small_for_an_eval_sequence_is_refused(dataset_dirs, tmp_path, tmp_path_factory, capsys):
    argv = ["prepare", "--dataset", str(dataset_dirs["parquet"]), "--text-field", "content", "--tokenizer",
            str(built(tmp_path_factory)["tok"]), "--seq-len", str(SEQ), "--max-tokens", "300", "--num-proc", "1",
            "--out", str(tmp_path / "s")]
    assert data_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "yields no eval sequence of 32 tokens" in err[0] and not (tmp_path / "s").exists()


def test_a_hub_dataset_in_the_offline_cache_is_prepared(dataset_dirs, tmp_path, tmp_path_factory, monkeypatch):
    """Offline, ``datasets`` serves a hub dataset from its own cache (what an earlier online load
    leaves: ``<cache>/<org>___<name>/<config>/<version>/<hash>/``); the hub name is recorded."""
    import datasets

    prepared = datasets.load_dataset_builder("parquet", cache_dir=str(tmp_path / "tmp-cache"),
                                             data_files={"train": str(dataset_dirs["parquet"] / "part-00000.parquet")})
    prepared.download_and_prepare()
    cached = tmp_path / "hf-cache" / "prunelaw-test___tiny-corpus" / "default" / "0.0.0" / Path(prepared.cache_dir).name
    shutil.copytree(prepared.cache_dir, cached)
    for arrow in cached.glob("parquet-*.arrow"):
        arrow.rename(cached / arrow.name.replace("parquet-", "tiny-corpus-"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.chdir(tmp_path)  # the name is not a local path here
    shards = _prepare(tmp_path, built(tmp_path_factory)["tok"], "prunelaw-test/tiny-corpus",
                      "--domain-field", "meta.redpajama_set_name")
    source = shards.manifest["dataset"]
    assert source["kind"] == "hub" and source["name"] == "prunelaw-test/tiny-corpus" and "path" not in source
    assert source["resolved"] == Path(prepared.cache_dir).name
    assert shards.domains == ["RedPajama_Wiki", "RedPajamaBook"]
