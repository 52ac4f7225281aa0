"""Adapters from a job to the other packages: token shards, models, pruning, calibration.

The recipe talks to data only through :class:`TokenData`, so tests can hand it a small
in-memory corpus and production hands it :class:`ShardData` (``data.shards`` +
``data.loader``). Imports of those packages happen inside functions: ``engine grid plan``
must stay free of torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from data.cli import BadInput
from engine.train.config import RUN_PREFIX, DataConfig, JobConfig


class TokenData(Protocol):
    """What the recipe needs from a corpus (all tensors are LongTensor [rows, seq_len])."""

    seq_len: int
    vocab_size: int
    domains: list[str]
    """Training domains: ``eval_loss`` is the token-weighted mean over these."""
    eval_domains: list[str]
    """Domains of the held-out split (may add eval-only ones, reported but not averaged)."""

    def train_batches(self, rows: int, seed: int, reference: dict[str, float] | None = None) -> "Stream": ...

    def eval_batches(self, domain: str, batch_size: int, max_sequences: int) -> Iterable[Any]: ...

    def calibration(self, n: int, seed: int) -> Any: ...


class Stream(Protocol):
    """An endless iterator of training batches whose position can be checkpointed."""

    def __iter__(self) -> Iterator[Any]: ...

    def __next__(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class ShardData:
    """A ``data.shards.ShardSet`` seen through :class:`TokenData`, optionally cut to ``seq_len``."""

    shards: Any
    seq_len: int
    config: DataConfig

    @property
    def vocab_size(self) -> int:
        return int(self.shards.vocab_size)

    @property
    def domains(self) -> list[str]:
        return list(self.shards.domains)

    @property
    def eval_domains(self) -> list[str]:
        return list(self.shards.split_domains("eval"))

    def train_batches(self, rows: int, seed: int, reference: dict[str, float] | None = None) -> Stream:
        """The GLOBAL micro-batch stream (every rank reads the same rows and keeps its slice),
        so N processes see exactly the batches one process sees: curves match across world
        sizes by construction, and the loader's state is the same on every rank.

        ``reference``: per-domain target losses for dynamic loading (the parent's losses).
        """
        from data.loader import DynamicConfig, MixtureLoader

        dynamic = None
        if self.config.dynamic:
            dynamic = DynamicConfig(reference_losses={d: reference[d] for d in self.domains},  # type: ignore[index]
                                    update_every=self.config.dynamic_every)
        loader = MixtureLoader(self.shards, micro_batch=rows, split="train", rank=0, world_size=1,
                               seed=seed, weights=self.config.weights, dynamic=dynamic)
        return _Cut(loader, self.seq_len)

    def eval_batches(self, domain: str, batch_size: int, max_sequences: int) -> Iterable[Any]:
        from data.loader import eval_batches

        for batch in eval_batches(self.shards, domain, batch_size=batch_size, max_sequences=max_sequences):
            yield batch[:, : self.seq_len]

    def calibration(self, n: int, seed: int) -> Any:
        from data.calib import sample_calibration

        return sample_calibration(self.shards.path, n, self.seq_len, split="train", seed=seed)


class _Cut:
    """Wrap a loader, cutting batches to the job's sequence length."""

    def __init__(self, loader: Any, seq_len: int) -> None:
        self.loader, self.seq_len, self._it = loader, seq_len, iter(loader)

    def __iter__(self) -> "_Cut":
        return self

    def __next__(self) -> Any:
        return next(self._it)[:, : self.seq_len]

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
        self._it = iter(self.loader)

    @property
    def update_due(self) -> bool:
        """Dynamic loading wants fresh per-domain losses now."""
        return bool(getattr(self.loader, "update_due", False))

    def update_domain_losses(self, losses: dict[str, float]) -> None:
        self.loader.update_domain_losses(losses)


def open_shards(cfg: DataConfig) -> ShardData:
    """Open the job's shard directory.

    Raises:
        BadInput: missing directory, or ``seq_len`` longer than the shards' sequences.
    """
    if not Path(cfg.shards).is_dir():
        raise BadInput(f"data.shards={cfg.shards!r} is not a directory (write one with 'data prepare')")
    from data.shards import ShardSet

    shards = ShardSet(cfg.shards)
    seq_len = cfg.seq_len or int(shards.seq_len)
    if seq_len > shards.seq_len:
        raise BadInput(f"data.seq_len={seq_len} exceeds the shards' sequence length {shards.seq_len}")
    return ShardData(shards, seq_len, cfg)


# -- parents ---------------------------------------------------------------------------------

def resolve_parent(parent: str, runs_dir: str | Path) -> str:
    """A job's ``parent`` as something ``engine.models.load_model`` takes (dir or preset)."""
    if parent.startswith(RUN_PREFIX):
        return str(Path(runs_dir) / parent[len(RUN_PREFIX):] / "model")
    return parent


def parent_max_positions(parent: str, runs_dir: str | Path) -> int | None:
    """The parent's position limit without loading it (None: not knowable yet)."""
    from data.hub import max_positions, parse_model_source

    where = resolve_parent(parent, runs_dir)
    if parent.startswith(RUN_PREFIX) and not Path(where).is_dir():
        return None  # the grid has not trained it yet; its own job carries the preset
    return max_positions(parse_model_source(where))


def check_parent(job: JobConfig, known_runs: Iterable[str] = ()) -> None:
    """Fail early on a parent that is neither a HF directory, a hub model, a preset, nor a known
    run (a hub model: its config.json is read, never its weights).

    Args:
        known_runs: run ids that will produce a model before this job runs (grid parents).
    """
    if job.parent.startswith(RUN_PREFIX):
        run_id = job.parent[len(RUN_PREFIX):]
        if run_id in set(known_runs) or (Path(resolve_parent(job.parent, job.runs_dir)) / "config.json").is_file():
            return
        raise BadInput(f"parent {job.parent!r}: run {run_id!r} has no saved model in {job.runs_dir} "
                       "and is not a parent job of this grid")
    from data.hub import parse_model_source, plan_config

    source = parse_model_source(job.parent)
    if source.kind == "dir" and not (source.path / "config.json").is_file():
        raise BadInput(f"parent {job.parent!r} has no config.json (expected a save_pretrained directory)")
    if source.kind == "hub":
        plan_config(source)


def job_seq_len(job: JobConfig) -> int | None:
    """The sequence length a job will train at, checked against its shards without torch.

    None while the shard directory does not exist yet (a grid may build it first).

    Raises:
        BadInput: ``data.seq_len`` longer than the shards' sequences.
    """
    if not Path(job.data.shards).is_dir():
        return job.data.seq_len
    from data.shards import ShardSet

    have = ShardSet(job.data.shards).seq_len
    if job.data.seq_len is not None and job.data.seq_len > have:
        raise BadInput(f"data.seq_len={job.data.seq_len} exceeds the shards' sequence length {have}")
    return job.data.seq_len or have


def check_seq_len(job: JobConfig, seq_len: int) -> None:
    """Reject a sequence length beyond the parent's positions (RoPE tables stop there)."""
    limit = parent_max_positions(job.parent, job.runs_dir)
    if limit is not None and seq_len > limit:
        raise BadInput(f"data.seq_len={seq_len} exceeds the parent's max_position_embeddings={limit}")


def check_budget(job: JobConfig, world_size: int, seq_len: int) -> None:
    """A budget below one optimizer step would train nothing: say how small it may be."""
    from engine.train.dsconfig import tokens_per_step

    step = tokens_per_step(job, world_size, seq_len)
    if job.tokens < step:
        raise BadInput(f"tokens={job.tokens} is smaller than one optimizer step ({step} tokens = "
                       f"micro_batch x grad_accum x {world_size} process(es) x seq_len {seq_len})")
