"""A Hugging Face ``datasets`` dataset as the source of ``data prepare --dataset``.

The dataset is named by its hub name (with a config, a split and a revision, resolved through
``datasets``' own cache and offline conventions: HF_HOME, HF_TOKEN, HF_DATASETS_OFFLINE) or by
a local path: a ``save_to_disk`` directory, a directory of arrow/parquet/jsonl files, or one
such file. It is read in batches of ``(texts, domains)``; streamed, nothing but the batch in
hand is held in memory, so a corpus larger than the disk can be tokenised.

Light at import: ``datasets`` is imported by the functions that need it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data.cli import BadInput

MAX_DOMAINS = 64
"""Distinct domain values allowed: a domain field names a handful of sources (SlimPajama has
seven), and every domain is two shard files; more means the field is not a domain."""

_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json",
                  ".csv": "csv", ".txt": "text"}


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset ``data prepare --dataset`` reads, and which of its fields."""

    name: str                        # hub name (org/name) or a local directory / file
    config: str | None = None        # the dataset's configuration (subset), where it has several
    split: str | None = None         # the dataset's split to read (None: train); train/eval come from the doc hash
    revision: str | None = None      # hub branch, tag or commit (None: the default branch)
    text_field: str = "text"         # field holding the document text; dotted for nested fields
    domain_field: str | None = None  # field naming each document's domain, e.g. meta.redpajama_set_name
    streaming: bool = False          # read without downloading / converting the whole dataset first

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise BadInput("--dataset '' names no dataset; give a hub name or a local directory")
        if not self.text_field.strip():
            raise BadInput("--text-field '' names no field")
        if self.domain_field is not None and not self.domain_field.strip():
            raise BadInput("--domain-field '' names no field; leave it out for a single domain")

    @property
    def local_path(self) -> Path | None:
        """The local path the dataset is read from, or None for a hub name."""
        path = Path(self.name).expanduser()
        return path if path.exists() else None


@dataclass
class OpenDataset:
    """A loaded dataset (``Dataset`` or ``IterableDataset``) and what the manifest records."""

    spec: DatasetSpec
    data: object      # datasets.Dataset | datasets.IterableDataset, its columns already checked
    source: dict      # name/path, config, split, revision, fingerprint: recorded in the shard manifest


def domain_name(value: object) -> str:
    """A domain value as a safe shard file stem (``RedPajamaC4`` stays; ``a/b`` becomes ``a_b``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("._")
    return name or "unknown"


def default_domain(spec: DatasetSpec) -> str:
    """The single domain of a dataset read without a domain field: its name's last part."""
    path = Path(spec.name.rstrip("/"))
    return domain_name((path.stem if path.suffix.lower() in _FILE_BUILDERS else path.name).lower())


def open_dataset(spec: DatasetSpec) -> OpenDataset:
    """Load the dataset (streamed when asked) and check its text and domain fields.

    Raises:
        BadInput: an unknown dataset, config or split; a missing text or domain field (the
            message names the fields the dataset has); a text field that is not text.
    """
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()  # "using the cached version" notes would bury the summary
    data, source = _load(spec)
    _check_fields(spec, _fields(data))
    tops = list(dict.fromkeys(f.split(".")[0] for f in (spec.text_field, spec.domain_field) if f))
    return OpenDataset(spec, data.select_columns(tops), source)


def _load(spec: DatasetSpec) -> tuple[object, dict]:
    import datasets

    local = spec.local_path
    source = {"name": spec.name, "kind": "local" if local else "hub", "config": spec.config,
              "split": spec.split or "train", "revision": spec.revision, "text_field": spec.text_field,
              "domain_field": spec.domain_field, "streaming": spec.streaming}
    try:
        if local is not None and local.is_dir() and ((local / "state.json").is_file()
                                                     or (local / "dataset_dict.json").is_file()):
            data = _from_disk(spec, local)
            # memory-mapped arrow: read batch by batch as it is, streamed or not
            source |= {"path": str(local.resolve()), "format": "save_to_disk", "fingerprint": data._fingerprint}
        else:
            builder = _builder(spec, local)
            if builder.info.features is not None:  # known from the files' schema or the hub card:
                _check_fields(spec, dict(_walk_features(builder.info.features)))  # refuse before downloading
            if spec.streaming:
                data = builder.as_streaming_dataset(split=spec.split or "train")
            else:
                builder.download_and_prepare()
                data = builder.as_dataset(split=spec.split or "train")
            # for a hub dataset the builder's hash is the resolved commit; for local files a
            # hash of the files: either way it changes when the data does
            source |= {"format": builder.name, "resolved": builder.hash}
            if local is not None:
                source["path"] = str(local.resolve())
    except (datasets.exceptions.DatasetNotFoundError, FileNotFoundError, ValueError, ConnectionError) as exc:
        raise BadInput(f"--dataset {spec.name!r} cannot be loaded: {_first_sentence(exc)}{_offline_hint(local)}") \
            from None
    return data, source


def _from_disk(spec: DatasetSpec, path: Path):
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        split = spec.split or "train"
        if split not in data:
            raise BadInput(f"--split {split!r} is not in {str(path)!r}; splits: {', '.join(data)}")
        data = data[split]
    elif spec.split is not None and spec.split != str(data.split):
        held = f"only its {str(data.split)!r} split" if data.split else "a single dataset with no named split"
        raise BadInput(f"--split {spec.split!r}: {str(path)!r} holds {held}; leave --split out")
    return data


def _builder(spec: DatasetSpec, local: Path | None):
    import datasets

    if local is not None and local.is_file():
        kind = _FILE_BUILDERS.get(local.suffix.lower())
        if kind is None:
            raise BadInput(f"--dataset {spec.name!r}: a {local.suffix or 'suffix-less'} file is not a dataset; "
                           f"allowed: {', '.join(_FILE_BUILDERS)} or a directory")
        extra = {"sample_by": "document"} if kind == "text" else {}
        return datasets.load_dataset_builder(kind, data_files={spec.split or "train": str(local)}, **extra)
    return datasets.load_dataset_builder(str(local) if local else spec.name, spec.config, revision=spec.revision)


def _first_sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."


def _offline_hint(local: Path | None) -> str:
    import os

    if local is None and os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0")) not in ("", "0"):
        return " (offline: fetch it once online with the same --config/--split/--revision, or pass a local directory)"
    return ""


def _fields(data) -> dict[str, str]:
    """Every field of the dataset, nested ones dotted, with its type (``string``, ``int64``, ...).

    A streamed json dataset may not know its features before reading: then the first record
    tells (one record, not the dataset).
    """
    features = data.features
    if features is None:
        first = next(iter(data.take(1)), {})
        return dict(_walk_values(first))
    return dict(_walk_features(features))


def _walk_features(features, prefix: str = "") -> Iterator[tuple[str, str]]:
    import datasets

    for key, value in features.items():
        name = f"{prefix}{key}"
        if isinstance(value, (dict, datasets.Features)):
            yield name, "struct"
            yield from _walk_features(value, name + ".")
        else:
            yield name, getattr(value, "dtype", type(value).__name__)


def _walk_values(record: dict, prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield name, "struct"
            yield from _walk_values(value, name + ".")
        else:
            yield name, "string" if isinstance(value, str) else type(value).__name__


def _check_fields(spec: DatasetSpec, fields: dict[str, str]) -> None:
    _check_field(spec, fields, spec.text_field, "text")
    if spec.domain_field:
        _check_field(spec, fields, spec.domain_field, "domain")


def _check_field(spec: DatasetSpec, fields: dict[str, str], field: str, role: str) -> None:
    flag = "--text-field" if role == "text" else "--domain-field"
    if field not in fields:
        have = ", ".join(fields) or "none"
        raise BadInput(f"{flag} {field!r}: dataset {spec.name!r} has no field {field!r} (fields: {have})")
    if role == "text" and fields[field] not in ("string", "large_string"):
        raise BadInput(f"{flag} {field!r} of dataset {spec.name!r} holds {fields[field]}, not text; "
                       f"text fields: {', '.join(f for f, t in fields.items() if t in ('string', 'large_string'))}")


def _get(row: dict, path: list[str]) -> object:
    for key in path:
        if not isinstance(row, dict):
            return None
        row = row.get(key)
    return row


def _column(batch: dict, field: str) -> list:
    """One field's values in a batch (dotted paths walk the nested records)."""
    top, *rest = field.split(".")
    values = batch[top]
    return list(values) if not rest else [_get(v, rest) for v in values]


def batches(opened: OpenDataset, batch_size: int) -> Iterator[tuple[list[str | None], list[str]]]:
    """``(texts, domains)`` of consecutive documents, in the dataset's order.

    Raises:
        BadInput: more than MAX_DOMAINS distinct domain values.
    """
    spec = opened.spec
    single = default_domain(spec)
    seen: set[str] = set()
    for batch in opened.data.iter(batch_size=batch_size):
        texts = _column(batch, spec.text_field)
        if not spec.domain_field:
            yield texts, [single] * len(texts)
            continue
        domains = [domain_name(v) if v is not None else "unknown" for v in _column(batch, spec.domain_field)]
        seen.update(domains)
        if len(seen) > MAX_DOMAINS:
            raise BadInput(f"--domain-field {spec.domain_field!r} has more than {MAX_DOMAINS} distinct values "
                           f"(e.g. {', '.join(sorted(seen)[:3])}); a domain field names a few sources")
        yield texts, domains
