"""Real transformers models from the ``data.models`` table, and loading/saving HF directories.

Presets become transformers' own ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` with a config
whose parameter count equals the table's exact count (``tests/test_engine_models.py`` checks
this); local HF directories load through ``AutoModelForCausalLM.from_pretrained`` with no
custom code. Nothing is downloaded here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data.cli import BadInput
from data.models import MODELS, ModelSpec, get_spec

TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja",
)
"""Files copied from a source model directory into a pruned one (the tokenizer travels)."""


def _resolve_spec(spec: ModelSpec | str) -> ModelSpec:
    if isinstance(spec, ModelSpec):
        return spec
    try:
        return get_spec(spec)
    except KeyError as exc:
        raise BadInput(str(exc.args[0])) from None


def config_for(spec: ModelSpec, vocab: int | None = None) -> Any:
    """The transformers config (``LlamaConfig`` / ``Qwen2Config``) of a preset."""
    from transformers import LlamaConfig, Qwen2Config

    if vocab is not None:
        spec = spec.with_vocab(vocab)
    common = dict(
        vocab_size=spec.vocab, hidden_size=spec.hidden, intermediate_size=spec.ffn,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, max_position_embeddings=spec.max_positions,
        rms_norm_eps=spec.rms_eps, tie_word_embeddings=spec.tied, hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
    )
    if spec.arch == "llama":
        return LlamaConfig(head_dim=spec.head_dim, attention_bias=spec.qkv_bias, mlp_bias=False, **common)
    # Qwen2 always has q/k/v biases and derives head_dim = hidden // heads unless told.
    cfg = Qwen2Config(**common)
    cfg.head_dim = spec.head_dim
    return cfg


def build_model(spec: ModelSpec | str, *, vocab: int | None = None, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` of a preset shape.

    Args:
        spec: a :class:`ModelSpec` or a preset name (``tiny-llama``, ``qwen2.5-0.5b``, ...).
        vocab: override the vocabulary (tiny models take their tokenizer's size).
        seed: torch seed for the initialisation, so two builds are identical.
        dtype: parameter dtype.

    Raises:
        BadInput: unknown preset name (the message lists the known ones).
    """
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    spec = _resolve_spec(spec)
    cfg = config_for(spec, vocab)
    torch.manual_seed(seed)
    cls = LlamaForCausalLM if spec.arch == "llama" else Qwen2ForCausalLM
    model = cls(cfg).to(dtype)
    model.eval()
    return model


SUPPORTED_ARCHS = ("llama", "qwen2")
"""``config.json`` ``model_type`` values the engine prunes and trains (Llama-3, Qwen-2.5)."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_dir(path: Path) -> None:
    """Refuse, before transformers sees it, a directory that is not a Llama/Qwen checkpoint.

    Raises:
        BadInput: config.json unreadable, another architecture, or no weight file.
    """
    from data.cli import read_json

    config = read_json(path / "config.json", "model config")
    arch = config.get("model_type") if isinstance(config, dict) else None
    if arch not in SUPPORTED_ARCHS:
        raise BadInput(f"model {str(path)!r} has model_type {arch!r}; supported: {', '.join(SUPPORTED_ARCHS)} "
                       "(Llama-3 / Qwen-2.5 families)")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise BadInput(f"model {str(path)!r} has no weights ({' or '.join(WEIGHT_FILES[::2])})")


def load_model(path_or_preset: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
               vocab: int | None = None, seed: int = 0) -> nn.Module:
    """A model from a local HF directory, or a freshly built preset.

    Raises:
        BadInput: a directory without ``config.json``, or a name that is neither an existing
            path nor a known preset.
    """
    source = check_model_source(path_or_preset)
    if isinstance(source, Path):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype)
        model.eval()
        return model
    return build_model(source, vocab=vocab, seed=seed, dtype=dtype)


def check_model_source(path_or_preset: str | os.PathLike) -> Path | str:
    """A checked model source without loading weights: the directory, or the preset's name.

    Raises:
        BadInput: a directory without ``config.json`` or with bad weights' metadata
            (``check_model_dir``), a file, or a name that is no known preset.
    """
    path = Path(path_or_preset)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInput(f"model directory {str(path)!r} has no config.json (expected a "
                           "save_pretrained directory, e.g. an 'engine prune --out' directory, or a preset name)")
        check_model_dir(path)
        return path
    name = str(path_or_preset).strip().lower()
    if name in MODELS:
        return name
    if path.exists():
        raise BadInput(f"model {str(path)!r} is a file, not a save_pretrained directory or preset")
    raise BadInput(f"model {str(path_or_preset)!r} is neither a model directory nor a known preset; "
                   f"presets: {', '.join(sorted(MODELS))}")


def spec_of(model: nn.Module) -> dict[str, Any]:
    """The shape of a loaded model as a plain dict (what pruning changed, in one place)."""
    cfg = model.config
    heads = cfg.num_attention_heads
    return {
        "arch": cfg.model_type,
        "hidden": cfg.hidden_size,
        "layers": cfg.num_hidden_layers,
        "heads": heads,
        "kv_heads": cfg.num_key_value_heads,
        "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        "ffn": cfg.intermediate_size,
        "vocab": cfg.vocab_size,
        "tied": bool(getattr(cfg, "tie_word_embeddings", False)),
    }


def save_model(model: nn.Module, out_dir: str | os.PathLike,
               extra_files: dict[str, Any] | None = None, tokenizer_from: str | os.PathLike | None = None) -> Path:
    """``save_pretrained`` into ``out_dir`` plus extra files; returns the directory.

    Args:
        model: the model to save (safetensors weights + config.json).
        out_dir: target directory (created).
        extra_files: file name -> content; dicts are written as JSON, ``bytes`` verbatim,
            anything else as ``str``.
        tokenizer_from: a source model directory whose tokenizer files are copied along.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    if tokenizer_from is not None and Path(tokenizer_from).is_dir():
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_from) / name
            if src.is_file() and not (out / name).exists():
                shutil.copy2(src, out / name)
    for name, content in (extra_files or {}).items():
        target = out / name
        if isinstance(content, (dict, list)):
            target.write_text(json.dumps(content, indent=2) + "\n")
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(str(content))
    return out
