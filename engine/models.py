"""Real transformers models: from local HF directories, the hub, or the ``data.models`` table.

A model source (``data.hub``: directory, hub id, ``random:PRESET``) is checked without loading
weights, then resolved (a hub model fetched into huggingface_hub's cache) and loaded through
``AutoModelForCausalLM.from_pretrained`` with no custom code. Presets become transformers' own
``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` with a config whose parameter count equals the
table's exact count (``tests/engine/test_engine_models.py`` checks this), always as a random init.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data.cli import BadInput
from data.hub import TOKENIZER_FILES, ModelSource, Snapshot, check_model_type, download, parse_model_source
from data.models import ModelSpec, get_spec


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


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_dir(path: Path) -> None:
    """Refuse, before transformers sees it, a directory that is not a readable Llama/Qwen checkpoint.

    Raises:
        BadInput: config.json unreadable, another architecture, no weight file, or a
            safetensors file whose header or length is broken (a truncated copy).
    """
    from data.cli import read_json

    config = read_json(path / "config.json", "model config")
    check_model_type(config, str(path))
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise BadInput(f"model {str(path)!r} has no weights ({' or '.join(WEIGHT_FILES[::2])})")
    for file in _weight_files(path):
        _check_safetensors(file)


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files transformers loads: the index's shards, or ``model.safetensors``
    (other ``*.safetensors`` beside them, such as a pruned model's masks, are not weights)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        from data.cli import read_json

        doc = read_json(index, "weights index")
        shards = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(shards, dict):
            raise BadInput(f"weights index {str(index)!r} has no weight_map (tensor name -> file)")
        return [folder / name for name in sorted(set(map(str, shards.values())))]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else []


def _check_safetensors(file: Path) -> None:
    """Read one file's header the way the loader will: a truncated download fails here, named.

    safetensors checks that the header's tensor offsets end exactly at the file's end, so a cut
    file is caught from the header alone (no tensor is read).
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt"):
            pass
    except (SafetensorError, OSError) as exc:
        raise BadInput(f"weights file {str(file)!r} is unreadable ({str(exc).splitlines()[0]}): truncated or "
                       "not safetensors; copy or download it again") from None


def _safetensors_shapes(folder: Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    """tensor name -> (shape, file) over every safetensors file of ``folder`` (headers only)."""
    from safetensors import safe_open

    shapes = {}
    for file in _weight_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                shapes[name] = (tuple(handle.get_slice(name).get_shape()), file)
    return shapes


def check_weight_shapes(folder: Path) -> None:
    """Compare the weights' shapes with the model config.json describes, before loading.

    transformers reports a mismatch as a many-line table after allocating the model; a meta
    model (no memory) and the safetensors headers give the first mismatch as one line.

    Raises:
        BadInput: naming the tensor, its file, its shape and the config's.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        expected = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder))).state_dict()
    for name, (shape, file) in _safetensors_shapes(folder).items():
        want = expected.get(name)
        if want is not None and tuple(want.shape) != shape:
            raise BadInput(f"weights file {str(file)!r}: tensor {name} has shape {list(shape)} but config.json "
                           f"implies {list(want.shape)}; config and weights come from different models")


@dataclass(frozen=True)
class ResolvedModel:
    """A model source made loadable: a local directory (a hub snapshot's), or a random-init shape."""

    source: ModelSource
    path: Path | None
    """The save_pretrained folder to load; None for a random init."""
    snapshot: Snapshot | None = None

    def record(self) -> dict[str, Any]:
        """Provenance for run.json / prune_report.json (a hub model's commit included)."""
        return self.snapshot.record() if self.snapshot is not None else self.source.record()

    def describe(self) -> str:
        """One line for the user: what is being loaded, from where."""
        if self.snapshot is not None:
            return (f"model {self.source.text}: hub {self.snapshot.ref.repo_id} at commit "
                    f"{self.snapshot.commit[:12]} ({self.path})")
        if self.path is None:
            return (f"model {self.source.text}: RANDOM INIT of the {self.source.preset.name} shape "
                    f"(no pretrained weights; a real checkpoint is a directory or a hub id)")
        return f"model {self.source.text}: directory {self.path}"


def check_model_source(path_or_preset: str | os.PathLike, revision: str | None = None) -> ModelSource:
    """A checked model source without loading weights (a hub model: its config.json at most).

    Raises:
        BadInput: a directory without ``config.json`` or with broken weights' metadata
            (``check_model_dir``), a hub model of another architecture, or a name that is no
            directory, hub id, preset nor ``random:PRESET``.
    """
    from data.hub import hub_config

    source = parse_model_source(path_or_preset, revision)
    if source.kind == "dir":
        if not (source.path / "config.json").is_file():
            raise BadInput(f"model directory {str(source.path)!r} has no config.json (expected a save_pretrained "
                           "directory, e.g. an 'engine prune --out' directory, a hub id or a preset name)")
        check_model_dir(source.path)
    elif source.kind == "hub":  # loading needs the checkpoint itself: no table fallback as in plans
        check_model_type(hub_config(source.hub, source=source.text), str(source.hub))
    return source


def resolve_model(path_or_preset: str | os.PathLike | ResolvedModel, revision: str | None = None) -> ResolvedModel:
    """Check a model source and make it loadable: a hub model is fetched into (or found in) the cache.

    Raises:
        BadInput: as :func:`check_model_source`, a hub model not cached while offline, or
            weights whose shapes disagree with config.json.
    """
    if isinstance(path_or_preset, ResolvedModel):
        return path_or_preset
    source = check_model_source(path_or_preset, revision)
    if source.kind == "dir":
        check_weight_shapes(source.path)
        return ResolvedModel(source, source.path)
    if source.kind == "random":
        return ResolvedModel(source, None)
    snapshot = download(source.hub, source=source.text)
    if not _weight_files(snapshot.path):
        raise BadInput(f"hub model {str(source.hub)!r} has no safetensors weights at commit {snapshot.commit} "
                       "(only model.safetensors or model-*-of-*.safetensors are fetched)")
    check_model_dir(snapshot.path)
    check_weight_shapes(snapshot.path)
    return ResolvedModel(source, snapshot.path, snapshot)


def load_model(path_or_preset: str | os.PathLike | ResolvedModel, *, dtype: torch.dtype = torch.float32,
               vocab: int | None = None, seed: int = 0) -> nn.Module:
    """A model from a local HF directory or hub id, or a random init of a preset shape.

    Callers say a random init out loud once their inputs are all checked
    (:meth:`ResolvedModel.describe`): a pretrained model was perhaps meant.

    Raises:
        BadInput: as :func:`resolve_model`.
    """
    resolved = resolve_model(path_or_preset)
    if resolved.path is None:
        return build_model(resolved.source.preset, vocab=vocab, seed=seed, dtype=dtype)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(resolved.path), dtype=dtype)
    model.eval()
    return model


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
