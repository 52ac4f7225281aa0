"""Depth pruning by block influence (ShortGPT, Men et al. 2024).

A layer's block influence is ``1 - cos(x_in, x_out)`` averaged over calibration tokens: a layer
that barely rotates the residual stream does little, so the layers with the lowest influence
are dropped. The target ratio maps to the nearest whole number of layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.pruning import common
from engine.pruning.args import DepthArgs
from engine.pruning.report import PruneReport


def prune(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
          args: dict[str, Any] | None = None) -> PruneReport:
    """Drop the decoder layers with the lowest block influence on ``calib``.

    Args:
        model: Llama / Qwen2 causal LM, pruned in place.
        ratio: target fraction of parameters to remove (0 changes nothing).
        calib: LongTensor [n, seq_len] of calibration ids.
        args: :class:`engine.pruning.args.DepthArgs` fields.

    Raises:
        BadInput: missing calibration, or a ratio no whole number of layers reaches.
    """
    ratio = common.check_ratio(ratio)
    before = common.start(model)
    n_layers = len(common.decoder_layers(model))
    n_drop = common.layers_to_drop(model, ratio, "depth")
    scores = None
    drop: list[int] = []
    if n_drop:
        calib = common.check_calib(calib, "depth")
        scores = common.block_influence(model, calib, DepthArgs.from_dict(args).batch_size)
        # argsort is stable: equal scores drop the earlier layer first, deterministically.
        drop = sorted(int(i) for i in torch.tensor(scores).argsort()[:n_drop])
    keep = common.drop_layers(model, drop) if drop else list(range(n_layers))
    choices = common.depth_choices(model, keep, n_layers, scores)
    notes = [f"dropped {len(drop)} of {n_layers} layers with the lowest block influence"]
    return common.finish("depth", ratio, model, before, choices, notes)
