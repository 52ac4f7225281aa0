"""The ``Law`` object: a scaling law as data, plus what every decision needs from it.

A law is declarative: parameter names, axes, which parameters enter linearly once the
exponents are fixed (the *coefficients*, always positive, fitted in log space), the exponents,
their bounds and start grid, what the data must hold to identify each parameter, the domain of
each axis, and a vectorised numpy ``predict`` written as one broadcasting expression. The
fitting machinery (``fitting.solve``) is written once against the structured form ``Term``;
a test checks that the structured form and ``predict`` agree for every registered law. The
decision quantities (asymptote, tokens for a target loss, D* by the slope criterion) are
derived once, here, from the structured form and the law's ``token_axis``: code outside a law
never branches on its name.

Structured form (what the solver sees)::

    pred_i = offset_i + sum_k c_k * prod_{(e, x, s) in term_k} x_i ** (s * e)

where ``x`` is an axis or a derived *feature* (e.g. ``1 - S``), so that ``log`` of each term is
linear in ``(log c_k, exponents)``: the objective has a closed-form gradient and the
coefficients can be solved by non-negative least squares once the exponents are fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from data.cli import BadInput

Array = np.ndarray
GIGA = 1e9
"""The slope criterion is stated per 1e9 tokens (nats gained by one more billion)."""


@dataclass(frozen=True)
class Term:
    """One additive term ``c * prod(x ** (sign * exponent))`` of a law.

    Attributes
    ----------
    coef : str
        Name of the positive coefficient that multiplies the term.
    factors : tuple of (exponent name, axis or feature name, sign)
        ``x ** (sign * exponent)`` factors; ``sign=-1`` for ``1 / x ** exponent``.
    label : str
        What the term is, in words (named when a fit drops it: "the size term N_C/N0^alpha").
    """

    coef: str
    factors: tuple[tuple[str, str, float], ...] = ()
    label: str = ""


@dataclass(frozen=True)
class Pin:
    """An identifiability rule: with fewer than ``below`` distinct ``axis`` values, pin params.

    ``values`` maps each pinned parameter to the value it is fixed at (a coefficient fixed at 0
    drops its term), ``reason`` says why in words (printed in the card and the summary).
    """

    axis: str
    below: int
    values: Mapping[str, float]
    reason: str


@dataclass(frozen=True)
class Interval:
    """Allowed values of an axis: ``low < x < high`` (``<=`` where the end is closed)."""

    low: float = 0.0
    high: float = math.inf
    low_closed: bool = False
    high_closed: bool = False

    def contains(self, x: Array) -> Array:
        lo = x >= self.low if self.low_closed else x > self.low
        hi = x <= self.high if self.high_closed else x < self.high
        return lo & hi & np.isfinite(x)

    def __str__(self) -> str:
        left, right = "[" if self.low_closed else "(", "]" if self.high_closed else ")"
        return f"{left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Interval()


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
        Start grid per exponent for the variable-projection search (random starts are drawn
        in the same ranges).
    predict_fn : callable
        ``predict_fn(p, x) -> loss``; ``p`` maps a name to an array broadcastable to the axes.
    store : mapping
        Run-store column for each axis and the target (``data.runs.load`` names).
    store_init : str
        Which runs of a store the law describes (``init`` column: pruned or random).
    features : mapping
        Derived positive quantities the terms use, name -> ``f(axes)`` (e.g. ``1 - S``).
    domain : mapping
        Allowed values per axis (default: positive and finite).
    requires : mapping
        Axis -> (minimum distinct values, what they identify); fewer is refused.
    pins : tuple of Pin
        Parameters pinned when the data cannot identify them.
    token_axis, size_axis, ratio_axis : str or None
        Which axis is the training budget (decisions, the ``tokens`` hold-out), the model
        size (the ``size`` hold-out, "loss at 10x"), the pruning ratio (the ``ratio`` hold-out).
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
    features: Mapping[str, Callable[[Mapping[str, Array]], Array]] = field(default_factory=dict)
    domain: Mapping[str, Interval] = field(default_factory=dict)
    requires: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    pins: tuple[Pin, ...] = ()
    token_axis: str | None = None
    size_axis: str | None = None
    ratio_axis: str | None = None

    @property
    def plans_budgets(self) -> bool:
        """Whether the law answers a token budget per model size and pruning ratio (the
        planner's question, the report's D* page): it has token, size and ratio axes, so at
        each (size, ratio) it reduces to a token term ``a + k D^-beta``."""
        return None not in (self.token_axis, self.size_axis, self.ratio_axis)

    @property
    def coefs(self) -> tuple[str, ...]:
        """Names of the parameters that enter linearly (positive, fitted in log space)."""
        return tuple(t.coef for t in self.terms)

    @property
    def exponents(self) -> tuple[str, ...]:
        """Names of the nonlinear parameters (searched on a grid, then polished)."""
        return tuple(p for p in self.params if p not in self.coefs)

    def axis_domain(self, axis: str) -> Interval:
        return self.domain.get(axis, POSITIVE)

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

    def _axis_values(self, axes: Mapping[str, Array], needed: tuple[str, ...]) -> dict[str, Array]:
        missing = [a for a in needed if a not in axes]
        if missing:
            raise BadInput(f"law {self.name!r} needs axes {list(needed)}; missing {missing}")
        return {a: np.asarray(axes[a], dtype=float) for a in needed}

    def values(self, axes: Mapping[str, Array]) -> dict[str, Array]:
        """Axes and derived features by name (what term factors refer to)."""
        out = self._axis_values(axes, self.axes)
        out.update({name: np.asarray(f(out), dtype=float) for name, f in self.features.items()})
        return out

    def predict(self, params: Array | Mapping[str, float], **axes: Array) -> Array:
        """Predicted loss at ``axes`` (arrays or scalars, broadcast together).

        ``params`` is a ``[P]`` array, a ``[B, P]`` array of bootstrap samples (result
        ``[B, n]``) or a mapping from parameter name to value.
        """
        return self.predict_fn(self.unpack(params), self._axis_values(axes, self.axes))

    # -- decision quantities, derived from the structured form ------------------------------

    def _term_value(self, p: Mapping[str, Array], x: Mapping[str, Array], term: Term,
                    skip: str | None = None) -> Array:
        """``c * prod(factors)`` of one term, leaving out factors on axis ``skip``."""
        out = p[term.coef]
        for exponent, axis, sign in term.factors:
            if axis != skip:
                out = out * x[axis] ** (sign * p[exponent])
        return out

    def _token_term(self) -> tuple[Term, str]:
        """The single term ``c * ... / D^b`` on the token axis, and the name of ``b``."""
        if self.token_axis is None:
            raise BadInput(f"law {self.name!r} has no token axis: no token budget to derive")
        found = [(t, e) for t in self.terms for e, a, s in t.factors
                 if a == self.token_axis and s == -1.0]
        if len(found) != 1:
            raise BadInput(f"law {self.name!r}: token decisions need exactly one term c/D^b")
        return found[0]

    def _decision_inputs(self, params: Array | Mapping[str, float],
                         axes: Mapping[str, Array]) -> tuple[dict[str, Array], dict[str, Array]]:
        """Parameters and values for a query; the token axis may be left out (its factor is
        skipped) and so may the offset (then taken as 0: the loss above L0)."""
        defaults = {self.token_axis: 1.0} | ({self.offset: 0.0} if self.offset else {})
        full = {a: axes[a] if a in axes else defaults.get(a) for a in self.axes}
        missing = [a for a, v in full.items() if v is None]
        if missing:
            raise BadInput(f"law {self.name!r} needs axes {missing} for this query")
        return self.unpack(params), self.values(full)

    def asymptote(self, params: Array | Mapping[str, float], **axes: Array) -> Array:
        """The loss as the token budget grows without bound: offset plus every term that
        does not depend on the token axis (the token term tends to 0)."""
        term, _ = self._token_term()
        p, x = self._decision_inputs(params, axes)
        out = x[self.offset] if self.offset is not None else 0.0
        for t in self.terms:
            if t is not term:
                out = out + self._term_value(p, x, t)
        return np.asarray(out, dtype=float)

    def token_scale(self, params: Array | Mapping[str, float], **axes: Array) -> tuple[Array, Array]:
        """``(C, b)`` of the token term ``C / D^b`` at the query (everything but D folded in C)."""
        term, exponent = self._token_term()
        p, x = self._decision_inputs(params, axes)
        return self._term_value(p, x, term, skip=self.token_axis), p[exponent]

    def tokens_for_loss(self, params: Array | Mapping[str, float], target: float | Array,
                        **axes: Array) -> Array:
        """Smallest budget with predicted loss <= ``target``: ``D = (C / (target - L_inf))^(1/b)``.

        NaN where the target is at or below the asymptote (no budget reaches it).
        """
        c, b = self.token_scale(params, **axes)
        excess = np.asarray(target, float) - self.asymptote(params, **axes)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            out = (c / excess) ** (1.0 / b)
        return np.where(excess > 0, out, np.nan)

    def d_star(self, params: Array | Mapping[str, float], slope: float, **axes: Array) -> Array:
        r"""Slope criterion: the budget where one more 1e9 tokens improves the loss by ``slope``.

        .. math::

            -\frac{dL}{dD} 10^9 = S \;\Rightarrow\; D^* = (b\,C\,10^9 / S)^{1/(b+1)}

        for the token term ``C / D^b``. Past D* every further billion buys less (convex in D).
        """
        if not slope > 0:
            raise BadInput(f"slope {slope!r} must be a positive number of nats per 1e9 tokens")
        c, b = self.token_scale(params, **axes)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return (b * c * GIGA / slope) ** (1.0 / (b + 1.0))

    # -- what an experimental design needs from a law (planner.design) ----------------------

    def coordinate(self, name: str) -> str:
        """How the fitter moves parameter ``name``: ``log N_C`` for a coefficient (fitted in
        log space, ``fitting.solve``), the bare name for an exponent."""
        return f"log {name}" if name in self.coefs else name

    def log_jacobian(self, params: Array | Mapping[str, float], **axes: Array) -> Array:
        r"""Sensitivity of the predicted curve, ``d log L / d u`` at each point, ``[n, P]``.

        ``u`` is the fitter's coordinate of each parameter (:meth:`coordinate`), columns in
        ``params`` order. From the structured form, with ``T_k`` the value of term ``k``:

        .. math::

            \frac{\partial L}{\partial \log c_k} = T_k, \qquad
            \frac{\partial L}{\partial e} = \sum_k T_k \sum_{(e, x, s) \in k} s \log x

        ``params`` is one law (``[P]`` or a mapping), not a batch.
        """
        p, x = self.unpack(params), self.values(axes)
        pred = np.atleast_1d(self.predict(params, **axes))
        index = {name: j for j, name in enumerate(self.params)}
        out = np.zeros(pred.shape + (len(self.params),))
        for term in self.terms:
            value = np.broadcast_to(self._term_value(p, x, term), pred.shape)
            out[..., index[term.coef]] += value
            for exponent, axis, sign in term.factors:
                out[..., index[exponent]] += value * sign * np.log(x[axis])
        return out / pred[..., None]

    def d_star_log_gradient(self, params: Array | Mapping[str, float], slope: float,
                            **axes: Array) -> Array:
        r"""Sensitivity of the decision, ``d log D* / d u`` (``[P]``, coordinates as in
        :meth:`log_jacobian`), for :meth:`d_star` with token term ``C / D^b``:

        .. math::

            \log D^* = \frac{\log b + \log C + \log(10^9 / S)}{b + 1}, \qquad
            \frac{\partial \log D^*}{\partial b} = \frac{1/b - \log D^*}{b + 1}

        and ``log C`` is linear in the term's log coefficient and its other exponents.
        """
        term, b_name = self._token_term()
        p, x = self._decision_inputs(params, axes)
        b = float(np.squeeze(p[b_name]))
        log_d = float(np.log(np.squeeze(self.d_star(params, slope, **axes))))
        index = {name: j for j, name in enumerate(self.params)}
        out = np.zeros(len(self.params))
        out[index[term.coef]] += 1.0 / (b + 1.0)
        for exponent, axis, sign in term.factors:
            if axis != self.token_axis:
                out[index[exponent]] += sign * float(np.squeeze(np.log(x[axis]))) / (b + 1.0)
        out[index[b_name]] += (1.0 / b - log_d) / (b + 1.0)
        return out

    def simulate(self, params: Array | Mapping[str, float], runs: Array, rng: np.random.Generator,
                 *, noise: float, run_noise: float, **axes: Array) -> Array:
        """Noisy observations of the law at ``axes``: ``predict * exp(noise e_i + run_noise o_r)``.

        ``e_i`` is independent per point, ``o_r`` is shared by every point of run ``runs[i]``
        (checkpoints of one run share its seed and data order, so their errors are correlated:
        the reason the fit's intervals resample whole runs). ``params`` ``[B, P]`` gives
        ``[B, n]``: one simulated world per row. A loss never falls below the offset (a pruned
        model's loss L0 is the floor its recovery approaches from above).
        """
        mean = self.predict(params, **axes)
        _, inverse = np.unique(np.asarray(runs), return_inverse=True)
        shared = rng.standard_normal(mean.shape[:-1] + (int(inverse.max()) + 1,))[..., inverse]
        y = mean * np.exp(noise * rng.standard_normal(mean.shape) + run_noise * shared)
        if self.offset is not None:
            y = np.maximum(y, np.asarray(axes[self.offset], float) * (1 + 1e-9))
        return y
