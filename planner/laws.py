"""Decision quantities the planner reads from a P2 card: thin wrappers over the law object.

Every formula lives in the law (``fitting.laws.P2``: ``predict``, ``asymptote``,
``token_scale``, ``tokens_for_loss``, ``d_star``); these functions only name the P2 axes the
planner speaks in (``n0``, ``ratio``, ``loss_before``) and keep the planner's NaN conventions.
``params`` is a ``[P]`` array (point estimate) or ``[B, P]`` bootstrap samples; results
broadcast the same way fitting's do (``[B, 1]`` for samples).

P2 near the decision, for fixed (N0, rho)::

    L(D) = L_inf + C / D**beta      (L_inf = law.asymptote, (C, beta) = law.token_scale)
"""

from __future__ import annotations

import numpy as np

from fitting.laws import P2

__all__ = ["p2_scale", "p2_asymptote", "p2_tokens_for_loss", "slope_tokens", "p2_loss", "token_term"]


def _at(n0: float, ratio: float) -> dict[str, float]:
    return {"params_before": n0, "ratio": ratio}


def token_term(params: np.ndarray, n0: float, ratio: float,
               loss_before: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(L_inf, C, beta)`` of ``L(D) = L_inf + C / D**beta`` at (N0, rho)."""
    c, beta = P2.token_scale(params, **_at(n0, ratio))
    return p2_asymptote(params, n0, ratio, loss_before), c, beta


def p2_scale(params: np.ndarray, n0: float, ratio: float) -> np.ndarray:
    """How pruning and parent size scale the bracket: the token term's ``C`` over ``D_C``."""
    c, _ = P2.token_scale(params, **_at(n0, ratio))
    return c / P2.unpack(params)["D_C"]


def p2_loss(params: np.ndarray, n0: float, ratio: float, tokens: float | np.ndarray,
            loss_before: float) -> np.ndarray:
    """Predicted eval loss after ``tokens`` post-training tokens (``P2.predict``)."""
    return P2.predict(params, params_before=n0, ratio=ratio, tokens=tokens, loss_before=loss_before)


def p2_asymptote(params: np.ndarray, n0: float, ratio: float, loss_before: float) -> np.ndarray:
    """The loss P2 approaches as D -> infinity (``P2.asymptote``)."""
    return P2.asymptote(params, loss_before=loss_before, **_at(n0, ratio))


def p2_tokens_for_loss(params: np.ndarray, n0: float, ratio: float, target: float,
                       loss_before: float) -> np.ndarray:
    """Smallest D with predicted loss <= ``target`` (``P2.tokens_for_loss``); NaN where the
    target is at or below the asymptote (no budget reaches it)."""
    return P2.tokens_for_loss(params, target, loss_before=loss_before, **_at(n0, ratio))


def slope_tokens(params: np.ndarray, n0: float, ratio: float, slope: float) -> np.ndarray:
    """D* of the slope criterion (``P2.d_star``); NaN where the law predicts no gain.

    Beyond D* every further billion tokens buys less than ``slope`` nats (P2 is convex in D).
    Independent of L0.
    """
    out = np.asarray(P2.d_star(params, slope, **_at(n0, ratio)), dtype=float)
    return np.where(np.isfinite(out) & (out > 0), out, np.nan)
