"""Coverage of the fit's intervals on synthetic P2 grids with known truth.

For a design (parent sizes, ratios, checkpoints, point noise, per-run offsets), draw
``replicates`` data sets, fit each with ``n_bootstrap`` run-bootstrap refits, and count how
often each nominal interval contains the truth: every identified parameter, D* at the edge
of the data, the loss at the largest parent and at a 10x larger one (confidence intervals of
the mean law: the truth is the law itself, not a noisy run). ``benchmarks/fit_coverage.py``
prints the table with Wilson intervals; a test runs one small seeded design.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fitting.fit import FitConfig, decision_queries, fit
from fitting.laws import P2
from fitting.synthetic import TRUE_P2, p2_curves


@dataclass(frozen=True)
class Design:
    """A synthetic grid like real ones (3-4 parents over 4x-30x, 3-4 ratios...)."""

    name: str
    sizes: tuple[float, ...]
    ratios: tuple[float, ...]
    points: int
    noise: float
    run_noise: float
    tokens: tuple[float, float] = (1e7, 2e9)
    params: dict[str, float] = field(default_factory=lambda: dict(TRUE_P2))


DESIGNS = (
    Design("3 parents 4x, 3 ratios, 8 pts, 0.5% + 0.3% run", (0.5e9, 1e9, 2e9), (0.2, 0.35, 0.5), 8, 0.005, 0.003),
    Design("4 parents 30x, 4 ratios, 20 pts, 0.2% + 0.2% run", (0.25e9, 1e9, 3e9, 7.5e9), (0.2, 0.3, 0.45, 0.6), 20, 0.002, 0.002),
    Design("3 parents 14x, 3 ratios, 12 pts, 1% + 0.5% run", (0.5e9, 2e9, 7e9), (0.25, 0.4, 0.55), 12, 0.01, 0.005),
    Design("4 parents 8x, 3 ratios, 10 pts, 0.3%, no run offsets", (0.5e9, 1e9, 2e9, 4e9), (0.2, 0.35, 0.5), 10, 0.003, 0.0),
)


def truth_quantities(design: Design, data, slope: float) -> dict[str, float]:
    """The true value of every quantity whose coverage is measured."""
    truth = np.array([design.params[n] for n in P2.params])
    out = {name: float(design.params[name]) for name in P2.params}
    for name, (_, f, _) in decision_queries(P2, data, slope).items():
        out[name] = float(np.squeeze(f(truth)))
    return out


def run_design(design: Design, replicates: int, n_bootstrap: int, *, seed: int = 0,
               config: FitConfig | None = None) -> dict[str, list[bool]]:
    """Hit (interval contains the truth) per quantity and replicate; pinned ones left out."""
    config = config or FitConfig()
    hits: dict[str, list[bool]] = {}
    for r in range(replicates):
        data = p2_curves(design.params, sizes=design.sizes, ratios=design.ratios,
                         points=design.points, tokens=design.tokens, noise=design.noise,
                         run_noise=design.run_noise, seed=seed * 100_003 + r)
        card = fit(data, replace(config, n_bootstrap=n_bootstrap, seed=seed * 100_003 + r))
        truth = truth_quantities(design, data, config.slope)
        intervals = {**card.intervals,
                     **{n: (d.low, d.high) for n, d in card.derived.items() if d.low is not None}}
        for name, value in truth.items():
            iv = intervals.get(name)
            if iv is None or iv[0] is None:
                continue
            hits.setdefault(name, []).append(bool(iv[0] <= value <= iv[1]))
    return hits


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (statsmodels)."""
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
    return float(lo), float(hi)
