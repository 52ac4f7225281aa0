"""Where a model or tokenizer comes from: a local directory, a Hugging Face hub id, or a preset
built with random weights, named the same way by every command.

``MODEL`` may be

- a ``save_pretrained`` directory (any ``engine prune --out``);
- a hub id ``org/name``, optionally ``org/name@REVISION`` (branch, tag or commit), fetched
  through ``huggingface_hub`` into its own cache with its own conventions (``HF_HOME``,
  ``HF_HUB_CACHE``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``), and only the files a model needs;
- ``random:NAME``, a randomly initialised model of a ``data.models`` shape;
- a bare table name: one with a real checkpoint (``llama-3.2-1b``) means that checkpoint's hub
  id, one without (the tiny test shapes) can only mean a random init.

Resolving a name touches no weights; only :func:`download` fetches them. torch-free, so grid
plans and the CLIs' early checks use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.cli import BadInput
from data.models import MODELS, SUPPORTED_ARCHS, ModelSpec

RANDOM_PREFIX = "random:"
"""Names a random-init model of a table shape: ``random:llama-3.1-8b``."""
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja",
)
"""The files a tokenizer is made of (copied along with a pruned model, fetched from the hub)."""
MODEL_FILES: tuple[str, ...] = ("config.json", "model.safetensors", "model-*-of-*.safetensors",
                                "model.safetensors.index.json", *TOKENIZER_FILES)
"""What a hub model fetch downloads: the safetensors transformers loads, never the ``.bin``,
GGUF, ONNX or ``consolidated`` copies of the same weights that many repositories also carry."""


@dataclass(frozen=True)
class HubRef:
    """A repository on the hub and the revision asked for (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")

    def download_hint(self) -> str:
        """The command that puts this model into the cache on a connected machine."""
        revision = f" --revision {self.revision}" if self.revision else ""
        return f"'hf download {self.repo_id}{revision}' (huggingface_hub's CLI)"


@dataclass(frozen=True)
class Snapshot:
    """A hub revision in the local cache: the folder transformers loads, and its commit."""

    ref: HubRef
    path: Path
    commit: str

    def record(self) -> dict[str, str]:
        """What run.json / prune_report.json keep: enough to fetch the very same files again."""
        return {"kind": "hub", "hub_id": self.ref.repo_id, "revision": self.ref.revision or "main",
                "commit": self.commit}


@dataclass(frozen=True)
class ModelSource:
    """A parsed ``MODEL`` argument (see the module docstring); nothing downloaded yet."""

    text: str
    """As the user wrote it."""
    kind: str
    """``dir``, ``hub`` or ``random``."""
    path: Path | None = None
    hub: HubRef | None = None
    preset: ModelSpec | None = None
    """The table entry: the shape of a random init, or the table row of a hub id it knows."""

    def record(self) -> dict[str, Any]:
        """Provenance before any download (a hub source's commit comes from :class:`Snapshot`)."""
        if self.kind == "dir":
            return {"kind": "dir", "path": str(self.path)}
        if self.kind == "random":
            return {"kind": "random", "preset": self.preset.name}
        return {"kind": "hub", "hub_id": self.hub.repo_id, "revision": self.hub.revision or "main"}


def parse_hub_id(text: str, revision: str | None = None) -> HubRef | None:
    """``org/name`` or ``org/name@REV`` as a :class:`HubRef`; None when ``text`` is not shaped like one.

    Raises:
        BadInput: ``@REV`` and a different ``revision`` both given.
    """
    repo, _, rev = text.strip().partition("@")
    if repo.count("/") != 1 or repo.startswith((".", "/", "~")):
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    if rev and revision and rev != revision:
        raise BadInput(f"model {text!r} names revision {rev!r} but --revision is {revision!r}; give one")
    return HubRef(repo, rev or revision or None)


def _table_name(text: str) -> str:
    return text.strip().lower()


def parse_model_source(text: str | os.PathLike, revision: str | None = None) -> ModelSource:
    """Classify a ``MODEL`` argument without reading any weights.

    Raises:
        BadInput: an unknown ``random:`` shape, a file, or a name that is no directory, hub id
            nor table entry (the message lists the forms).
    """
    raw = str(text)
    if raw.startswith(RANDOM_PREFIX):
        name = _table_name(raw[len(RANDOM_PREFIX):])
        if name not in MODELS:
            raise BadInput(f"model {raw!r}: no shape {name!r} to initialise; random:NAME takes one of "
                           f"{', '.join(sorted(MODELS))}")
        return ModelSource(raw, "random", preset=MODELS[name])
    path = Path(raw).expanduser()
    if path.is_dir():
        return ModelSource(raw, "dir", path=path)
    if path.exists():
        raise BadInput(f"model {raw!r} is a file, not a save_pretrained directory, hub id or preset")
    spec = MODELS.get(_table_name(raw))
    if spec is not None and not spec.hf_id:  # a test shape: no checkpoint exists, so random by definition
        return ModelSource(raw, "random", preset=spec)
    if spec is not None:
        return ModelSource(raw, "hub", hub=HubRef(spec.hf_id, revision), preset=spec)
    ref = parse_hub_id(raw, revision)
    if ref is not None:
        return ModelSource(raw, "hub", hub=ref, preset=table_entry(ref.repo_id))
    raise BadInput(f"model {raw!r} is neither a model directory nor a known preset (nor a hub id "
                   f"org/name[@revision], nor random:PRESET); presets: {', '.join(sorted(MODELS))}")


def table_entry(repo_id: str) -> ModelSpec | None:
    """The ``data.models`` row of a hub checkpoint, if the table has it."""
    return next((m for m in MODELS.values() if m.hf_id.lower() == repo_id.lower()), None)


def random_init_name(name: str) -> str:
    """The ``MODEL`` string that builds ``name``'s shape with random weights.

    Tiny shapes keep their bare name (already random, and the run ids of existing grids hash it).
    """
    key = _table_name(name)
    return key if not MODELS[key].hf_id else RANDOM_PREFIX + key


def preset_of(text: str) -> ModelSpec | None:
    """The table shape a random-init ``MODEL`` builds: ``random:NAME``, or a test shape's bare
    name (it has no checkpoint); None for directories and hub ids. No file system access."""
    spec = MODELS.get(_table_name(text.removeprefix(RANDOM_PREFIX)))
    return spec if spec is not None and (text.startswith(RANDOM_PREFIX) or not spec.hf_id) else None


# -- the hub cache -----------------------------------------------------------------------------

def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _not_cached(ref: HubRef, what: str, source: str | None = None) -> BadInput:
    from huggingface_hub import constants

    offline = _offline()
    named = f"{what} {str(ref)!r}"
    if source and source != str(ref):
        named = f"{what} {source!r} (hub {ref})"
    local = f"there is no local directory {source!r}, and " if source == str(ref) else ""
    known = source is not None and _table_name(source) in MODELS
    untrained = f", or random:{_table_name(source)} for an untrained model of its shape" if known else ""
    how = " with HF_HUB_OFFLINE unset" if offline else ""
    return BadInput(f"{named}: {local}it is not in the hub cache {constants.HF_HUB_CACHE} and "
                    f"{'HF_HUB_OFFLINE is set' if offline else 'the hub cannot be reached'}; run "
                    f"{ref.download_hint()} on a connected machine{how} (same HF_HOME){untrained}")


def _hub_error(ref: HubRef, what: str, exc: Exception, source: str | None = None) -> BadInput | None:
    """The one-line BadInput for a hub error the user can fix, or None (an outage: exit 1)."""
    from huggingface_hub import errors

    if isinstance(exc, errors.LocalEntryNotFoundError):  # offline, or no connection, and not cached
        return _not_cached(ref, what, source)
    if isinstance(exc, errors.GatedRepoError):
        return BadInput(f"{what} {str(ref)!r} is gated: accept its licence on huggingface.co, then set HF_TOKEN "
                        "(or run 'hf auth login')")
    if isinstance(exc, errors.RevisionNotFoundError):
        return BadInput(f"{what} {str(ref)!r}: revision {ref.revision!r} does not exist (a branch, tag or commit)")
    if isinstance(exc, errors.RepositoryNotFoundError):
        local = f"no local directory {source!r} and " if source == str(ref) else ""
        return BadInput(f"{what} {str(ref)!r}: {local}no such hub repository (or it is private: set HF_TOKEN)")
    return None


def download(ref: HubRef, files: tuple[str, ...] = MODEL_FILES, *, what: str = "model",
             source: str | None = None) -> Snapshot:
    """The cached snapshot of ``ref`` holding ``files`` (glob patterns), fetched if missing.

    Offline (``HF_HUB_OFFLINE=1``) it only looks in the cache. The token is huggingface_hub's
    (``HF_TOKEN`` or ``hf auth login``).

    Raises:
        BadInput: not cached while offline, gated, no such repository or revision.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=list(files),
                                        local_files_only=_offline()))
    except Exception as exc:
        bad = _hub_error(ref, what, exc, source)
        if bad is None:
            raise
        raise bad from None
    return Snapshot(ref, folder, folder.name)  # the cache names each snapshot folder by its commit


def cached_file(ref: HubRef, filename: str) -> Path | None:
    """``filename`` of ``ref`` if it is in the local cache (never touches the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo_id, filename, revision=ref.revision)
    return Path(found) if isinstance(found, str) else None


def hub_config(ref: HubRef, *, what: str = "model", source: str | None = None) -> dict[str, Any]:
    """``config.json`` of ``ref``: from the cache, else that one file (never weights).

    Raises:
        BadInput: as :func:`download`.
    """
    path = cached_file(ref, "config.json")
    if path is None:
        path = download(ref, ("config.json",), what=what, source=source).path / "config.json"
    return json.loads(path.read_text())


def check_model_type(config: Any, name: str) -> None:
    """Refuse a checkpoint that is not a Llama / Qwen2 decoder (``config.json`` ``model_type``).

    Raises:
        BadInput: naming the model_type found and the ones allowed.
    """
    arch = config.get("model_type") if isinstance(config, dict) else None
    if arch not in SUPPORTED_ARCHS:
        raise BadInput(f"model {name!r} has model_type {arch!r}; supported: {', '.join(SUPPORTED_ARCHS)} "
                       "(Llama-3 / Qwen-2.5 families)")


def plan_config(source: ModelSource) -> dict[str, Any] | None:
    """A hub model's config for planning, never its weights: the cached ``config.json``, the one
    file fetched, or (offline and uncached) None when the table knows the checkpoint's shape.

    Raises:
        BadInput: another architecture, or offline with neither the config nor a table row.
    """
    try:
        config = hub_config(source.hub, source=source.text)
    except BadInput:
        if source.preset is None:
            raise
        return None  # offline: the table row carries the shape and the arch
    check_model_type(config, str(source.hub))
    return config


def max_positions(source: ModelSource) -> int | None:
    """The model's position limit without loading it (None: not knowable yet)."""
    config = None
    if source.kind == "dir" and (source.path / "config.json").is_file():
        config = json.loads((source.path / "config.json").read_text())
    elif source.kind == "hub":
        config = plan_config(source)
    if config is not None:
        return int(config.get("max_position_embeddings") or 0) or None
    return source.preset.max_positions if source.preset is not None else None


def tokenizer_snapshot(text: str) -> Snapshot | None:
    """The cached snapshot of a hub tokenizer (``org/name[@rev]``), fetching only tokenizer
    files; None when ``text`` is no hub id.

    Raises:
        BadInput: as :func:`download`.
    """
    ref = parse_hub_id(text)
    if ref is None:
        return None
    return download(ref, (*TOKENIZER_FILES, "config.json"), what="tokenizer", source=text)
