"""Chinchilla: training from scratch (Hoffmann et al. 2022, Approach 3)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fitting.laws.base import Law, Term

Array = np.ndarray


def _predict(p: Mapping[str, Array], x: Mapping[str, Array]) -> Array:
    r"""Chinchilla law of training from scratch.

    .. math::

        L = E + \frac{A}{N^{\alpha}} + \frac{B}{D^{\beta}}
    """
    return p["E"] + p["A"] / x["N"] ** p["alpha"] + p["B"] / x["D"] ** p["beta"]


LAW = Law(
    name="chinchilla",
    formula="L = E + A/N^alpha + B/D^beta",
    params=("E", "A", "B", "alpha", "beta"),
    axes=("N", "D"),
    target="loss",
    terms=(Term("E", (), "the constant E"),
           Term("A", (("alpha", "N", -1.0),), "the size term A/N^alpha"),
           Term("B", (("beta", "D", -1.0),), "the data term B/D^beta")),
    offset=None,
    bounds={"alpha": (0.0, 4.0), "beta": (0.0, 4.0)},
    grid={"alpha": np.linspace(0.0, 2.5, 51), "beta": np.linspace(0.0, 2.5, 51)},
    predict_fn=_predict,
    # From a run store, the from-scratch baseline runs: N is the trained model's size.
    store={"N": "params_after", "D": "tokens", "loss": "eval_loss"},
    store_init="random",
    requires={"N": (3, "alpha"), "D": (3, "beta")},
    token_axis="D", size_axis="N",
)
