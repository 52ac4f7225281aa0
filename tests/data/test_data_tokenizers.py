"""Tokenizers: trained BPE round-trips and loads with AutoTokenizer; the real Llama-3 and
Qwen-2.5 tokenizers come out of their PyPI packages with the official ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from data.cli import BadInput
from data.tokenizers import EOS, load_tokenizer
from test_data_fixtures import VOCAB, built


def test_trained_bpe_is_a_plain_hf_tokenizer(tmp_path_factory):
    paths = built(tmp_path_factory)
    tok = AutoTokenizer.from_pretrained(str(paths["tok"]))
    assert len(tok) == VOCAB and tok.eos_token == EOS and tok.eos_token_id == 0
    first = json.loads((paths["corpus"] / "docs.jsonl").read_text("utf-8").splitlines()[0])["text"]
    for text in (first, "def f(x):\n\treturn x ** 2  # ünïcode ✓"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # byte-level: exact round trip, no <unk>
    # It actually learned merges: real prose compresses well below one token per byte.
    assert len(tok(first, add_special_tokens=False)["input_ids"]) < 0.6 * len(first.encode())


def test_unknown_tokenizer_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="'gpt9' is neither llama3 nor qwen2.5"):
        load_tokenizer("gpt9")
    with pytest.raises(BadInput, match="neither"):
        load_tokenizer(tmp_path)


@pytest.mark.network_free_assets
@pytest.mark.parametrize("spec, size, eos, hello", [
    ("llama3", 128256, ("<|end_of_text|>", 128001), [9906, 1917]),
    ("qwen2.5", 151665, ("<|endoftext|>", 151643), [9707, 1879]),
])
def test_real_tokenizers_have_official_ids(spec, size, eos, hello):
    tok = load_tokenizer(spec)
    assert len(tok) == size and (tok.eos_token, tok.eos_token_id) == eos
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == hello
    text = "Pruned 8B models need 12,345 tokens?\n  Yes."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    if spec == "qwen2.5":
        assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|file_sep|>"]) == [151644, 151645, 151664]


def test_a_local_directory_wins_over_a_hub_id_of_the_same_name(tmp_path, monkeypatch) -> None:
    """``--tokenizer acme/tok`` is the folder ./acme/tok when it exists, the hub repo otherwise."""
    from hub_cache import COMMIT, add_to_cache, tiny_tokenizer, use_cache

    from data.tokenizers import resolve_tokenizer_dir

    cache = use_cache(monkeypatch, tmp_path / "hf_home")
    add_to_cache(cache, "acme/tok", tiny_tokenizer(tmp_path / "src"))
    monkeypatch.chdir(tmp_path)
    assert resolve_tokenizer_dir("acme/tok").name == COMMIT
    tiny_tokenizer(tmp_path / "acme" / "tok")
    assert resolve_tokenizer_dir("acme/tok") == Path("acme/tok")
