"""Scaling laws as small declarative objects, and the registry that names them.

A law is data: its parameter names, its axes, which parameters enter linearly once the
exponents are fixed (the *coefficients*, always positive, fitted in log space), which are
exponents, bounds, a start grid over the exponents, and a vectorised numpy ``predict`` written
as one broadcasting expression. The fitting machinery (``fitting.solve``) is written once
against the structured form ``Term``; a test checks that the structured form and ``predict``
agree for every registered law, so adding a law is one object here.

Structured form (what the solver sees)::

    pred_i = offset_i + sum_k c_k * prod_{(e, axis, s) in term_k} axis_i ** (s * e)

so that ``log`` of each term is linear in ``(log c_k, exponents)``: the objective has a
closed-form gradient and the coefficients can be solved by non-negative least squares once
the exponents are fixed (variable projection).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from data.cli import BadInput

Array = np.ndarray


@dataclass(frozen=True)
class Term:
    """One additive term ``c * prod(axis ** (sign * exponent))`` of a law.

    Attributes
    ----------
    coef : str
        Name of the positive coefficient that multiplies the term.
    factors : tuple of (exponent name, axis name, sign)
        ``axis ** (sign * exponent)`` factors; ``sign=-1`` for ``1 / axis ** exponent``.
    """

    coef: str
    factors: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True)
class Law:
    """A scaling law: declarative description plus a vectorised ``predict``.

    Attributes
    ----------
    name : str
        Registry key and the ``law`` field of a card.
    formula : str
        Human-readable formula (printed in summaries and cards).
    params : tuple of str
        All parameter names, in card / array order.
    axes : tuple of str
        Input column names, e.g. ``("N", "D")``.
    target : str
        Output column name (the loss).
    terms : tuple of Term
        Structured form, one term per coefficient.
    offset : str or None
        Axis added to the sum of terms (P2: ``loss_before``), None for no offset.
    bounds : mapping
        ``(low, high)`` per exponent (coefficients are bounded in log space by the solver).
    grid : mapping
        Start grid per exponent for the variable-projection search.
    predict_fn : callable
        ``predict_fn(p, axes) -> loss``; ``p`` maps a name to an array broadcastable to the axes.
    store : mapping
        Run-store column for each axis and the target (``data.runs.load`` names).
    store_init : str
        Which runs of a store the law describes (``init`` column: pruned or random).
    """

    name: str
    formula: str
    params: tuple[str, ...]
    axes: tuple[str, ...]
    target: str
    terms: tuple[Term, ...]
    offset: str | None
    bounds: Mapping[str, tuple[float, float]]
    grid: Mapping[str, Array]
    predict_fn: Callable[[Mapping[str, Array], Mapping[str, Array]], Array]
    store: Mapping[str, str] = field(default_factory=dict)
    store_init: str = "pruned"

    @property
    def coefs(self) -> tuple[str, ...]:
        """Names of the parameters that enter linearly (positive, fitted in log space)."""
        return tuple(t.coef for t in self.terms)

    @property
    def exponents(self) -> tuple[str, ...]:
        """Names of the nonlinear parameters (searched on a grid, then polished)."""
        return tuple(p for p in self.params if p not in self.coefs)

    def unpack(self, params: Array | Mapping[str, float]) -> dict[str, Array]:
        """Map a ``[..., P]`` array (or a name -> value mapping) to name -> array.

        A 2-D ``[B, P]`` array gives ``[B, 1]`` columns, so they broadcast against 1-D axes
        and ``predict`` returns ``[B, n]`` (bootstrap samples times points).
        """
        if isinstance(params, Mapping):
            return {name: np.asarray(params[name], dtype=float) for name in self.params}
        arr = np.asarray(params, dtype=float)
        if arr.shape[-1] != len(self.params):
            raise ValueError(f"{self.name}: expected {len(self.params)} parameters "
                             f"{self.params}, got shape {arr.shape}")
        cols = np.moveaxis(arr, -1, 0)
        if arr.ndim > 1:
            cols = cols[..., None]
        return dict(zip(self.params, cols))

    def predict(self, params: Array | Mapping[str, float], **axes: Array) -> Array:
        """Predicted loss at ``axes`` (arrays or scalars, broadcast together).

        ``params`` is a ``[P]`` array, a ``[B, P]`` array of bootstrap samples (result
        ``[B, n]``) or a mapping from parameter name to value.
        """
        missing = [a for a in self.axes if a not in axes]
        if missing:
            raise BadInput(f"law {self.name!r} needs axes {list(self.axes)}; missing {missing}")
        values = {a: np.asarray(axes[a], dtype=float) for a in self.axes}
        return self.predict_fn(self.unpack(params), values)


# -- P2 -----------------------------------------------------------------------------------


def _p2_predict(p: Mapping[str, Array], x: Mapping[str, Array]) -> Array:
    r"""P2 law of pruned post-training.

    .. math::

        L = L_0 + \left(\frac{1}{\rho}\right)^{\gamma} \left(\frac{1}{N_0}\right)^{\delta}
            \left(\frac{N_C}{N_0^{\alpha}} + \frac{D_C}{D^{\beta}} + E\right)

    with ``N0 = params_before``, ``rho = ratio``, ``D = tokens``, ``L0 = loss_before``.
    """
    n0, rho, d, l0 = x["params_before"], x["ratio"], x["tokens"], x["loss_before"]
    return l0 + (1.0 / rho) ** p["gamma"] * (1.0 / n0) ** p["delta"] * (
        p["N_C"] / n0 ** p["alpha"] + p["D_C"] / d ** p["beta"] + p["E"])


_P2_SCALE = (("gamma", "ratio", -1.0), ("delta", "params_before", -1.0))

P2 = Law(
    name="p2",
    formula="L = L0 + (1/rho)^gamma * (1/N0)^delta * (N_C/N0^alpha + D_C/D^beta + E)",
    params=("N_C", "D_C", "E", "alpha", "beta", "gamma", "delta"),
    axes=("params_before", "ratio", "tokens", "loss_before"),
    target="eval_loss",
    terms=(
        Term("N_C", _P2_SCALE + (("alpha", "params_before", -1.0),)),
        Term("D_C", _P2_SCALE + (("beta", "tokens", -1.0),)),
        Term("E", _P2_SCALE),
    ),
    offset="loss_before",
    # gamma and delta are deliberately two-sided (the issue: do not constrain their sign).
    bounds={"alpha": (0.0, 4.0), "beta": (0.0, 4.0), "gamma": (-4.0, 4.0), "delta": (-4.0, 4.0)},
    # 2,058 exponent combinations; coefficients are solved per point, the polish refines.
    grid={"alpha": np.linspace(0.0, 1.5, 6), "beta": np.linspace(0.05, 1.25, 7),
          "gamma": np.linspace(-1.5, 3.0, 7), "delta": np.linspace(-1.0, 1.0, 7)},
    predict_fn=_p2_predict,
    store={"params_before": "params_before", "ratio": "ratio", "tokens": "tokens",
           "loss_before": "loss_before", "eval_loss": "eval_loss"},
    store_init="pruned",
)


def optimal_tokens(params: Array | Mapping[str, float], N0: Array | float, rho: Array | float,
                   slope: float) -> Array:
    r"""P2 slope criterion: tokens where one more billion improves loss by ``slope`` nats.

    .. math::

        -\frac{dL}{dD} 10^9 = S \;\Rightarrow\;
        D^* = \left(\beta D_C \rho^{-\gamma} N_0^{-\delta} \, 10^9 / S\right)^{1/(\beta+1)}

    ``params`` may be ``[P]`` or ``[B, P]`` (bootstrap samples: the result is ``[B, ...]``).
    """
    if not slope > 0:
        raise BadInput(f"slope {slope!r} must be a positive number of nats per 1e9 tokens")
    p = P2.unpack(params)
    gain = p["beta"] * p["D_C"] * (1.0 / np.asarray(rho, float)) ** p["gamma"] \
        * (1.0 / np.asarray(N0, float)) ** p["delta"] * 1e9 / slope
    return gain ** (1.0 / (p["beta"] + 1.0))


# -- Chinchilla ----------------------------------------------------------------------------


def _chinchilla_predict(p: Mapping[str, Array], x: Mapping[str, Array]) -> Array:
    r"""Chinchilla law of training from scratch (Hoffmann et al. 2022, Approach 3).

    .. math::

        L = E + \frac{A}{N^{\alpha}} + \frac{B}{D^{\beta}}
    """
    return p["E"] + p["A"] / x["N"] ** p["alpha"] + p["B"] / x["D"] ** p["beta"]


CHINCHILLA = Law(
    name="chinchilla",
    formula="L = E + A/N^alpha + B/D^beta",
    params=("E", "A", "B", "alpha", "beta"),
    axes=("N", "D"),
    target="loss",
    terms=(Term("E"), Term("A", (("alpha", "N", -1.0),)), Term("B", (("beta", "D", -1.0),))),
    offset=None,
    bounds={"alpha": (0.0, 4.0), "beta": (0.0, 4.0)},
    grid={"alpha": np.linspace(0.0, 2.5, 51), "beta": np.linspace(0.0, 2.5, 51)},
    predict_fn=_chinchilla_predict,
    # From a run store, the from-scratch baseline runs: N is the trained model's size.
    store={"N": "params_after", "D": "tokens", "loss": "eval_loss"},
    store_init="random",
)


LAWS: dict[str, Law] = {law.name: law for law in (P2, CHINCHILLA)}
"""Registry: name -> law. A new law is one ``Law(...)`` object added here."""


def get_law(name: str) -> Law:
    """The registered law ``name``; raises ``BadInput`` naming the allowed laws."""
    try:
        return LAWS[name]
    except KeyError:
        raise BadInput(f"unknown law {name!r}; allowed: {', '.join(LAWS)}") from None
