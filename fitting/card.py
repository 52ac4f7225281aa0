"""The law card (DESIGN.md): a fit's JSON product, and a typed object read back from it.

Writing::

    save_card(result, "card.json")

Reading (the planner and reports)::

    card = load_card("card.json")
    card.predict(params_before=8e9, ratio=0.5, tokens=1e9, loss_before=2.1)   # point
    card.law.predict(card.bootstrap_params, **axes)                             # [B, n]
    card.optimal_tokens(N0=8e9, rho=0.5, slope=1e-3)                            # P2 only
    card.interval(lambda p: card.law.predict(p, **axes))                        # (lo, hi)
    card.outside_range(params_before=70e9)                                      # warnings
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.cli import BadInput
from fitting.laws import Law, get_law, optimal_tokens
from fitting.result import FitResult

CARD_VERSION = 1
REQUIRED = ("law", "version", "params", "fit", "range", "data")


def card_dict(result: FitResult, *, with_samples: bool = True) -> dict:
    """The card as a JSON-ready dict: the result's layout plus ``version`` and ``created``."""
    body = result.to_dict(with_samples=with_samples)
    law = get_law(result.law)
    return {"law": result.law, "version": CARD_VERSION, "formula": law.formula,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **{k: v for k, v in body.items() if k != "law"}}


def save_card(result: FitResult, path: str | Path, *, with_samples: bool = True) -> Path:
    """Write the card atomically (a killed write never leaves a torn card)."""
    from data.runs import write_json_atomic

    path = Path(path)
    write_json_atomic(path, card_dict(result, with_samples=with_samples))
    return path


@dataclass(frozen=True)
class LawCard:
    """A law card read back: the law object, its parameters, intervals and provenance."""

    law: Law
    params: dict[str, float]
    version: int
    ci: dict
    identifiable: dict[str, dict]
    fit: dict
    metrics: dict[str, float | None]
    range: dict[str, dict[str, float]]
    data: dict
    created: str | None
    bootstrap_params: np.ndarray | None = field(default=None, repr=False)

    @property
    def params_array(self) -> np.ndarray:
        """Parameters in ``law.params`` order."""
        return np.array([self.params[name] for name in self.law.params])

    def predict(self, **axes: float | np.ndarray) -> np.ndarray:
        """Point prediction of the target at ``axes``."""
        return self.law.predict(self.params_array, **axes)

    def optimal_tokens(self, N0: float, rho: float, slope: float) -> float:
        """P2 slope-criterion budget D* (see ``fitting.laws.optimal_tokens``)."""
        self._need_p2()
        return float(np.squeeze(optimal_tokens(self.params_array, N0, rho, slope)))

    def interval(self, f: Callable[[np.ndarray], np.ndarray],
                 level: float | None = None) -> tuple[float, float] | None:
        """Percentile interval of ``f(samples)`` over bootstrap samples (None without them)."""
        if self.bootstrap_params is None:
            return None
        level = self.ci.get("level", 0.95) if level is None else level
        vals = np.ravel(f(self.bootstrap_params))
        lo, hi = np.percentile(vals, [50 * (1 - level), 50 * (1 + level)])
        return float(lo), float(hi)

    def optimal_tokens_interval(self, N0: float, rho: float, slope: float,
                                level: float | None = None) -> tuple[float, float] | None:
        """Bootstrap interval of D* (shares ``optimal_tokens`` with the fit)."""
        self._need_p2()
        return self.interval(lambda p: optimal_tokens(p, N0, rho, slope), level)

    def outside_range(self, **axes: float) -> list[str]:
        """One message per axis value outside what the fit saw, saying how far."""
        out = []
        for axis, value in axes.items():
            span = self.range.get(axis)
            if span is None:
                continue
            lo, hi = span["min"], span["max"]
            if value > hi:
                out.append(f"{axis}={value:.4g} is {value / hi:.3g}x above the fitted max {hi:.4g}")
            elif value < lo:
                out.append(f"{axis}={value:.4g} is {lo / value:.3g}x below the fitted min {lo:.4g}")
        return out

    def not_identified(self) -> list[str]:
        """Names of parameters the data could not identify (pinned in the fit)."""
        return [n for n, r in self.identifiable.items() if not r.get("identified", True)]

    def _need_p2(self) -> None:
        if self.law.name != "p2":
            raise BadInput(f"optimal tokens need a p2 card; this card's law is {self.law.name!r}")


def _read_json(path: Path) -> Mapping:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"law card {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"law card {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadInput(f"law card {str(path)!r} is not a JSON object")
    return raw


def load_card(path: str | Path) -> LawCard:
    """Read a card written by :func:`save_card`; ``BadInput`` names what is wrong."""
    path = Path(path)
    raw = _read_json(path)
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise BadInput(f"law card {str(path)!r} lacks {missing}; is it a prunelaw card?")
    if raw["version"] != CARD_VERSION:
        raise BadInput(f"law card {str(path)!r} has version {raw['version']!r}; this prunelaw reads {CARD_VERSION}")
    law = get_law(raw["law"])
    absent = [p for p in law.params if p not in raw["params"]]
    if absent:
        raise BadInput(f"law card {str(path)!r} lacks parameters {absent} of law {law.name!r}")
    samples = raw.get("bootstrap")
    boot = None
    if samples:
        cols = [samples["params"].index(p) for p in law.params]
        boot = np.asarray(samples["samples"], dtype=float)[:, cols]
    return LawCard(law=law, params={p: float(raw["params"][p]) for p in law.params},
                   version=int(raw["version"]), ci=raw.get("ci", {}),
                   identifiable=raw.get("identifiable", {}), fit=raw["fit"],
                   metrics=raw.get("metrics", {}), range=raw["range"], data=raw["data"],
                   created=raw.get("created"), bootstrap_params=boot)
