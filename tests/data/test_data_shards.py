"""Shards: exactly the tokenizer's tokens, EOS between documents, integrity checks, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from transformers import AutoTokenizer

from data.__main__ import main as data_main
from data.cli import BadInput
from data.prepare import prepare
from data.shards import ShardSet, check_seq_len, check_vocab
from test_data_fixtures import SEQ_LEN, VOCAB, built


def test_shards_hold_exactly_the_tokenizer_tokens(tmp_path_factory):
    paths = built(tmp_path_factory)
    shards = ShardSet(paths["shards"], verify=True)
    tok = AutoTokenizer.from_pretrained(str(shards.tokenizer_path))
    records = [json.loads(x) for x in (paths["corpus"] / "docs.jsonl").read_text("utf-8").splitlines()]
    for split in ("train", "eval"):
        expected = []
        for rec in (r for r in records if r["split"] == split):
            expected += tok(rec["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        arr = shards.sequences(split, "docs")
        assert arr.dtype == np.uint16 and arr.shape == (len(expected) // SEQ_LEN, SEQ_LEN)
        assert arr.reshape(-1).tolist() == expected[: arr.size]  # packed in corpus order, tail dropped
        info = shards.manifest["splits"][split]["docs"]
        assert info["tokens_raw"] == len(expected) and info["tokens"] == arr.size
    # Decoding a whole eval shard gives the eval documents back, EOS-separated.
    text = tok.decode(shards.sequences("eval", "docs").reshape(-1).tolist())
    first_eval = next(r["text"] for r in records if r["split"] == "eval")
    assert text.startswith(first_eval + tok.eos_token)


def test_manifest_identifies_tokenizer_and_corpus(tmp_path_factory):
    shards = ShardSet(built(tmp_path_factory)["shards"])
    m = shards.manifest
    assert shards.vocab_size == VOCAB == m["tokenizer"]["vocab_size"] and shards.seq_len == SEQ_LEN
    assert len(m["corpus"]["manifest_sha256"]) == 64 and len(m["tokenizer"]["sha256"]) == 64
    assert shards.domains == ["code", "docs"]
    assert shards.num_tokens("train") == sum(v["tokens"] for v in m["splits"]["train"].values())


def _copy(tmp_path_factory, tmp_path):
    dst = tmp_path / "shards"
    shutil.copytree(built(tmp_path_factory)["shards"], dst)
    return dst


def test_truncated_and_corrupted_shards_are_detected(tmp_path_factory, tmp_path, capsys):
    path = _copy(tmp_path_factory, tmp_path)
    shard = path / "train" / "code.npy"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    ShardSet(path)  # same size: the cheap check passes
    with pytest.raises(BadInput, match="code.npy' is corrupted"):
        ShardSet(path, verify=True)
    assert data_main(["inspect", str(path), "--verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupted" in err[0]
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(BadInput, match="missing or truncated"):
        ShardSet(path)


def test_vocab_and_seq_len_checks_name_both_sizes(tmp_path_factory):
    shards = ShardSet(built(tmp_path_factory)["shards"])
    check_vocab(shards, VOCAB)
    check_vocab(shards, VOCAB + 64)  # padded embedding tables are fine
    with pytest.raises(BadInput, match=f"tokenizer vocab {VOCAB} .* model's vocab 256"):
        check_vocab(shards, 256)
    check_seq_len(SEQ_LEN, 128)
    with pytest.raises(BadInput, match="seq-len 4096 exceeds the model's max positions 2048"):
        check_seq_len(4096, 2048)


def test_prepare_bad_inputs_leave_outputs_alone(tmp_path_factory, tmp_path, capsys):
    paths = built(tmp_path_factory)
    out = _copy(tmp_path_factory, tmp_path)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(BadInput, match="already exists"):
        prepare(paths["corpus"], paths["tok"], 32, out)
    with pytest.raises(BadInput, match="no train sequence of 1000000 tokens"):
        prepare(paths["corpus"], paths["tok"], 1_000_000, out, overwrite=True)
    assert (out / "manifest.json").read_bytes() == before
    code = data_main(["prepare", "--corpus", str(tmp_path / "nope"), "--tokenizer", str(paths["tok"]),
                      "--seq-len", "64", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope" in err[0] and "not a corpus directory" in err[0]
