"""Depth pruning of one contiguous block (Minitron, Muralidharan et al. 2024).

Every window of ``k`` consecutive layers is tried: the block is skipped (by temporarily
replacing the layer list, no copy of the weights) and the calibration LM loss measured. The
window whose removal hurts the loss least is dropped for good.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.pruning import common
from engine.pruning.args import DepthArgs
from engine.pruning.report import PruneReport


def _loss_without(model: nn.Module, start: int, k: int, calib: torch.Tensor, batch_size: int) -> float:
    """Calibration loss with layers ``start..start+k-1`` skipped (model restored afterwards)."""
    layers = model.model.layers
    n = len(layers)
    cfg = model.config
    saved = (cfg.num_hidden_layers, getattr(cfg, "layer_types", None))
    keep = [i for i in range(n) if not start <= i < start + k]
    # Only the module list and the config's layer count change; layer_idx is irrelevant
    # without a KV cache (eval_loss runs with use_cache=False).
    model.model.layers = nn.ModuleList([layers[i] for i in keep])
    cfg.num_hidden_layers = len(keep)
    if isinstance(saved[1], list):
        cfg.layer_types = [saved[1][i] for i in keep]
    try:
        return common.eval_loss(model, calib, batch_size)
    finally:
        model.model.layers = layers
        cfg.num_hidden_layers = saved[0]
        if isinstance(saved[1], list):
            cfg.layer_types = saved[1]


def prune(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
          args: dict[str, Any] | None = None) -> PruneReport:
    """Drop the contiguous block of layers whose removal gives the lowest calibration loss.

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
    k = common.layers_to_drop(model, ratio, "depth-block")
    scores = None
    drop: list[int] = []
    if k:
        calib = common.check_calib(calib, "depth-block")
        batch = DepthArgs.from_dict(args).batch_size
        from engine.pruning.progress import bar

        windows = range(n_layers - k + 1)
        scores = [_loss_without(model, s, k, calib, batch) for s in bar(windows, "depth-block windows", unit="window")]
        best = min(range(len(scores)), key=scores.__getitem__)
        drop = list(range(best, best + k))
    keep = common.drop_layers(model, drop) if drop else list(range(n_layers))
    choices = common.depth_choices(model, keep, n_layers, None)
    if scores is not None:
        choices["block_losses"] = {f"{s}-{s + k - 1}": round(v, 6) for s, v in enumerate(scores)}
    notes = [f"dropped layers {drop[0]}-{drop[-1]} (lowest calibration loss of "
             f"{len(scores)} windows)" if drop else "nothing dropped"]
    return common.finish("depth-block", ratio, model, before, choices, notes)
