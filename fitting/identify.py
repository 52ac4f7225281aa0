"""What the data can identify: decided before fitting from the law's own rules, and checked
after it (bounds, degenerate terms, sloppy directions). Reported in the card and the summary.

Before: each law declares ``requires`` (axis -> distinct values needed, refused below) and
``pins`` (parameters pinned, with the reason, when an axis has too few distinct values; e.g.
P2 with one parent size: ``(1/N0)^delta`` and ``N_C/N0^alpha`` are constants absorbed by
``E`` and ``D_C``). After: a parameter at or near a bound, a term whose coefficient went to 0
(the fit collapsed to the law without it), and directions in parameter space the data do not
constrain (the Jacobian's small singular values, scaled by the residual scatter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from data.cli import BadInput
from fitting.laws import Law, Term

NEAR_BOUND = 1e-3
"""An exponent within this fraction of its bound range of a bound is reported at the bound."""
NEGLIGIBLE_TERM = 1e-6
"""A term whose largest value on the data is below this fraction of the fitted signal is absent."""
SLOPPY_SD = 0.5
"""A direction of (centred log-coefficients, exponents) whose standard error exceeds this is
sloppy: the data pin only the combinations orthogonal to it."""


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


def identify(law: Law, axes: Mapping[str, np.ndarray], n_points: int) -> Identifiability:
    """Decide the free parameters of ``law`` on ``axes``; ``BadInput`` if nothing sensible is left."""
    for axis, (need, what) in law.requires.items():
        n = distinct(axes[axis])
        if n < need:
            raise BadInput(f"only {n} distinct {axis!r} values; {law.name!r} needs at least "
                           f"{need} to identify {what}")
    fixed: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for pin in law.pins:
        n = distinct(axes[pin.axis])
        if n < pin.below:
            for name, value in pin.values.items():
                fixed.setdefault(name, value)
                reasons.setdefault(name, f"{n} distinct {pin.axis} value(s): {pin.reason}")
    n_free = len(law.params) - len(fixed)
    if n_points <= n_free:
        raise BadInput(f"{n_points} points cannot identify {n_free} free parameters of "
                       f"{law.name!r}; need more than {n_free} points")
    return Identifiability(fixed, reasons)


# -- after the fit ---------------------------------------------------------------------------


def exponent_bound_notes(law: Law, params: Mapping[str, float],
                         fixed: Mapping[str, float]) -> dict[str, str]:
    """Exponent -> note for every free exponent at (or within NEAR_BOUND of) a bound."""
    notes: dict[str, str] = {}
    for name in law.exponents:
        if name in fixed:
            continue
        lo, hi = law.bounds[name]
        tol = NEAR_BOUND * (hi - lo)
        if params[name] <= lo + tol or params[name] >= hi - tol:
            side = "lower" if params[name] <= lo + tol else "upper"
            notes[name] = (f"{name} = {params[name]:.4g} is at its {side} bound "
                           f"{lo if side == 'lower' else hi:g}: not identified by this data")
    return notes


COLLAPSED = "the fit collapsed to the law without it"
"""How every note of a term the fit dropped ends (:func:`collapsed_law` reads it back)."""


def absent_note(term: Term) -> str:
    """The note of a term whose coefficient went to 0."""
    return f"{term.coef} -> 0: {term.label or term.coef} is absent; {COLLAPSED}"


def collapsed_law(law: Law, identifiable: Mapping[str, Mapping]) -> str | None:
    """One line naming the simpler law a degenerate fit collapsed to (None if it did not).

    Reads a card's ``identifiable`` (so it also works on cards written before this line
    existed): the terms the fit dropped (coefficient -> 0, or exponents -> 0 that make the
    term a constant), the exponents that then enter no term left (free: any value fits), and
    the terms that remain, e.g. for P2 with ``N_C`` and ``E`` gone: "N_C -> 0 and E -> 0, so
    alpha is free: the fit is p2 without the size term N_C/N0^alpha and the constant E; only
    the data term D_C/D^beta remains".
    """
    notes = {t.coef: str((identifiable.get(t.coef) or {}).get("bound") or "") for t in law.terms}
    gone = [t for t in law.terms if notes[t.coef].endswith(COLLAPSED)]
    if not gone:
        return None
    kept = [t for t in law.terms if t not in gone]
    heads = [notes[t.coef].split(":", 1)[0] for t in gone]
    used = {e for t in kept for e, _, _ in t.factors}
    free = [e for e in law.exponents if e not in used and not any(h.startswith(f"{e} ") for h in heads)
            and any(e == f[0] for t in gone for f in t.factors)]
    head = " and ".join(heads) + (f", so {', '.join(free)} is free" if free else "")
    rest = (f"only {' and '.join(t.label or t.coef for t in kept)} "
            f"{'remains' if len(kept) == 1 else 'remain'}") if kept else "no term remains"
    return (f"{head}: the fit is {law.name} without {' and '.join(t.label or t.coef for t in gone)}; "
            f"{rest}")


def bound_notes(law: Law, params: Mapping[str, float], fixed: Mapping[str, float],
                values: Mapping[str, np.ndarray], signal: float) -> dict[str, str]:
    """Parameter -> note for exponents at a bound and terms that vanished (degenerate fits).

    ``values`` are the law's axes and features on the data, ``signal`` the typical size of
    what the terms must explain (median ``|y - offset|``).
    """
    notes = exponent_bound_notes(law, params, fixed)
    for term in law.terms:
        if term.coef in fixed:
            continue
        size = float(np.max(np.abs(law._term_value(params, values, term))))
        own = [f for f in term.factors if not all(f in t.factors for t in law.terms)]
        flat = [e for e, _, _ in own if e in notes and abs(params[e]) <= NEAR_BOUND * 8]
        if size < NEGLIGIBLE_TERM * max(signal, 1e-300):
            notes[term.coef] = absent_note(term)
            for e in (e for e, _, _ in term.factors if e in notes):
                notes[e] += f" ({term.label or term.coef} is absent, so {e} is free)"
        elif flat and len(own) == len(flat):
            const = next((t.label or t.coef for t in law.terms if t is not term and not [
                f for f in t.factors if not all(f in u.factors for u in law.terms)]), "a constant")
            notes[term.coef] = (f"{' and '.join(flat)} = 0: {term.label or term.coef} is a "
                                f"constant, indistinguishable from {const}; {COLLAPSED}")
    return notes


def sloppy_directions(jac: np.ndarray, resid: np.ndarray, names: list[str],
                      n_params: int) -> list[str]:
    """Directions the data leave unconstrained, from the Gauss-Newton covariance.

    ``jac`` is ``dr/dz`` at the optimum over (centred log-coefficients, exponents) named
    ``names``; ``s^2 = sum r^2 / (n - p)``. A direction's standard error is ``s / sigma_i``
    for each singular value ``sigma_i`` of ``jac``; above :data:`SLOPPY_SD` it is reported,
    with the parameters that make it up (weights >= 0.2 of the unit direction).
    """
    n = len(resid)
    if jac.size == 0 or n <= n_params:
        return []
    s2 = float(np.sum(resid ** 2) / (n - n_params))
    _, sing, vt = np.linalg.svd(jac, full_matrices=False)
    out = []
    for sigma, v in zip(sing, vt):
        sd = np.sqrt(s2) / sigma if sigma > 0 else np.inf
        if sd > SLOPPY_SD:
            v = v * np.sign(v[np.argmax(np.abs(v))])
            combo = " + ".join(f"{w:.2f}*{name}" for w, name in sorted(
                zip(v, names), key=lambda t: -abs(t[0])) if abs(w) >= 0.2)
            out.append(f"sloppy direction (standard error {sd:.3g}): {combo}; the data pin "
                       f"only the combinations across it")
    return out
