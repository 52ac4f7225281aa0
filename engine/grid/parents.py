"""Plan-time checks of a grid's parents against its methods, ratios and shards (torch-free).

Everything here is knowable before any parent pretrains or any job starts: a local parent's
directory and architecture (its ``config.json``), whether its tokenizer is the one the shards
were made with, and whether every (method, ratio) of the grid is reachable on each parent's
shape (``engine.pruning.reach``: the same maps the pruning code runs on the loaded model).
A preset parent takes the shards' vocabulary, as the grid's pretraining job builds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.cli import BadInput, read_json
from data.models import MODELS, ModelSpec
from engine.pruning.reach import check_reachable, spec_from_config


def _shards_manifest(grid: Any) -> dict[str, Any] | None:
    """The shard manifest of the grid's ``data.shards`` (None while it does not exist yet)."""
    path = Path(grid.spec.data.get("shards", "")) / "manifest.json"
    if not path.is_file():
        return None
    manifest = read_json(path, "shard manifest")
    return manifest if isinstance(manifest, dict) else None


def _vocab_identity(tokenizer_json: Path) -> tuple[Any, Any]:
    """What makes two tokenizers encode alike: the model's vocabulary and the added tokens.

    Compared instead of file hashes: re-saving the same tokenizer reorders or reformats keys.
    """
    doc = json.loads(tokenizer_json.read_text("utf-8"))
    model = doc.get("model") or {}
    added = sorted((t.get("id"), t.get("content")) for t in doc.get("added_tokens") or [])
    return model.get("vocab"), added


def _check_tokenizer(name: str, parent: Path, spec: ModelSpec, shards: Path, manifest: dict[str, Any]) -> None:
    """The shards must be tokenised with the parent's own tokenizer (or at least fit its vocab)."""
    vocab = int(manifest.get("vocab_size") or 0)
    tokenizer = manifest.get("tokenizer") or {}
    theirs = shards / str(tokenizer.get("path") or "tokenizer") / "tokenizer.json"
    ours = parent / "tokenizer.json"
    remedy = (f"prepare shards with the parent's tokenizer: data prepare --corpus CORPUS --tokenizer {str(parent)!r} "
              f"--seq-len N --out SHARDS_DIR")
    if ours.is_file() and theirs.is_file() and _vocab_identity(ours) != _vocab_identity(theirs):
        raise BadInput(f"parent {name!r} ({str(parent)!r}): its tokenizer is not the one shards {str(shards)!r} were "
                       f"made with ({tokenizer.get('spec') or tokenizer.get('name')!r}, vocab {vocab}); {remedy}")
    if vocab > spec.vocab:
        raise BadInput(f"parent {name!r} ({str(parent)!r}) has a vocabulary of {spec.vocab} tokens but shards "
                       f"{str(shards)!r} use {vocab}: not the parent's tokenizer; {remedy}")


def _local_spec(name: str, given: str) -> ModelSpec:
    """The shape of a parent given by path, refusing a missing or foreign directory."""
    path = Path(given)
    if not path.is_dir():
        raise BadInput(f"parent {name!r}: path {given!r} is not a directory; expected a save_pretrained model "
                       f"directory (engine model fetch, engine prune --out)")
    if not (path / "config.json").is_file():
        raise BadInput(f"parent {name!r}: {given!r} has no config.json (expected a save_pretrained directory)")
    config = read_json(path / "config.json", f"parent {name!r} config")
    if not isinstance(config, dict):
        raise BadInput(f"parent {name!r}: {str(path / 'config.json')!r} is not a JSON object")
    return spec_from_config(config, name)


def parent_shapes(grid: Any) -> dict[str, ModelSpec]:
    """Parent name -> its shape as the grid's jobs will see it; checks each parent on the way.

    Raises:
        BadInput: a missing or non-Llama/Qwen2 parent directory, or shards of another tokenizer.
    """
    manifest = _shards_manifest(grid)
    vocab = int(manifest["vocab_size"]) if manifest and manifest.get("vocab_size") else None
    shapes = {}
    for p in grid.parents:
        if p.preset:
            spec = MODELS[p.preset.lower()]
            shapes[p.name] = spec.with_vocab(vocab) if vocab else spec
            continue
        spec, folder = _path_or_hub_spec(p.name, p.path)
        if manifest is not None and folder is not None:
            _check_tokenizer(p.name, folder, spec, Path(grid.spec.data["shards"]), manifest)
        shapes[p.name] = spec
    return shapes


def _path_or_hub_spec(name: str, given: str) -> tuple[ModelSpec, Path | None]:
    """A ``path:`` parent's shape and the folder holding its tokenizer (None: not on disk yet).

    A hub id is planned from its cached ``config.json`` (the one file fetched when online) or,
    offline and uncached, from the model table: planning never downloads weights.
    """
    from data.hub import cached_file, parse_model_source, plan_config

    local = Path(given).expanduser()
    source = None
    if not local.exists():
        try:
            source = parse_model_source(given)
        except BadInput:
            source = None  # neither a folder nor a hub id: the folder check names the problem
    if source is None or source.kind != "hub":
        path = local.resolve()
        return _local_spec(name, str(path)), path
    config = plan_config(source)
    spec = spec_from_config(config, name) if config is not None else source.preset
    tokenizer = cached_file(source.hub, "tokenizer.json")
    return spec, tokenizer.parent if tokenizer is not None else None


def check_parents(grid: Any) -> None:
    """Every parent usable, and every (method, ratio) of the grid reachable on each parent.

    Raises:
        BadInput: naming the parent, its shape and the first unreachable method and ratio.
    """
    shapes = parent_shapes(grid)
    seen: set[tuple[str, str, float]] = set()
    for job in grid.jobs:
        if job.kind != "post":
            continue
        name = job.parent_name
        key = (name, job.config.method, job.config.ratio)
        if key in seen:
            continue
        seen.add(key)
        spec = shapes[name]
        try:
            check_reachable(spec, job.config.method, job.config.ratio, job.config.prune_args)
        except BadInput as exc:
            shape = (f"{spec.layers} layers, hidden {spec.hidden}, ffn {spec.ffn}, heads {spec.heads}/{spec.kv_heads}, "
                     f"vocab {spec.vocab}")
            raise BadInput(f"parent {name!r} ({shape}): {exc}; drop the ratio, or leave it out for this parent "
                           f"with exclude: [{{parent: {name}, method: {json.dumps(job.config.method)}, "
                           f"ratios: [{job.config.ratio}]}}]") from None
