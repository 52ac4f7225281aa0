"""A synthetic run store with known ground truth, for the report's tests, benchmark and demos.

The curves follow the P2 law (pruned init) and a Chinchilla-like law (random init) with
multiplicative noise, and are written through :class:`data.runs.RunStore`, the same store
the engine fills, so everything downstream (``data.runs.load``, fitting, the report) reads
them exactly as it reads real runs. Nothing here pretends to be a measurement: run.json
records ``"source": "synthetic"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from data.runs import RunStore

TRUE_P2: dict[str, float] = {
    "N_C": 100.0, "D_C": 500.0, "E": 0.5, "alpha": 0.3, "beta": 0.4, "gamma": -0.8, "delta": 0.05,
}
"""Ground-truth P2 parameters of the pruned-init curves (L0 + the bracket term)."""


@dataclass(frozen=True)
class SyntheticGrid:
    """What to generate. Every combination of the tuples below is one run."""

    parents: tuple[tuple[str, int], ...] = (("tiny-135m", 134_515_008), ("tiny-360m", 361_821_120),
                                           ("tiny-1.7b", 1_711_376_384))
    """(parent name, params_before) pairs."""
    methods: tuple[str, ...] = ("depth", "width")
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    inits: tuple[str, ...] = ("pruned",)
    objectives: tuple[str, ...] = ("lm",)
    seeds: tuple[int, ...] = (0,)
    n_points: int = 12
    """Evaluation points per run, log-spaced tokens, plus the tokens == 0 point."""
    max_tokens: float = 2e9
    domains: tuple[str, ...] = ()
    """Extra ``eval_loss.<domain>`` columns to write (offsets from the main loss)."""
    noise: float = 0.004
    """Relative (log-space) noise on every loss."""
    params: dict[str, float] = field(default_factory=lambda: dict(TRUE_P2))


def parent_loss(params_before: float) -> float:
    """L0 of a synthetic parent: larger parents start lower."""
    return 3.2 - 0.25 * np.log10(params_before / 1e8)


TRUE_SCRATCH: dict[str, float] = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
"""Ground-truth Chinchilla parameters of the random-init (from scratch) curves."""


def p2_loss(p: dict[str, float], n0: float, rho: float, tokens: np.ndarray, l0: float) -> np.ndarray:
    """The P2 law's own prediction (``fitting.laws.P2``) at D = ``tokens`` > 0."""
    from fitting.laws import P2

    return P2.predict(p, params_before=n0, ratio=rho, tokens=tokens, loss_before=l0)


def scratch_loss(n: float, tokens: np.ndarray) -> np.ndarray:
    """Training the pruned shape from scratch: the Chinchilla law's own prediction."""
    from fitting.laws import CHINCHILLA

    return CHINCHILLA.predict(TRUE_SCRATCH, N=n, D=tokens)


def _curve(grid: SyntheticGrid, n0: int, rho: float, init: str, objective: str,
           rng: np.random.Generator) -> dict[str, np.ndarray]:
    tokens = np.concatenate([[0], np.geomspace(grid.max_tokens / 1e3, grid.max_tokens, grid.n_points)])
    l0 = parent_loss(n0)
    positive = tokens[1:].astype(float)
    if init == "random":
        loss = scratch_loss((1 - rho) * n0, np.concatenate([[1e5], positive]))
    else:
        # The loss right after pruning is not on the law (P2 diverges at D = 0): take a short
        # budget's loss and a margin so the tokens == 0 point sits visibly above the curve.
        gain = {"lm": 1.0, "kd": 0.9, "recon": 1.08}.get(objective, 1.0)
        curve = l0 + gain * (p2_loss(grid.params, n0, rho, positive, l0) - l0)
        first = l0 + gain * (p2_loss(grid.params, n0, rho, np.array([grid.max_tokens / 1e4]), l0) - l0)
        loss = np.concatenate([first + 0.3 * rho, curve])
    loss = loss * np.exp(rng.normal(0.0, grid.noise, loss.shape))
    return {"tokens": tokens.astype(np.int64), "eval_loss": loss, "l0": np.float64(l0)}


def write_synthetic_store(root: str | os.PathLike[str], grid: SyntheticGrid | None = None,
                          *, seed: int = 0) -> list[str]:
    """Write one run per grid combination under ``root``; returns the run ids."""
    grid = grid or SyntheticGrid()
    rng = np.random.default_rng(seed)
    store, ids = RunStore(root), []
    combos = [(p, m, r, i, o, s) for p in grid.parents for m in grid.methods for r in grid.ratios
              for i in grid.inits for o in grid.objectives for s in grid.seeds]
    for (parent, n0), method, rho, init, objective, run_seed in combos:
        run_id = f"{parent}-{method.replace(':', '')}-r{int(rho * 100):02d}-{init}-{objective}-s{run_seed}"
        curve = _curve(grid, n0, rho, init, objective, rng)
        n_after = int(round((1 - rho) * n0))
        meta = {"family": "synthetic", "parent": parent, "method": method, "ratio_target": rho,
                "ratio": rho, "params_before": n0, "params_after": n_after,
                "nonembed_before": int(0.8 * n0), "nonembed_after": int(0.8 * n_after),
                "loss_before": float(curve["l0"]), "init": init, "objective": objective,
                "seed": run_seed}
        store.write(run_id, {"status": "done", "meta": meta, "source": "synthetic"})
        store.append_curve(run_id, _rows(grid, curve, rng))
        ids.append(run_id)
    return ids


def _rows(grid: SyntheticGrid, curve: dict[str, np.ndarray], rng: np.random.Generator) -> list[dict]:
    rows = []
    for step, (tokens, loss) in enumerate(zip(curve["tokens"], curve["eval_loss"])):
        row = {"step": step * 10, "tokens": int(tokens), "eval_loss": float(loss),
               "train_loss": float(loss) * 1.01, "lr": 3e-4, "elapsed_s": 2.0 * step}
        for k, domain in enumerate(grid.domains):
            # Each domain sits at its own offset and recovers at its own pace.
            row[f"eval_loss.{domain}"] = float(loss + 0.3 * (k - 0.5) + rng.normal(0, 0.01))
        rows.append(row)
    return rows
