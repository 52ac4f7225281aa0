"""Synthetic P2 curves from known parameters (tests, benchmarks, demos without a GPU grid)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fitting.laws import P2
from fitting.table import FitData, from_arrays

TRUE_P2 = {"N_C": 250.0, "D_C": 2000.0, "E": 0.5, "alpha": 0.3, "beta": 0.35,
           "gamma": -0.8, "delta": 0.05}
"""Plausible P2 parameters: loss rises with ratio (gamma < 0), recovery ~ D^-0.35."""


def parent_loss(n0: float) -> float:
    """L0 of a synthetic parent: a Chinchilla-like size trend, so L0 differs between parents."""
    return 1.7 + 400.0 / n0 ** 0.3


def p2_curves(params: dict[str, float] = TRUE_P2, *,
              sizes: Sequence[float] = (0.5e9, 1.5e9, 3e9, 7e9),
              ratios: Sequence[float] = (0.2, 0.35, 0.5),
              points: int = 12, tokens: tuple[float, float] = (1e7, 2e9),
              noise: float = 0.0, run_noise: float = 0.0, seed: int = 0) -> FitData:
    """One curve per (size, ratio), ``points`` checkpoints log-spaced in ``tokens``.

    ``noise`` is the sd of multiplicative log-normal noise on each point, ``run_noise`` the sd
    of a per-run multiplicative offset shared by all points of a run (real runs differ by
    seed and data order: their checkpoints are correlated, which is why intervals resample
    whole runs). ``loss_before`` follows :func:`parent_loss`.
    """
    rng = np.random.default_rng(seed)
    grid = np.geomspace(tokens[0], tokens[1], points)
    rows: dict[str, list] = {a: [] for a in P2.axes} | {"run_id": []}
    for n0 in sizes:
        for rho in ratios:
            rows["params_before"] += [n0] * points
            rows["ratio"] += [rho] * points
            rows["tokens"] += list(grid)
            rows["loss_before"] += [parent_loss(n0)] * points
            rows["run_id"] += [f"n{n0:.3g}-r{rho:g}"] * points
    axes = {a: np.array(rows[a], float) for a in P2.axes}
    n_runs, n = len(sizes) * len(ratios), len(grid) * len(sizes) * len(ratios)
    offsets = np.repeat(run_noise * rng.standard_normal(n_runs), points)
    loss = P2.predict(params, **axes) * np.exp(noise * rng.standard_normal(n) + offsets)
    loss = np.maximum(loss, axes["loss_before"] * (1 + 1e-9))
    return from_arrays(P2, axes, loss, np.array(rows["run_id"]), source="synthetic p2 curves")
