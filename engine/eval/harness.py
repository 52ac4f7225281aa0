"""Score a model with lm-evaluation-harness: ``HFLM`` around the loaded model, ``simple_evaluate``.

The model is loaded the engine's way (``engine.models.load_model``: a save_pretrained
directory such as any ``engine prune`` output, a hub id, or ``random:PRESET`` for a random-init
baseline) and
handed to the harness as an instance, so pruned shapes need nothing beyond transformers.
Tasks are the harness's own plus the offline ``corpus_ppl`` family (``engine.eval.tasks``),
found through a ``TaskManager`` include path. ``lm_eval`` and torch are imported only here,
inside the functions, so ``engine --help`` stays fast.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data.cli import BadInput
from engine.eval import tasks as local

MAX_LIMIT = 10_000_000
MAX_BATCH = 4096
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class EvalRequest:
    """One ``engine eval`` invocation, fully resolved."""

    model: str
    """A save_pretrained directory (e.g. an ``engine prune`` output), a hub id
    ``org/name[@revision]``, or ``random:PRESET`` (random init)."""
    tasks: tuple[str, ...]
    """lm-eval task names and/or the local ``corpus_ppl`` / ``corpus_ppl_<domain>``."""
    tokenizer: str | None = None
    """Tokenizer directory, ``llama3`` or ``qwen2.5``; None: the model directory's own."""
    data: str | None = None
    """Source of the local tasks: corpus dir, shard dir (its corpus) or a .txt/.jsonl file."""
    limit: int | None = None
    """Documents per task (None: all)."""
    batch_size: int = 8
    """Sequences (rolling windows) per forward pass."""
    device: str = "auto"
    """``auto`` (cuda when available), ``cpu`` or ``cuda``."""
    dtype: str = "auto"
    """``auto`` (bf16 on cuda, fp32 on cpu), ``fp32`` or ``bf16``."""

    def __post_init__(self) -> None:
        if not self.tasks or any(not t for t in self.tasks):
            raise BadInput(f"--tasks {','.join(self.tasks)!r} names no task; e.g. --tasks {local.TASK}")
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise BadInput(f"--limit {self.limit} must be between 1 and {MAX_LIMIT} documents per task")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise BadInput(f"--batch-size {self.batch_size} must be between 1 and {MAX_BATCH}")
        wants_local = [t for t in self.tasks if local.is_local(t)]
        if wants_local and self.data is None:
            raise BadInput(f"task {wants_local[0]!r} needs --data CORPUS_DIR|SHARDS_DIR|FILE (its documents)")


@dataclass(frozen=True)
class TaskResult:
    """One task's (or group's) metrics as the harness aggregated them."""

    metrics: dict[str, float]
    """``word_perplexity``, ``acc``, ...; a non-default filter is kept as ``acc,strict-match``."""
    stderr: dict[str, float | None]
    """Standard error per metric (None where the harness gives none, e.g. perplexities)."""
    documents: int | None
    """Documents scored (after --limit); None for a group."""
    available: int | None
    """Documents the task has."""
    higher_is_better: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalReport:
    """What ``engine eval`` writes to ``--out`` and into the run store."""

    model: str
    tokenizer: str
    tasks: dict[str, TaskResult]
    limit: int | None
    batch_size: int
    device: str
    dtype: str
    data: str | None
    data_sha256: str | None
    lm_eval_version: str
    created: str
    configs: dict[str, Any]
    """The harness's resolved task configs (provenance: dataset, metrics, version)."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the model came from (``data.hub``: a hub model's commit, a random init's preset)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{'task':<24} {'metric':<18} {'value':>14}  docs"]
        for name, result in self.tasks.items():
            for metric, value in result.metrics.items():
                err = result.stderr.get(metric)
                shown = f"{value:.6g}" + (f" ± {err:.2g}" if err is not None else "")
                lines.append(f"{name:<24} {metric:<18} {shown:>14}  {result.documents or '-'}")
        return "\n".join(lines)


def check_model(model: str) -> Any:
    """Refuse a bad MODEL before anything heavy loads (a hub model: its config.json at most)."""
    from engine.models import check_model_source

    return check_model_source(model)


def _tokenizer_source(req: EvalRequest, model_dir: Path | None) -> str:
    if req.tokenizer is not None:
        return req.tokenizer
    path = model_dir
    if path is not None and ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return str(path)
    raise BadInput(f"model {req.model!r} carries no tokenizer; pass --tokenizer DIR|llama3|qwen2.5 "
                   "(e.g. the tokenizer/ folder of the shards it was trained on)")


def _task_manager(req: EvalRequest, task_dir: Path | None, local_names: list[str]) -> Any:
    """A TaskManager over the local tasks, plus the harness's own only when one is asked for
    (indexing its ~15k task files costs seconds)."""
    from lm_eval.tasks import TaskManager

    for name in req.tasks:
        if local.is_local(name) and name not in local_names:
            raise BadInput(f"task {name!r} is not in --data {req.data!r}; local tasks there: {', '.join(local_names)}")
    others = [t for t in req.tasks if not local.is_local(t)]
    manager = TaskManager(include_path=str(task_dir) if task_dir else None, include_defaults=bool(others))
    known = set(manager.all_tasks)
    for name in others:
        if name not in known:
            raise BadInput(f"unknown task {name!r}; allowed: {local.TASK}, {local.TASK}_<domain> (with --data) "
                           "or an lm-eval task ('lm-eval ls tasks')")
    return manager


def _load_tasks(req: EvalRequest, manager: Any) -> list[Any]:
    """Every task built, its dataset read, before the model loads.

    A hub task whose dataset is not in the local HF cache fails offline (a ConnectionError deep
    in ``datasets``); built here first, it fails in seconds naming the task and the remedy,
    instead of after the model load. The built objects are what the harness then evaluates.

    Raises:
        BadInput: a task whose data is not available offline.
    """
    built: list[Any] = []
    for name in req.tasks:
        try:
            loaded = manager.load([name])
        except OSError as exc:  # ConnectionError, OfflineModeIsEnabled, DatasetNotFoundError
            if local.is_local(name):
                raise
            from datasets import config

            raise BadInput(f"task {name!r}: its dataset is not available offline ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'not cached'}); fetch it once into the HF "
                           f"datasets cache {config.HF_DATASETS_CACHE} with network access (HF_DATASETS_OFFLINE=0 "
                           f"HF_HUB_OFFLINE=0 engine eval ... --tasks {name}), or score offline with --tasks "
                           f"{local.TASK} --data CORPUS_DIR") from None
        top = loaded["groups"].get(name, loaded["tasks"].get(name))
        built += [top] if top is not None else list(loaded["tasks"].values())  # a tag: its tasks
    return built


def _device_dtype(req: EvalRequest) -> tuple[str, Any]:
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if req.device == "auto" else req.device
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is visible; use --device cpu")
    dtype = req.dtype if req.dtype != "auto" else ("bf16" if device == "cuda" else "fp32")
    return device, {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]


def _load(req: EvalRequest, device: str, dtype: Any) -> tuple[Any, Any, str, dict[str, Any]]:
    """(model, tokenizer, tokenizer source, model provenance); a hub model carries its tokenizer."""
    from data.tokenizers import load_tokenizer
    from engine.models import load_model, resolve_model

    resolved = resolve_model(req.model)
    source = _tokenizer_source(req, resolved.path)
    tokenizer = load_tokenizer(source)
    model = load_model(resolved, dtype=dtype, vocab=len(tokenizer)).to(device)
    model.eval()
    if len(tokenizer) > model.config.vocab_size:
        raise BadInput(f"tokenizer {source!r} has {len(tokenizer)} tokens but model {req.model!r} only "
                       f"{model.config.vocab_size}: not the model's tokenizer")
    if resolved.path is None or resolved.snapshot is not None:  # a random init, or which commit
        print(f"engine eval: {resolved.describe()}", file=sys.stderr)
    return model, tokenizer, source, resolved.record()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _task_result(entry: dict[str, Any], samples: dict[str, int] | None, better: dict[str, bool]) -> TaskResult:
    """lm-eval's ``"word_perplexity,none": x, "word_perplexity_stderr,none": "N/A"`` -> typed."""
    metrics: dict[str, float] = {}
    stderr: dict[str, float | None] = {}
    for key, value in entry.items():
        if "," not in key:
            continue  # alias, name, sample_len
        metric, filt = key.split(",", 1)
        is_err = metric.endswith("_stderr")
        base = metric[: -len("_stderr")] if is_err else metric
        name = base if filt == "none" else f"{base},{filt}"
        if is_err:
            stderr[name] = _number(value)
        elif _number(value) is not None:
            metrics[name] = _number(value)
    counts = samples or {}
    return TaskResult(metrics, {m: stderr.get(m) for m in metrics}, counts.get("effective"), counts.get("original"),
                      {m: bool(better[m.split(",")[0]]) for m in metrics if m.split(",")[0] in better})


def evaluate(req: EvalRequest) -> EvalReport:
    """Run the harness on ``req``; returns the typed report.

    Raises:
        BadInput: a bad model, tokenizer, data source or task name (all before the first forward).
    """
    model_source = check_model(req.model)
    if model_source.kind != "hub":  # a hub snapshot's tokenizer is known once it is fetched
        _tokenizer_source(req, model_source.path)
    docs = local.read_documents(req.data) if req.data is not None else None
    # Nothing may be fetched at run time (docs/design-contract.md); a user who wants a hub task sets these to 0.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="prunelaw-eval-") as tmp:
        task_dir = Path(tmp) / "tasks" if docs is not None else None
        names = local.write_tasks(docs, task_dir) if docs is not None else []
        manager = _task_manager(req, task_dir, names)
        built = _load_tasks(req, manager)
        device, dtype = _device_dtype(req)
        model, tokenizer, tok_source, provenance = _load(req, device, dtype)
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=req.batch_size)
        out = lm_eval.simple_evaluate(model=lm, tasks=built, task_manager=manager, limit=req.limit,
                                      log_samples=False)
    better = out.get("higher_is_better", {})
    results = {name: _task_result(entry, out.get("n-samples", {}).get(name), better.get(name, {}))
               for name, entry in out["results"].items()}
    for name, result in results.items():
        bad = [m for m, v in result.metrics.items() if not math.isfinite(v)]
        if bad:
            print(f"engine eval: warning: {name} {bad[0]} is {result.metrics[bad[0]]} (model diverged?)",
                  file=sys.stderr)
    return EvalReport(
        model=req.model, tokenizer=tok_source, tasks=results, limit=req.limit, batch_size=req.batch_size,
        device=device, dtype=str(dtype).removeprefix("torch."), data=req.data,
        data_sha256=docs.sha256() if docs is not None else None, lm_eval_version=lm_eval.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), configs=_plain(out.get("configs", {})),
        source=provenance)


def _plain(obj: Any) -> Any:
    """JSON-ready copy of the harness's configs (they may hold callables and numpy scalars)."""
    import json

    from lm_eval.utils import handle_non_serializable

    return json.loads(json.dumps(obj, default=handle_non_serializable))
