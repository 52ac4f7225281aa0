"""Depth pruning that drops the last decoder layers: the control that needs no data.

Later layers are often the least important in trained LLMs (Gromov et al. 2024), so this
baseline tells whether a scored depth method buys anything. The final norm and LM head stay.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.pruning import common
from engine.pruning.args import DepthArgs
from engine.pruning.report import PruneReport


def prune(model: nn.Module, ratio: float, calib: torch.Tensor | None = None, *,
          args: dict[str, Any] | None = None) -> PruneReport:
    """Drop the last ``k`` decoder layers, ``k`` the nearest count to ``ratio``.

    Args:
        model: Llama / Qwen2 causal LM, pruned in place.
        ratio: target fraction of parameters to remove (0 changes nothing).
        calib: ignored (this method needs no data).
        args: :class:`engine.pruning.args.DepthArgs` fields, checked (none changes which layers go).

    Raises:
        BadInput: a ratio no whole number of layers reaches.
    """
    ratio = common.check_ratio(ratio)
    DepthArgs.from_dict(args)
    before = common.start(model)
    n_layers = len(common.decoder_layers(model))
    n_drop = common.layers_to_drop(model, ratio, "depth-last")
    drop = list(range(n_layers - n_drop, n_layers))
    keep = common.drop_layers(model, drop) if drop else list(range(n_layers))
    choices = common.depth_choices(model, keep, n_layers, None)
    return common.finish("depth-last", ratio, model, before, choices,
                         [f"dropped the last {n_drop} of {n_layers} layers"])
