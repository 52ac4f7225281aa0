"""Training batches from token shards: a deterministic, resumable, distributed-aware domain
mixture, with Sheared-LLaMA's dynamic batch loading as an option; plus the eval iterator.

Sampling scheme (why it is resumable and rank-disjoint):
- Each domain's sequences are permuted once per domain-epoch by a keyed Feistel bijection
  (``(seed, domain, epoch)``; O(1) memory, nothing of corpus size is materialised); rank r
  reads positions r, r+W, r+2W, ... of that permutation, so two ranks never read the same
  sequence within an epoch.
- At step t the number of rows per domain is drawn from a multinomial seeded by ``(seed, t)``,
  the same on every rank (same mixture everywhere, no communication).
- The state is only ``step``, per-domain ``(epoch, cursor)`` and the weights: a saved state
  continues with exactly the next batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from data.cli import BadInput
from data.shards import ShardSet

_MIX_STREAM = 0x5EED  # separates the per-step mixture RNG from the per-domain permutation RNG


def _mix(x: np.ndarray, key: int) -> np.ndarray:
    """A keyed 64-bit mixer (splitmix64 finaliser): the Feistel round function."""
    with np.errstate(over="ignore"):  # wrap-around multiplication is the point
        x = (x ^ np.uint64(key)) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(31))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(29))


def feistel_permute(positions: np.ndarray, n: int, key: tuple[int, ...], rounds: int = 4) -> np.ndarray:
    """Image of ``positions`` under a pseudo-random permutation of ``[0, n)`` chosen by ``key``.

    A balanced Feistel network on the smallest even bit width covering n, with cycle walking
    back into range: a bijection computed in O(1) memory, so the loader never materialises an
    index array of corpus size (memory does not grow with the corpus).
    """
    half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = np.random.default_rng(list(key)).integers(0, 2**63, size=rounds, dtype=np.uint64)
    x = np.asarray(positions, dtype=np.uint64)
    out = np.empty_like(x)
    todo = np.ones(len(x), dtype=bool)
    while todo.any():  # cycle walking: expected < 4 passes since 4^half < 4n
        y = x[todo]
        left, right = y >> np.uint64(half), y & mask
        for k in keys:
            left, right = right, left ^ (_mix(right, int(k)) & mask)
        y = (left << np.uint64(half)) | right
        out[todo], x[todo] = y, y
        todo[todo] = y >= np.uint64(n)
    return out.astype(np.int64)


@dataclass(frozen=True)
class DynamicConfig:
    """Sheared-LLaMA dynamic batch loading (Xia et al. 2023, Alg. 1).

    Every ``update_every`` steps the engine evaluates each domain and calls
    ``MixtureLoader.update_domain_losses``; weights move towards domains whose loss is furthest
    above its reference: ``a = w * exp(step_size * max(L - L_ref, 0))``,
    ``w <- (1 - smoothing) * a / sum(a) + smoothing / k``.
    """

    reference_losses: dict[str, float]  # per-domain target loss (e.g. the unpruned parent's)
    update_every: int = 50             # steps between weight updates
    step_size: float = 1.0             # eta: how strongly an excess loss moves the weights
    smoothing: float = 1e-4            # c: floor that keeps every domain sampled

    def __post_init__(self) -> None:
        if self.update_every < 1:
            raise BadInput(f"dynamic update_every {self.update_every} must be >= 1")
        if self.step_size <= 0 or not 0 <= self.smoothing < 1:
            raise BadInput(f"dynamic step_size {self.step_size} must be > 0 and smoothing {self.smoothing} in [0, 1)")
        bad = {d: v for d, v in self.reference_losses.items() if not math.isfinite(v)}
        if bad:
            raise BadInput(f"reference loss {bad} is not finite")


def dynamic_update(weights: dict[str, float], losses: dict[str, float], cfg: DynamicConfig) -> dict[str, float]:
    """One Sheared-LLaMA weight update (see DynamicConfig); returns new normalised weights."""
    names = list(weights)
    w = np.array([weights[d] for d in names], dtype=np.float64)
    excess = np.array([max(losses[d] - cfg.reference_losses[d], 0.0) for d in names])
    # exp of a large excess overflows; subtracting the max rescales a and leaves a/sum(a) unchanged.
    logits = np.log(np.maximum(w, 1e-300)) + cfg.step_size * excess
    alpha = np.exp(logits - logits.max())
    new = (1 - cfg.smoothing) * alpha / alpha.sum() + cfg.smoothing / len(names)
    return dict(zip(names, (float(x) for x in new / new.sum()), strict=True))


@dataclass
class _DomainCursor:
    epoch: int = 0
    cursor: int = 0  # position in this rank's share of the epoch's permutation


class MixtureLoader:
    """Endless iterator of LongTensor ``[micro_batch, seq_len]`` batches (labels = input ids).

    Args:
        shards: the ShardSet to read.
        micro_batch: rows per batch on this rank.
        split: ``train`` (or ``eval`` for experiments on held-out data).
        rank, world_size: this process's data-parallel rank; ranks read disjoint sequences.
        seed: fixes permutations and the mixture draws.
        weights: domain -> sampling weight (normalised); default proportional to sequences.
        dynamic: enables dynamic batch loading (then every training domain needs a reference).
    """

    def __init__(self, shards: ShardSet, *, micro_batch: int, split: str = "train", rank: int = 0,
                 world_size: int = 1, seed: int = 0, weights: dict[str, float] | None = None,
                 dynamic: DynamicConfig | None = None) -> None:
        if micro_batch < 1:
            raise BadInput(f"micro_batch {micro_batch} must be >= 1")
        if not 0 <= rank < world_size:
            raise BadInput(f"rank {rank} must be in [0, world_size={world_size})")
        self.shards, self.micro_batch, self.split = shards, micro_batch, split
        self.rank, self.world_size, self.seed, self.dynamic = rank, world_size, seed, dynamic
        names = shards.domains if split == "train" else shards.split_domains(split)
        self._domains = [d for d in names if shards.num_sequences(split, d) >= world_size]
        if not self._domains:
            raise BadInput(f"no domain of split {split!r} in {str(shards.path)!r} has >= {world_size} sequences")
        self.weights = self._initial_weights(weights)
        if dynamic is not None:
            missing = [d for d in self._domains if d not in dynamic.reference_losses]
            if missing:
                raise BadInput(f"dynamic loading needs a reference loss for domain {missing[0]!r}")
        self.step = 0
        self._cursors = {d: _DomainCursor() for d in self._domains}

    def _initial_weights(self, weights: dict[str, float] | None) -> dict[str, float]:
        if weights is None:
            raw = {d: float(self.shards.num_sequences(self.split, d)) for d in self._domains}
        else:
            unknown = [d for d in weights if d not in self._domains]
            if unknown:
                raise BadInput(f"weight for unknown domain {unknown[0]!r}; domains: {', '.join(self._domains)}")
            if any(w < 0 or not math.isfinite(w) for w in weights.values()):
                raise BadInput(f"domain weights {weights} must be finite and >= 0")
            raw = {d: float(weights.get(d, 0.0)) for d in self._domains}
        total = sum(raw.values())
        if total <= 0:
            raise BadInput(f"domain weights {weights} sum to zero")
        return {d: w / total for d, w in raw.items()}

    # -- the sampling scheme ------------------------------------------------------------------
    def _take(self, domain: str, count: int) -> np.ndarray:
        """Next ``count`` sequence indices of a domain for this rank, rolling into new epochs.

        Rank r reads positions r, r+W, ... of the epoch's permutation, truncated to an equal
        share per rank (every rank runs the same number of steps per epoch)."""
        state, parts = self._cursors[domain], []
        n = self.shards.num_sequences(self.split, domain)
        per_rank = n // self.world_size
        while count > 0:
            grab = min(count, per_rank - state.cursor)
            positions = (np.arange(state.cursor, state.cursor + grab) * self.world_size + self.rank)
            key = (self.seed, self._domains.index(domain), state.epoch)
            parts.append(feistel_permute(positions, n, key))
            state.cursor, count = state.cursor + grab, count - grab
            if state.cursor >= per_rank:
                state.epoch, state.cursor = state.epoch + 1, 0
        return np.concatenate(parts)

    def _counts(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _MIX_STREAM, self.step])
        p = np.array([self.weights[d] for d in self._domains], dtype=np.float64)
        return rng.multinomial(self.micro_batch, p / p.sum())

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        rows = []
        for domain, count in zip(self._domains, self._counts(), strict=True):
            if count:
                idx = self._take(domain, int(count))
                rows.append(self.shards.read_rows(self.split, domain, idx).astype(np.int64))
        self.step += 1
        return torch.from_numpy(np.concatenate(rows, axis=0))  # [micro_batch, seq_len] int64

    # -- dynamic batch loading -----------------------------------------------------------------
    @property
    def update_due(self) -> bool:
        """True when dynamic loading wants fresh per-domain eval losses (every K steps)."""
        return self.dynamic is not None and self.step > 0 and self.step % self.dynamic.update_every == 0

    def update_domain_losses(self, losses: dict[str, float]) -> dict[str, float]:
        """Apply one dynamic-loading update from per-domain eval losses; returns the weights."""
        if self.dynamic is None:
            raise BadInput("update_domain_losses needs dynamic loading (pass dynamic=DynamicConfig(...))")
        missing = [d for d in self._domains if d not in losses]
        if missing:
            raise BadInput(f"no eval loss for domain {missing[0]!r}; need all of {', '.join(self._domains)}")
        self.weights = dynamic_update(self.weights, losses, self.dynamic)
        return self.weights

    # -- resumption ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue with exactly the next batch (JSON-serialisable)."""
        return {"step": self.step, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "split": self.split, "weights": dict(self.weights),
                "domains": {d: {"epoch": c.epoch, "cursor": c.cursor} for d, c in self._cursors.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``; the sampling setup must match the saved one."""
        for key in ("seed", "world_size", "split"):
            if state[key] != getattr(self, key):
                raise BadInput(f"loader state has {key}={state[key]!r} but this loader has {getattr(self, key)!r}")
        if sorted(state["domains"]) != sorted(self._domains):
            raise BadInput(f"loader state domains {sorted(state['domains'])} differ from {sorted(self._domains)}")
        self.step = int(state["step"])
        self.weights = {d: float(state["weights"][d]) for d in self._domains}
        self._cursors = {d: _DomainCursor(int(v["epoch"]), int(v["cursor"])) for d, v in state["domains"].items()}


def eval_batches(shards: ShardSet, domain: str, *, batch_size: int, max_sequences: int | None = None,
                 split: str = "eval") -> Iterator[torch.Tensor]:
    """All (or the first ``max_sequences``) sequences of one domain's eval split, in file order,
    as LongTensor batches ``[<=batch_size, seq_len]``. Deterministic: the same every call."""
    if batch_size < 1:
        raise BadInput(f"batch_size {batch_size} must be >= 1")
    arr = shards.sequences(split, domain)
    stop = len(arr) if max_sequences is None else min(len(arr), max_sequences)
    for start in range(0, stop, batch_size):
        yield torch.from_numpy(np.asarray(arr[start:min(start + batch_size, stop)], dtype=np.int64))
