"""Held-out evaluation: per-domain next-token loss and their token-weighted mean."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

EvalSource = Callable[[str], Iterable[torch.Tensor]]
"""domain -> held-out batches, LongTensor [b, T]."""


@torch.no_grad()
def sequence_sums(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy of each sequence of ``ids`` [b, T] (fp32), every position
    but the first predicted: per sequence, so a bootstrap over the eval set's sequences can
    resample them (scripts/smollm2_evidence.py); the engine's eval sums them per domain."""
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
    ce = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return ce.sum(1)


@torch.no_grad()
def _domain_sums(model: nn.Module, batches: Iterable[torch.Tensor], rank: int, world: int,
                 shard: bool) -> tuple[float, int]:
    """(summed token CE, predicted tokens) of this rank's share of ``batches``."""
    total, count = 0.0, 0
    for i, ids in enumerate(batches):
        if shard and i % world != rank:
            continue
        total += float(sequence_sums(model, ids).double().sum())
        count += ids[:, 1:].numel()
    return total, count


def evaluate(model: nn.Module, domains: list[str], batches_of: EvalSource, *, shard: bool = True,
             device: torch.device | str = "cpu", mean_over: list[str] | None = None) -> dict[str, float]:
    """``{"eval_loss": mean, "eval_loss.<domain>": ...}`` over the held-out split.

    Args:
        model: the (DeepSpeed-wrapped) causal LM; put in eval mode for the pass, restored after.
        domains: domain names to evaluate.
        batches_of: domain -> iterable of held-out batches, identical on every rank.
        shard: split batches across ranks and all-reduce the sums. Must be False under ZeRO-3,
            where every rank has to join every forward (parameter gathers are collective).
        device: where batches go.
        mean_over: domains averaged into ``eval_loss`` (default all): the training domains,
            so an eval-only probe domain is reported without shifting the main curve.

    ``eval_loss`` is the token-weighted mean over domains, so a large domain counts more.
    """
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(domains), 2, dtype=torch.float64)
    for k, domain in enumerate(domains):
        batches = (b.to(device) for b in batches_of(domain))
        sums[k, 0], sums[k, 1] = _domain_sums(model, batches, rank, world, shard and world > 1)
    model.train(was_training)
    if distributed and shard and world > 1:
        sums = sums.to(device)  # nccl reduces device tensors only; gloo takes either
        dist.all_reduce(sums)
        sums = sums.cpu()
    result = {f"eval_loss.{d}": float(sums[k, 0] / sums[k, 1]) if sums[k, 1] else math.nan
              for k, d in enumerate(domains)}
    keep = [k for k, d in enumerate(domains) if mean_over is None or d in mean_over]
    loss_sum, tokens = float(sums[keep, 0].sum()), float(sums[keep, 1].sum())
    result["eval_loss"] = loss_sum / tokens if tokens else math.nan
    return result
