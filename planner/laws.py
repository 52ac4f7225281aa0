"""Decision quantities the planner derives from a P2 card, on top of ``fitting.laws``.

Predictions and the slope criterion come from fitting's law objects (one formula in the
project: ``fitting.laws.P2.predict`` and ``fitting.laws.optimal_tokens``). This module adds
the two closed forms a budget decision needs that fitting does not: the asymptote and the
inversion of the loss. ``params`` is a ``[P]`` array (point estimate) or ``[B, P]`` bootstrap
samples; results broadcast the same way fitting's do (``[B, 1]`` for samples).

P2::

    L(D) = L0 + s * (N_C / N0**alpha + E) + s * D_C / D**beta,   s = rho**-gamma * N0**-delta
"""

from __future__ import annotations

import numpy as np

from fitting.laws import P2, optimal_tokens

__all__ = ["p2_scale", "p2_asymptote", "p2_tokens_for_loss", "slope_tokens", "p2_loss"]


def p2_scale(params: np.ndarray, n0: float, ratio: float) -> np.ndarray:
    """``s = (1/rho)**gamma * (1/N0)**delta``: how pruning and parent size scale the bracket."""
    p = P2.unpack(params)
    return (1.0 / ratio) ** p["gamma"] * (1.0 / n0) ** p["delta"]


def p2_loss(params: np.ndarray, n0: float, ratio: float, tokens: float | np.ndarray,
            loss_before: float) -> np.ndarray:
    """Predicted eval loss after ``tokens`` post-training tokens (fitting's ``P2.predict``)."""
    return P2.predict(params, params_before=n0, ratio=ratio, tokens=tokens, loss_before=loss_before)


def p2_asymptote(params: np.ndarray, n0: float, ratio: float, loss_before: float) -> np.ndarray:
    """The loss P2 approaches as D -> infinity: ``L0 + s * (N_C / N0**alpha + E)``."""
    p = P2.unpack(params)
    return loss_before + p2_scale(params, n0, ratio) * (p["N_C"] / n0 ** p["alpha"] + p["E"])


def p2_tokens_for_loss(params: np.ndarray, n0: float, ratio: float, target: float,
                       loss_before: float) -> np.ndarray:
    """Smallest D with predicted loss <= ``target``: ``D = (s*D_C / (target - L_inf))**(1/beta)``.

    NaN where the target is at or below the asymptote L_inf (no budget reaches it).
    """
    p = P2.unpack(params)
    excess = target - p2_asymptote(params, n0, ratio, loss_before)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (p2_scale(params, n0, ratio) * p["D_C"] / excess) ** (1.0 / p["beta"])
    return np.where(excess > 0, out, np.nan)


def slope_tokens(params: np.ndarray, n0: float, ratio: float, slope: float) -> np.ndarray:
    """D* of the slope criterion (fitting's closed form); NaN where the law predicts no gain.

    ``D* = (beta * D_C * s * 1e9 / S) ** (1 / (beta + 1))``. Beyond D* every further billion
    tokens buys less than ``slope`` nats (P2 is convex in D). Independent of L0.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.asarray(optimal_tokens(params, n0, ratio, slope), dtype=float)
    return np.where(np.isfinite(out) & (out > 0), out, np.nan)
