"""What the data can identify, decided before fitting, reported in the result and the card.

P2 with all runs sharing one parent size N0: ``(1/N0)^delta`` and ``N_C/N0^alpha`` are
constants, absorbed by ``E`` and ``D_C``; delta, alpha and N_C are not identified. With two
sizes, delta is (through the D term) but ``E + N_C/N0^alpha`` gives two equations for three
unknowns. With one pruning ratio, ``(1/rho)^gamma`` is a constant. Rather than print confident
numbers for such parameters, the fit pins them (0 for exponents and for N_C, whose role E
takes) and says so; fewer points or token counts than even the reduced law needs is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.cli import BadInput
from fitting.laws import Law
from fitting.table import FitData

MIN_DISTINCT = 3
"""Distinct values an axis needs for ``coef * x^-exponent`` plus a constant to be identified."""


@dataclass(frozen=True)
class Identifiability:
    """Pinned parameters and why; everything else in ``law.params`` is fitted."""

    fixed: dict[str, float]
    reasons: dict[str, str]

    def to_dict(self, law: Law) -> dict[str, dict]:
        """Card form: name -> {identified, reason, fixed_at}."""
        return {name: {"identified": name not in self.fixed, "reason": self.reasons.get(name),
                       "fixed_at": self.fixed.get(name)} for name in law.params}


def distinct(values: np.ndarray, decimals: int = 4) -> int:
    """Distinct values up to relative rounding (achieved ratios differ in far digits)."""
    values = np.asarray(values, float)
    scale = 10.0 ** np.floor(np.log10(np.abs(values) + 1e-300))
    return len(np.unique(np.round(values / scale, decimals) * scale))


def identify(law: Law, data: FitData) -> Identifiability:
    """Decide the free parameters of ``law`` on ``data``; ``BadInput`` if nothing sensible is left."""
    if law.name == "p2":
        ident = _p2(data)
    elif law.name == "chinchilla":
        ident = _needs_sizes(data, {"N": "alpha", "D": "beta"})
    else:
        ident = Identifiability({}, {})
    n_free = len(law.params) - len(ident.fixed)
    if data.n_points <= n_free:
        raise BadInput(f"{data.n_points} points cannot identify {n_free} free parameters of "
                       f"{law.name!r}; need more than {n_free} points")
    return ident


def _needs_sizes(data: FitData, exponent_of: dict[str, str]) -> Identifiability:
    for axis, exponent in exponent_of.items():
        n = distinct(data.axes[axis])
        if n < MIN_DISTINCT:
            raise BadInput(f"only {n} distinct {axis!r} values; {data.law!r} needs at least "
                           f"{MIN_DISTINCT} to identify {exponent}")
    return Identifiability({}, {})


def _p2(data: FitData) -> Identifiability:
    n_tokens = distinct(data.axes["tokens"])
    if n_tokens < MIN_DISTINCT:
        raise BadInput(f"only {n_tokens} distinct token counts; p2 needs at least {MIN_DISTINCT} "
                       "points along the curves to identify beta")
    fixed: dict[str, float] = {}
    reasons: dict[str, str] = {}
    sizes = distinct(data.axes["params_before"])
    if sizes < 3:
        why = (f"{sizes} distinct parent size(s) N0: E + N_C/N0^alpha is one number per size, "
               "so N_C and alpha need 3 sizes (E absorbs N_C/N0^alpha)")
        fixed.update(N_C=0.0, alpha=0.0)
        reasons.update(N_C=why, alpha=why)
    if sizes < 2:
        fixed["delta"] = 0.0
        reasons["delta"] = "one parent size N0: (1/N0)^delta is a constant absorbed by D_C and E"
    if distinct(data.axes["ratio"]) < 2:
        fixed["gamma"] = 0.0
        reasons["gamma"] = "one pruning ratio: (1/rho)^gamma is a constant absorbed by D_C and E"
    return Identifiability(fixed, reasons)
