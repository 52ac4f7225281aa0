"""Scaling laws as small declarative objects, and the registry that names them.

Each module of this package defines its law(s) as ``LAW`` (or a ``LAWS`` tuple); the registry
collects them all, so adding a law is one new file here (``sparsity.py`` is the example).
``register(law)`` adds one at run time (a user's own law, tests).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

import numpy as np

from data.cli import BadInput
from fitting.laws.base import GIGA, Interval, Law, Pin, Term

Array = np.ndarray
FIRST = ("p2", "chinchilla")
"""Listed first in messages and help (the laws the product is about)."""


def _discover() -> dict[str, Law]:
    found: dict[str, Law] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        laws = getattr(module, "LAWS", None) or (getattr(module, "LAW", None),)
        found.update({law.name: law for law in laws if isinstance(law, Law)})
    order = [n for n in FIRST if n in found] + sorted(n for n in found if n not in FIRST)
    return {name: found[name] for name in order}


LAWS: dict[str, Law] = _discover()
"""Registry: name -> law."""
P2: Law = LAWS["p2"]
CHINCHILLA: Law = LAWS["chinchilla"]


def register(law: Law) -> Law:
    """Add ``law`` to the registry (``fitting fit --law NAME`` and cards can then name it)."""
    LAWS[law.name] = law
    return law


def get_law(name: str) -> Law:
    """The registered law ``name``; raises ``BadInput`` naming the allowed laws."""
    try:
        return LAWS[name]
    except KeyError:
        raise BadInput(f"unknown law {name!r}; allowed: {', '.join(LAWS)}") from None


def optimal_tokens(params: Array | Mapping[str, float], N0: Array | float, rho: Array | float,
                   slope: float) -> Array:
    r"""P2's slope criterion D* at parent size ``N0`` and ratio ``rho`` (``P2.d_star``).

    ``params`` may be ``[P]`` or ``[B, P]`` (bootstrap samples: the result is ``[B, ...]``).
    """
    return P2.d_star(params, slope, params_before=np.asarray(N0, float),
                     ratio=np.asarray(rho, float))


__all__ = ["GIGA", "Interval", "Law", "Pin", "Term", "LAWS", "P2", "CHINCHILLA", "register",
           "get_law", "optimal_tokens"]
