"""2:4 semi-structured sparsity: in every group of 4 consecutive input weights keep 2.

This is the pattern NVIDIA's sparse tensor cores accelerate (about 2x on the matmul). Only
the linears inside decoder layers are pruned, so 2:4 over every layer removes exactly half of
those: a fixed, model-dependent share of the whole model. Smaller ratios are reached by layer
coverage: the last k decoder layers are sparsified (early layers are the most sensitive to
pruning, as layer-wise sensitivity studies such as OWL report), k chosen so that the achieved
ratio is nearest the target. A ratio no coverage reaches within the tolerance is a BadInput
that lists the ratios 2:4 can reach on this model. Three scorers choose the 2 of 4: Wanda (default),
magnitude and SparseGPT (which also updates the kept weights to reconstruct the outputs).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from data.cli import BadInput
from engine.pruning.reach import nm_layers
from engine.pruning.report import PruneReport
from engine.pruning.sparse_common import (Pattern, SparseArgs, check_ratio_open, removable_count,
                                          run_sparse, target_linears, target_weights,
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
    full = Pattern("n:m", n=cfg.n, m=cfg.m)
    reachable = coverage_ratios(model, full)  # k layers covered -> whole-model ratio
    share = 1 - cfg.n / cfg.m
    k = nm_layers(reachable, ratio, cfg.n, cfg.m, cfg.tolerance)
    n_layers = len(reachable)
    pattern = replace(full, layers=tuple(range(n_layers - k, n_layers)))
    note = (f"{cfg.n}:{cfg.m} removes {share:.0%} of the targeted weights of each covered layer; "
            f"covering the last {k} of {n_layers} decoder layers gives ratio {reachable[k]:.4f} "
            f"for target {ratio}")
    return run_sparse(model, method, ratio, calib, scorer, pattern, cfg, [note])


def coverage_ratios(model: nn.Module, pattern: Pattern) -> dict[int, float]:
    """k -> the exact whole-model ratio when the last ``k`` decoder layers are N:M-sparsified."""
    achievable_ratio(model, pattern)  # validates the input widths
    per_layer = [sum(pattern.n_prune(lin.weight.numel()) for lin in target_linears(layer).values())
                 for layer in model.model.layers]
    total = total_params(model)
    return {k: sum(per_layer[len(per_layer) - k:]) / total for k in range(1, len(per_layer) + 1)}


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
