"""Alternatives to P2 for ``fitting compare``: does the data support P2's form?

- ``p2_counts``: P2's family written on parameter counts before and after pruning: the
  compression factor ``N0/N`` replaces ``1/rho`` and the size term uses the pruned model's
  ``N = N0 (1 - rho)``. Provenance: the P2 paper names this as the paper's earlier law on
  parameter counts. Only the paper's selected ``L_1`` (``fitting.laws.p2``) could be checked
  against its text here; the equations of its earlier version and of its other candidate
  parameterizations could not be retrieved, so this form is *not* verified to be any
  numbered equation of the paper: read it as a counts-based member of the family, fitted
  for comparison, not as a reproduction.
- ``p2_no_l0``: P2 without the ``L0`` term: the whole loss is the power-law bracket, so the
  parent's own loss carries no information.

Both read the same axes as P2 (``N`` is derived from ``params_before`` and ``ratio``), so a
P2 table or run store is all they need.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fitting.laws.base import Interval, Law, Pin, Term
from fitting.laws.p2 import LAW as P2

Array = np.ndarray


def _counts_predict(p: Mapping[str, Array], x: Mapping[str, Array]) -> Array:
    r"""P2 on parameter counts.

    .. math::

        L = L_0 + \left(\frac{N_0}{N}\right)^{\gamma}
            \left(\frac{N_C}{N^{\alpha}} + \frac{D_C}{D^{\beta}} + E\right),
        \qquad N = N_0 (1 - \rho)
    """
    n = x["params_before"] * (1.0 - x["ratio"])
    return x["loss_before"] + (x["params_before"] / n) ** p["gamma"] * (
        p["N_C"] / n ** p["alpha"] + p["D_C"] / x["tokens"] ** p["beta"] + p["E"])


_COUNTS_SCALE = (("gamma", "compression", 1.0),)

P2_COUNTS = Law(
    name="p2_counts",
    formula="L = L0 + (N0/N)^gamma * (N_C/N^alpha + D_C/D^beta + E),  N = N0 (1 - rho)",
    params=("N_C", "D_C", "E", "alpha", "beta", "gamma"),
    axes=P2.axes, target=P2.target,
    terms=(Term("N_C", _COUNTS_SCALE + (("alpha", "params_after", -1.0),),
                "the size term N_C/N^alpha"),
           Term("D_C", _COUNTS_SCALE + (("beta", "tokens", -1.0),), "the data term D_C/D^beta"),
           Term("E", _COUNTS_SCALE, "the constant E")),
    offset="loss_before",
    bounds={"alpha": (0.0, 4.0), "beta": (0.0, 4.0), "gamma": (-4.0, 4.0)},
    grid={"alpha": np.linspace(0.0, 1.5, 6), "beta": np.linspace(0.05, 1.25, 7),
          "gamma": np.linspace(-1.5, 3.0, 10)},
    predict_fn=_counts_predict,
    store=P2.store, store_init=P2.store_init,
    features={"params_after": lambda x: x["params_before"] * (1.0 - x["ratio"]),
              "compression": lambda x: 1.0 / (1.0 - x["ratio"])},
    domain={"ratio": Interval(0.0, 1.0)},
    requires=P2.requires,
    pins=(Pin("params_before", 2, {"N_C": 0.0, "alpha": 0.0},
              "one parent size: N = N0 (1 - rho) varies only with rho, so N_C/N^alpha and "
              "(N0/N)^gamma cannot be told apart"),),
    token_axis="tokens", size_axis="params_before", ratio_axis="ratio",
)


def _no_l0_predict(p: Mapping[str, Array], x: Mapping[str, Array]) -> Array:
    r"""P2 without the parent's loss.

    .. math::

        L = \left(\frac{1}{\rho}\right)^{\gamma} \left(\frac{1}{N_0}\right)^{\delta}
            \left(\frac{N_C}{N_0^{\alpha}} + \frac{D_C}{D^{\beta}} + E\right)
    """
    n0, rho, d = x["params_before"], x["ratio"], x["tokens"]
    return (1.0 / rho) ** p["gamma"] * (1.0 / n0) ** p["delta"] * (
        p["N_C"] / n0 ** p["alpha"] + p["D_C"] / d ** p["beta"] + p["E"])


P2_NO_L0 = Law(
    name="p2_no_l0",
    formula="L = (1/rho)^gamma * (1/N0)^delta * (N_C/N0^alpha + D_C/D^beta + E)",
    params=P2.params, axes=("params_before", "ratio", "tokens"), target=P2.target,
    terms=P2.terms, offset=None, bounds=P2.bounds, grid=P2.grid,
    predict_fn=_no_l0_predict,
    store={k: v for k, v in P2.store.items() if k != "loss_before"}, store_init=P2.store_init,
    domain=P2.domain, requires=P2.requires, pins=P2.pins,
    token_axis="tokens", size_axis="params_before", ratio_axis="ratio",
)

LAWS = (P2_COUNTS, P2_NO_L0)
