"""P2: the law of the seed paper, loss after pruning and post-training.

Chen, Hu, Zhang, Wang, Li, Chen, Zhang, "P2 Law: Scaling Law for Post-Training After Model
Pruning", ACL 2025 (long paper 283; arXiv 2411.10272v3). The paper derives several candidate
parameterizations from Chinchilla's law and selects the first, ``L_1(N0, D, rho, L0)``, by its
fit and its Average Slope Difference; ``predict`` below is that ``L_1`` term for term (checked
against the paper's published statement of L_1; same parameter names).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fitting.laws.base import Interval, Law, Pin, Term

Array = np.ndarray


def _predict(p: Mapping[str, Array], x: Mapping[str, Array]) -> Array:
    r"""P2 law of pruned post-training.

    .. math::

        L = L_0 + \left(\frac{1}{\rho}\right)^{\gamma} \left(\frac{1}{N_0}\right)^{\delta}
            \left(\frac{N_C}{N_0^{\alpha}} + \frac{D_C}{D^{\beta}} + E\right)

    with ``N0 = params_before``, ``rho = ratio``, ``D = tokens``, ``L0 = loss_before``.
    """
    n0, rho, d, l0 = x["params_before"], x["ratio"], x["tokens"], x["loss_before"]
    return l0 + (1.0 / rho) ** p["gamma"] * (1.0 / n0) ** p["delta"] * (
        p["N_C"] / n0 ** p["alpha"] + p["D_C"] / d ** p["beta"] + p["E"])


_SCALE = (("gamma", "ratio", -1.0), ("delta", "params_before", -1.0))
_SIZES = ("E + N_C/N0^alpha is one number per parent size, so N_C and alpha need 3 sizes "
          "(E absorbs N_C/N0^alpha)")

LAW = Law(
    name="p2",
    formula="L = L0 + (1/rho)^gamma * (1/N0)^delta * (N_C/N0^alpha + D_C/D^beta + E)",
    params=("N_C", "D_C", "E", "alpha", "beta", "gamma", "delta"),
    axes=("params_before", "ratio", "tokens", "loss_before"),
    target="eval_loss",
    terms=(
        Term("N_C", _SCALE + (("alpha", "params_before", -1.0),), "the size term N_C/N0^alpha"),
        Term("D_C", _SCALE + (("beta", "tokens", -1.0),), "the data term D_C/D^beta"),
        Term("E", _SCALE, "the constant E"),
    ),
    offset="loss_before",
    # gamma and delta are deliberately two-sided (the issue: do not constrain their sign).
    bounds={"alpha": (0.0, 4.0), "beta": (0.0, 4.0), "gamma": (-4.0, 4.0), "delta": (-4.0, 4.0)},
    # 2,058 exponent combinations; coefficients are solved per point, the polish refines.
    grid={"alpha": np.linspace(0.0, 1.5, 6), "beta": np.linspace(0.05, 1.25, 7),
          "gamma": np.linspace(-1.5, 3.0, 7), "delta": np.linspace(-1.0, 1.0, 7)},
    predict_fn=_predict,
    store={"params_before": "params_before", "ratio": "ratio", "tokens": "tokens",
           "loss_before": "loss_before", "eval_loss": "eval_loss"},
    store_init="pruned",
    domain={"ratio": Interval(0.0, 1.0)},
    requires={"tokens": (3, "beta (points along the curves)")},
    pins=(
        Pin("params_before", 3, {"N_C": 0.0, "alpha": 0.0}, _SIZES),
        Pin("params_before", 2, {"delta": 0.0},
            "one parent size N0: (1/N0)^delta is a constant absorbed by D_C and E"),
        Pin("ratio", 2, {"gamma": 0.0},
            "one pruning ratio: (1/rho)^gamma is a constant absorbed by D_C and E"),
    ),
    token_axis="tokens", size_axis="params_before", ratio_axis="ratio",
)
