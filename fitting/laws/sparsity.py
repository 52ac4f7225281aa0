"""Frantar et al. (ICLR 2024): the sparsity scaling law, ``L(S, N, D)``.

Added as one file to show that a law is one object: nothing else in the project names it.
Reproduces the authors' ViT/JFT optimum (tests/fitting/test_fitting_sparsity.py) with their
normalisation (N = non-zero parameters / 1e6, D = examples / 1e9), Huber delta 0.01 on the
loss itself (``--space linear``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fitting.laws.base import Interval, Law, Term

Array = np.ndarray


def _predict(p: Mapping[str, Array], x: Mapping[str, Array]) -> Array:
    r"""Sparsity law (written as in the authors' notebook).

    .. math::

        L = \left(a_S (1 - S)^{b_S} + c_S\right) N^{-b_N} + a_D D^{-b_D} + c

    with ``S`` the sparsity, ``N`` the non-zero parameters and ``D`` the training data.
    ``(1 - S)^{b_S}`` is the notebook's ``(1/(1-S))^{-b_S}``.
    """
    return ((p["a_S"] * (1.0 - x["S"]) ** p["b_S"] + p["c_S"]) * x["N"] ** -p["b_N"]
            + p["a_D"] * x["D"] ** -p["b_D"] + p["c"])


LAW = Law(
    name="sparsity",
    formula="L = (a_S*(1-S)^b_S + c_S) * N^-b_N + a_D * D^-b_D + c",
    params=("a_S", "c_S", "a_D", "c", "b_S", "b_N", "b_D"),
    axes=("S", "N", "D"),
    target="loss",
    terms=(Term("a_S", (("b_S", "dense", 1.0), ("b_N", "N", -1.0)),
                "the sparsity term a_S (1-S)^b_S / N^b_N"),
           Term("c_S", (("b_N", "N", -1.0),), "the dense size term c_S / N^b_N"),
           Term("a_D", (("b_D", "D", -1.0),), "the data term a_D / D^b_D"),
           Term("c", (), "the constant c")),
    offset=None,
    bounds={"b_S": (-4.0, 4.0), "b_N": (0.0, 4.0), "b_D": (0.0, 4.0)},
    grid={"b_S": np.linspace(-0.5, 2.0, 11), "b_N": np.linspace(0.0, 1.5, 16),
          "b_D": np.linspace(0.0, 2.0, 21)},
    predict_fn=_predict,
    store={"S": "ratio", "N": "params_after", "D": "tokens", "loss": "eval_loss"},
    store_init="random",
    features={"dense": lambda x: 1.0 - x["S"]},
    domain={"S": Interval(0.0, 1.0, low_closed=True)},
    requires={"S": (3, "a_S, b_S and c_S"), "N": (3, "b_N"), "D": (3, "b_D")},
    token_axis="D", size_axis="N", ratio_axis="S",
)
