"""The prior a design is computed at: a law's centre, laws drawn around it, the noise of runs.

Three sources, always named in the answer:

- ``card``: a P2 card of the query's family (``--prior CARD.json``, or the family's bundled
  card): its parameters are the centre, its bootstrap samples the drawn laws, its measured
  point and run-to-run scatter the noise. A card is refused as a prior when it predicts, at
  the design's smallest run, a loss above L0 larger than a uniform guess over the family's
  vocabulary loses (``planner.verdict.credibility``): such a card no longer describes models
  of this size, and a design computed at it would be tuned to curves nobody will see.
- ``runs``: the runs already done (``--runs STORE``), fitted with bootstrap: the sequential
  mode's prior.
- ``weak``: the stated weakly-informative prior below, where no usable card exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from data.cli import BadInput
from data.models import ModelSpec
from fitting.laws import P2, Law
from fitting.synthetic import TRUE_P2, parent_loss
from fitting.card import LawCard
from planner.cards import load_card
from planner.verdict import uniform_guess_loss

Array = np.ndarray
WEAK_SPREAD: dict[str, float] = {"N_C": 1.0, "D_C": 0.7, "E": 0.5, "alpha": 0.05, "beta": 0.05,
                                 "gamma": 0.3, "delta": 0.02}
"""Prior sd of each parameter in the fitter's coordinates (log for coefficients), around
``fitting.synthetic.TRUE_P2``. With these, log D* at an 8B parent and ratio 0.5 has a prior sd
of about 1 (a factor of 7 either side at 95%): it says which curves are plausible at LLM scale,
not what D* is."""
WEAK_NOISE = 0.003
"""Sd of one checkpoint's log eval loss around its run's curve (held-out sets of ~1M tokens)."""
WEAK_RUN_NOISE = 0.003
"""Sd of a whole run's log-loss offset (seed and data order of the post-training run)."""
PRIOR_DRAWS = 400
"""Laws drawn from the weakly-informative prior (simulated worlds draw from these)."""


@dataclass(frozen=True)
class Prior:
    """Where the design's sensitivities are evaluated and the worlds its check simulates."""

    law: Law
    center: Array
    """``[P]`` parameters in ``law.params`` order."""
    samples: Array
    """``[B, P]`` laws drawn from the prior (the simulation check's true worlds)."""
    noise: float
    run_noise: float
    kind: str
    """``card``, ``runs`` or ``weak``."""
    source: str
    """The prior in words (printed with every design)."""
    losses: dict[str, float] = field(default_factory=dict)
    """Measured L0 by parent name (the runs' own); others follow :func:`parent_loss`."""
    notes: tuple[str, ...] = ()

    def loss_before(self, spec: ModelSpec) -> float:
        """The parent's L0: measured where a run of it was, else the synthetic size trend
        (only the offset's scale matters to a log-space fit; the design's check varies it)."""
        return self.losses.get(spec.name, parent_loss(float(spec.params_total)))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "source": self.source, "center": dict(zip(self.law.params, map(float, self.center))),
                "draws": int(len(self.samples)), "noise": self.noise, "run_noise": self.run_noise,
                "notes": list(self.notes)}


def weak_prior(seed: int = 0) -> Prior:
    """The stated weakly-informative prior (``WEAK_SPREAD`` around ``TRUE_P2``)."""
    law = P2
    center = np.array([TRUE_P2[n] for n in law.params])
    sd = np.array([WEAK_SPREAD[n] for n in law.params])
    rng = np.random.default_rng(seed)
    u = to_coordinates(law, center) + sd * rng.standard_normal((PRIOR_DRAWS, len(center)))
    spread = ", ".join(f"{law.coordinate(n)} sd {WEAK_SPREAD[n]:g}" for n in law.params)
    return Prior(law, center, from_coordinates(law, u), WEAK_NOISE, WEAK_RUN_NOISE, "weak",
                 f"weakly-informative P2 prior: centre {_fmt(law, center)}; normal in the fitter's "
                 f"coordinates ({spread}); noise {WEAK_NOISE:g} per point, {WEAK_RUN_NOISE:g} per run (log loss)")


def to_coordinates(law: Law, params: Array) -> Array:
    """Parameters -> the fitter's coordinates (log of each coefficient, exponents as they are)."""
    params = np.asarray(params, float)
    logs = np.array([n in law.coefs for n in law.params])
    with np.errstate(divide="ignore"):
        return np.where(logs, np.log(np.maximum(params, 1e-300)), params)


def from_coordinates(law: Law, u: Array) -> Array:
    logs = np.array([n in law.coefs for n in law.params])
    return np.where(logs, np.exp(u), u)


def _fmt(law: Law, params: Array) -> str:
    return ", ".join(f"{n}={v:.3g}" for n, v in zip(law.params, params))


def card_prior(card: LawCard, family: str, smallest: dict[str, float], explicit: bool) -> Prior | str:
    """A card as the prior, or (bundled cards only) the reason it cannot be one.

    ``smallest`` is the design's cheapest run (the P2 axes): where a card fitted far below the
    design's sizes first stops making sense.

    Raises:
        BadInput: a card of another law or family (always), and a ``--prior`` card that does
            not describe these parents.
    """
    name = str(card.path)
    if card.law.name != P2.name:
        raise BadInput(f"--prior {name!r} is a {card.law.name!r} card; a design needs a {P2.name!r} card")
    if card.family is not None and card.family != family:
        raise BadInput(f"--prior {name!r} was fitted on family {card.family!r}; the query is family "
                       f"{family!r}: pass a {family} card or leave --prior out")
    why = misfit(card.params_array, family, smallest, f"card {Path(name).name}")
    if why is not None:
        if explicit:
            raise BadInput(f"--prior {name!r}: {why}")
        return why
    boot = card.bootstrap_params
    samples = boot if boot is not None and len(boot) else card.params_array[None]
    noise = card.scatter.sigma_point or WEAK_NOISE
    run_noise = card.scatter.sigma_run or WEAK_RUN_NOISE
    return Prior(P2, card.params_array, np.asarray(samples, float), noise, run_noise, "card",
                 f"card {name} ({family}/{card.method}; {len(samples)} bootstrap laws); "
                 f"noise {noise:.3g} per point, {run_noise:.3g} per run (the card's measured scatter)")


def misfit(params: Array, family: str, smallest: dict[str, float], what: str) -> str | None:
    """Why a law cannot be a prior for these parents (None: it can): its predicted loss above
    L0 on the design's smallest run exceeds what a uniform guess over the vocabulary loses."""
    gap = float(np.squeeze(P2.predict(params, **smallest))) - smallest["loss_before"]
    ceiling = uniform_guess_loss(family) or math.inf
    if math.isfinite(gap) and gap < ceiling:
        return None
    return (f"{what} predicts L - L0 = {gap:+.4g} nats on the design's smallest run, more than a uniform "
            f"guess over the {family} vocabulary (ln V = {ceiling:.2f}): it does not describe parents of this size")


def prior_for(prior_path: str | None, bundled: LawCard | None, family: str,
              smallest: dict[str, float]) -> Prior:
    """``--prior`` if given, else the family's bundled card if it describes these sizes, else
    the weakly-informative prior (the reason recorded in its notes)."""
    if prior_path is not None:
        chosen = card_prior(load_card(prior_path), family, smallest, explicit=True)
        assert isinstance(chosen, Prior)
        return chosen
    if bundled is not None:
        chosen = card_prior(bundled, family, smallest, explicit=False)
        if isinstance(chosen, Prior):
            return chosen
        return replace(weak_prior(), notes=(f"not the bundled card: {chosen}",))
    return replace(weak_prior(), notes=(f"no bundled {family} card for this method",))
