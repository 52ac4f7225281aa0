"""Candidate runs of a design: the family's real parents, the ratios a method reaches on them,
post-training budgets, where each run is evaluated and what it costs.

A run is ``(parent, target ratio, tokens)``. Its parent is a real checkpoint of the family in
the model table (``data.models``), so its size is exact and the achieved ratio is the one the
engine will record (depth pruning removes whole layers: 0.5 of Llama-3.1-8B is 18 of 32
layers, 0.489). Its cost is the planner's cost model (``data.compute``, 6 N D at an MFU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.cli import BadInput
from data.models import MODELS, ModelSpec
from data.compute import Gpu, compute_cost
from planner.query import Parent

MIN_SIZES = 3
"""P2 pins N_C and alpha below three parent sizes (``fitting.laws.p2``): a design that pins a
parameter the truth needs is biased, not merely imprecise, so every design spans three."""
PAPER_RATIOS: tuple[float, ...] = (0.15, 0.25, 0.35)
"""The P2 paper's pruning ratios: the naive design runs all of them."""
CANDIDATE_RATIOS: tuple[float, ...] = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7)
"""Target ratios a design may pick from (plus the query's own), where the method reaches them."""
MAX_RATIOS = 3
"""Ratios per design: two identify gamma, a third guards its curvature; more rarely pay."""
TOKEN_LADDER: np.ndarray = np.array([float(f"{d:.2g}") for d in np.geomspace(1e8, 3e11, 36)])
"""Per-run post-training budgets a design may pick (10 per decade, 100M to 300B tokens)."""
MAX_TOKEN_EXTRAPOLATION = 30.0
"""A design's budget is at least the prior's D* at the query over this. The delta method takes
the law's form as exact, so it would happily extrapolate a 100M-token curve 300x to D*; past
about 1.5 decades of tokens nobody observed, the answer rests on the form, not on the runs."""
CHECKPOINTS: np.ndarray = np.concatenate([np.geomspace(1 / 200, 1 / 6, 6, endpoint=False),
                                          np.arange(1, 7) / 6])
"""Evaluation points of a run as fractions of its budget: the engine's schedule shape
(``engine.train.schedule``: half log-spaced early, half evenly spaced to the budget), 12 points,
the first at D/200 (earlier ones sit in the learning-rate warm-up, where no law describes the
curve)."""
EVAL_POINTS = len(CHECKPOINTS)
DEPTH = ("depth", "depth-block", "depth-last")
SEMI = ("2:4", "2:4-magnitude", "2:4-sparsegpt")
WIDTH_MAX = 0.9
"""Width pruning keeps at least 10% of each layer's width (heads, FFN channels)."""


@dataclass(frozen=True)
class Run:
    """One candidate prune + post-train job."""

    spec: ModelSpec
    ratio_target: float
    ratio: float
    """What the method achieves on this parent (the engine records it; the law sees it)."""
    tokens: float
    gpu_hours: float

    @property
    def params_before(self) -> float:
        return float(self.spec.params_total)

    def checkpoints(self) -> np.ndarray:
        return self.tokens * CHECKPOINTS


def family_specs(family: str) -> list[ModelSpec]:
    """The family's real checkpoints, smallest first (tiny test shapes excluded)."""
    return sorted((m for m in MODELS.values() if m.family == family and m.family != "tiny" and m.hf_id),
                  key=lambda m: m.params_total)


def candidate_parents(parent: Parent) -> list[ModelSpec]:
    """Real parents a design may run: the family's sizes up to the query's, topped up with the
    next larger ones to three sizes (a larger parent costs more than the answer it informs).

    Raises:
        BadInput: a family with fewer than three real sizes in the model table.
    """
    specs = family_specs(parent.family)
    if len(specs) < MIN_SIZES:
        allowed = sorted({m.family for m in MODELS.values() if len(family_specs(m.family)) >= MIN_SIZES})
        raise BadInput(f"--family {parent.family!r} has {len(specs)} real size(s) in the model table; "
                       f"a design needs a family with >= {MIN_SIZES} (P2 identifies N_C and alpha "
                       f"from three sizes); allowed: {', '.join(allowed)}")
    upto = [m for m in specs if m.params_total <= parent.params_before * 1.05]
    return upto if len(upto) >= MIN_SIZES else specs[:MIN_SIZES]


def achieved_ratio(spec: ModelSpec, method: str, target: float) -> float | None:
    """The ratio ``method`` achieves on ``spec`` for ``target`` (None: it cannot reach it).

    Mirrors the engine's shape rules on the table's exact counts (no torch): depth drops the
    nearest whole number of layers; 2:4 covers whole layers, half of each covered linear;
    width and unstructured reach any ratio their prunable weights allow.
    """
    total, layers = spec.params_total, spec.layers
    linear = spec.layer_params - 2 * spec.hidden
    if method in DEPTH:
        n = int(round(target * total / spec.layer_params))
        return n * spec.layer_params / total if 1 <= n < layers else None
    if method in SEMI:
        reach = [k * 0.5 * linear / total for k in range(1, layers + 1)]
        best = min(reach, key=lambda r: abs(r - target))
        return best if abs(best - target) <= 0.035 else None
    prunable = spec.params_nonembed / total * (WIDTH_MAX if method.startswith(("width", "targeted")) else 1.0)
    return target if target < prunable else None


def reachable_range(spec: ModelSpec, method: str) -> str:
    """Words for the error message: what ``method`` can reach on ``spec``."""
    ok = [r for r in np.arange(0.01, 1.0, 0.01) if achieved_ratio(spec, method, float(r)) is not None]
    return f"{min(ok):.2f}..{max(ok):.2f}" if ok else "none"


def check_query_ratio(parent: Parent, method: str, ratio: float) -> None:
    """The query's ratio must be reachable on the family's size nearest the query.

    Raises:
        BadInput: naming the ratio, the model and the range the method reaches on it.
    """
    specs = family_specs(parent.family)
    spec = min(specs, key=lambda m: abs(np.log(m.params_total / parent.params_before)))
    if achieved_ratio(spec, method, ratio) is None:
        raise BadInput(f"bad --ratio {ratio:g}: {method} cannot reach it on {spec.name} (the family's size "
                       f"nearest the query); reachable: {reachable_range(spec, method)}")


def compute_params(spec: ModelSpec, method: str, ratio: float) -> float:
    """The parameter count the training kernels multiply (``planner.recommend``'s rule)."""
    from planner.recommend import _compute_params

    return _compute_params(method, ratio, float(spec.params_total), False)[0]


def hours_per_token(spec: ModelSpec, method: str, ratio: float, gpu: Gpu, mfu: float) -> float:
    """GPU-hours of one post-training token on this pruned parent (6 N at ``mfu``)."""
    return compute_cost(compute_params(spec, method, ratio), 1.0, gpu, mfu).gpu_hours


def make_run(spec: ModelSpec, method: str, target: float, tokens: float, gpu: Gpu, mfu: float) -> Run:
    ratio = achieved_ratio(spec, method, target)
    if ratio is None:
        raise BadInput(f"{method} cannot reach ratio {target:g} on {spec.name}; "
                       f"reachable: {reachable_range(spec, method)}")
    return Run(spec, target, ratio, tokens, tokens * hours_per_token(spec, method, ratio, gpu, mfu))


RATIO_REACH = 0.1
"""Candidate ratios stop this far above the query's: a much deeper cut damages the model in
ways the query's never does, and the law's single gamma would have to carry both."""


def candidate_ratios(specs: list[ModelSpec], method: str, query_ratio: float) -> list[float]:
    """Target ratios reachable on every parent in ``specs`` (a grid's ratios apply to all),
    up to ``RATIO_REACH`` above the query's."""
    pool = sorted({r for r in CANDIDATE_RATIOS if r <= query_ratio + RATIO_REACH + 1e-9} | {round(query_ratio, 4)})
    return [r for r in pool if all(achieved_ratio(s, method, r) is not None for s in specs)]
