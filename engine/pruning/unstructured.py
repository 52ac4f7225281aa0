"""Unstructured sparsity: remove any individual weights, at any ratio the targets allow.

The whole-model target ratio is mapped to ONE sparsity shared by every targeted linear
(uniform per layer, as Wanda and SparseGPT do): ``s = ratio * params_before / targeted``.
Ratios beyond the targeted share of the model are refused with the maximum named. Three
scorers: Wanda (default, per-output-row comparison), magnitude (per-matrix threshold) and
SparseGPT (OBS reconstruction of the kept weights).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from data.cli import BadInput
from engine.pruning.report import PruneReport
from engine.pruning.sparse_common import (Pattern, SparseArgs, check_ratio_open, run_sparse,
                                          total_params,
                                          target_weights)


def prune(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
          args: dict[str, Any] | None = None) -> PruneReport:
    """Unstructured sparsity by Wanda scores ``|W| * ||X||`` (needs calibration ids)."""
    return _prune(model, ratio, calib, "wanda", "unstructured", args)


def prune_magnitude(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
                    args: dict[str, Any] | None = None) -> PruneReport:
    """Unstructured sparsity removing the smallest ``|W|`` (no calibration data needed)."""
    return _prune(model, ratio, calib, "magnitude", "unstructured-magnitude", args)


def prune_sparsegpt(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
                    args: dict[str, Any] | None = None) -> PruneReport:
    """Unstructured sparsity by SparseGPT, reconstructing the kept weights (needs calibration)."""
    return _prune(model, ratio, calib, "sparsegpt", "unstructured-sparsegpt", args)


def _prune(model: nn.Module, ratio: float, calib: torch.Tensor | None, scorer: str, method: str,
           args: dict[str, Any] | None) -> PruneReport:
    cfg = SparseArgs.from_dict(args)
    ratio = check_ratio_open(ratio)
    sparsity = layer_sparsity(model, ratio)
    group = cfg.group or ("layer" if scorer == "magnitude" else "row")
    pattern = Pattern("unstructured", sparsity=sparsity, group=group)
    note = f"uniform sparsity {sparsity:.4f} in every targeted linear reaches ratio {ratio}"
    return run_sparse(model, method, ratio, calib, scorer, pattern, cfg, [note])


def layer_sparsity(model: nn.Module, ratio: float) -> float:
    """Per-matrix sparsity that removes ``ratio`` of all parameters from the targeted linears.

    Raises:
        BadInput: when that would take every targeted weight; names the largest ratio.
    """
    targeted = sum(w.numel() for w in target_weights(model).values())
    share = targeted / total_params(model)
    if ratio >= share:
        raise BadInput(f"unstructured prunes only the linear layers inside blocks, "
                       f"{share:.4f} of this model's parameters; ratio {ratio} is out of reach: "
                       f"ask for --ratio below {share:.4f}")
    return ratio / share
