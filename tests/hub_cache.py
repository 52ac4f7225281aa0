"""A Hugging Face hub cache built by the tests: tiny real models in huggingface_hub's own layout.

``models--ORG--NAME/blobs/<sha256>`` holds each file once, ``snapshots/<commit>/<file>`` links
to it, ``refs/<branch>`` names the commit: what ``hf download`` leaves behind, so
``snapshot_download(..., local_files_only=True)`` and transformers read it as they would a
real download. Nothing touches the network.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
"""The commit every test snapshot is stored under (a 40-hex git sha, as the hub's)."""


def tiny_tokenizer(out: Path, vocab: int = 300) -> Path:
    """A byte-level BPE trained on a few sentences, saved as an HF tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog. " * 8] * 20, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(str(out))
    return out


def save_tiny(out: Path, preset: str = "tiny-llama", *, tokenizer: bool = True, seed: int = 0) -> Path:
    """A tiny ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` (a table shape) saved with its tokenizer."""
    from engine.models import build_model

    build_model(preset, seed=seed).save_pretrained(str(out))
    if tokenizer:
        tiny_tokenizer(out)
    return out


def add_to_cache(cache: Path, repo_id: str, folder: Path, *, commit: str = COMMIT, ref: str = "main") -> Path:
    """Store every file of ``folder`` as revision ``commit`` of ``repo_id``; returns the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def use_cache(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point huggingface_hub at ``home/hub`` (created), offline (HF_HUB_OFFLINE=1); returns the cache.

    huggingface_hub reads its environment once, at import: the constants are set as well, so
    code in this process and any subprocess see the same cache.
    """
    from huggingface_hub import constants

    cache = home / "hub"
    cache.mkdir(parents=True, exist_ok=True)
    for key, value in {"HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache under a fresh HF_HOME, offline."""
    return use_cache(monkeypatch, tmp_path / "hf_home")
