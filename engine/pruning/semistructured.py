"""2:4 semi-structured sparsity: in every group of 4 consecutive input weights keep 2.

This is the pattern NVIDIA's sparse tensor cores accelerate (about 2x on the matmul). Only
the linears inside decoder layers are pruned, so 2:4 removes exactly half of those and a
fixed, model-dependent share of the whole model: asking for another ratio is a BadInput that
says which ratio 2:4 reaches here. Three scorers choose the 2 of 4: Wanda (default),
magnitude and SparseGPT (which also updates the kept weights to reconstruct the outputs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from data.cli import BadInput
from engine.pruning.report import PruneReport
from engine.pruning.sparse_common import (Pattern, SparseArgs, check_ratio_open, removable_count,
                                          run_sparse, target_weights,
                                          total_params)


def prune(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
          args: dict[str, Any] | None = None) -> PruneReport:
    """2:4 sparsity chosen by Wanda scores ``|W| * ||X||`` (needs calibration ids)."""
    return _prune(model, ratio, calib, "wanda", "2:4", args)


def prune_magnitude(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
                    args: dict[str, Any] | None = None) -> PruneReport:
    """2:4 sparsity keeping the 2 largest ``|W|`` of every 4 (no calibration data needed)."""
    return _prune(model, ratio, calib, "magnitude", "2:4-magnitude", args)


def prune_sparsegpt(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
                    args: dict[str, Any] | None = None) -> PruneReport:
    """2:4 sparsity by SparseGPT, with reconstruction of the kept weights (needs calibration)."""
    return _prune(model, ratio, calib, "sparsegpt", "2:4-sparsegpt", args)


def _prune(model: nn.Module, ratio: float, calib: torch.Tensor | None, scorer: str, method: str,
           args: dict[str, Any] | None) -> PruneReport:
    cfg = SparseArgs.from_dict(args)
    ratio = check_ratio_open(ratio)
    pattern = Pattern("n:m", n=cfg.n, m=cfg.m)
    achieved = achievable_ratio(model, pattern)
    share = 1 - cfg.n / cfg.m
    if abs(ratio - achieved) > cfg.tolerance:
        raise BadInput(f"{cfg.n}:{cfg.m} removes exactly {achieved:.4f} of this model's parameters "
                       f"({share:.0%} of the linear layers inside blocks), not {ratio}; ask for "
                       f"--ratio {achieved:.4f} or use unstructured")
    note = (f"{cfg.n}:{cfg.m} can only remove {share:.0%} of the targeted weights: achieved ratio "
            f"{achieved:.4f} for target {ratio}")
    return run_sparse(model, method, ratio, calib, scorer, pattern, cfg, [note])


def achievable_ratio(model: nn.Module, pattern: Pattern) -> float:
    """The exact whole-model ratio an N:M pattern removes from ``model``.

    Raises:
        BadInput: when a targeted weight's input width is not a multiple of ``m``.
    """
    for name, w in target_weights(model).items():
        if w.shape[1] % pattern.m:
            raise BadInput(f"{pattern.n}:{pattern.m} needs input widths divisible by {pattern.m}; "
                           f"{name} has {w.shape[1]}: use unstructured")
    return removable_count(model, pattern) / total_params(model)
