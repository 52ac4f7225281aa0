"""Law cards for the planner: fitting's card (``fitting.card.LawCard``) plus the bundled lookup.

Cards are read with ``fitting.card.load_card`` (numpy only, no pandas/scipy: the planner stays
sub-second) into the same class a fit returns, so every prediction, interval and decision
quantity comes from the card's law object; this module adds the checks a decision needs (the
right law, finite parameters), the card's slot and provenance, and turns every malformed card
into one clear :class:`data.cli.BadInput` line.

Bundled cards live in ``planner/cards/*.json`` (package data). A card's slot is read from the
card itself (``law``, ``data.family``, ``data.method``), so files may be named freely
(``p2_<family>_<method>.json`` by convention). ``planner/cards/index.json`` (optional) names the
last-resort card per law: ``{"default": {"p2": "FILE.json"}}`` (or ``{"default": "FILE.json"}``
for a P2 card). ``PRUNELAW_CARDS_DIR`` points the lookup at another directory (tests, a demo).

Lookup order for a query (law L, family F, method M), always reported with the reason:
exact F + M -> same M in another family (the one whose fitted parents are closest in size to
the query) -> the ``default`` card of ``index.json`` -> exit 2 telling the user to pass --law.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data.cli import BadInput
from fitting.card import LawCard
from fitting.card import load_card as fitting_load_card

CARDS_ENV = "PRUNELAW_CARDS_DIR"
INDEX_FILE = "index.json"
HOW_TO_GET_A_CARD = ("pass --law CARD.json (made by 'fitting fit RUNS --law p2 --out CARD.json') "
                     "or run 'engine demo' to produce one")


@dataclass(frozen=True)
class Card:
    """A law card and where it came from."""

    path: Path
    card: LawCard

    @property
    def law(self) -> str:
        return self.card.law.name

    @property
    def family(self) -> str | None:
        return _opt_str(self.card.data.get("family"))

    @property
    def method(self) -> str | None:
        return _opt_str(self.card.data.get("method"))

    def axis_range(self, axis: str) -> tuple[float, float] | None:
        return self.card.axis_range(axis)

    def identifiability_notes(self) -> list[str]:
        """What the fit could not pin down, one line each (pinned, at a bound, degenerate,
        weak, sloppy): the planner repeats them next to its answer."""
        return self.card.identifiability_notes()

    def outliers(self) -> list[str]:
        """Runs the card's residual report flagged as outliers."""
        return self.card.outliers()

    def provenance(self) -> dict[str, Any]:
        """What a user needs to trust (or distrust) the card."""
        data, fit = self.card.data, self.card.fit
        boot = self.card.bootstrap_params
        return {"path": str(self.path), "law": self.law, "version": self.card.version,
                "family": self.family, "method": self.method, "source": data.get("source"),
                "content_hash": data.get("content_hash", data.get("hash")),
                "created": self.card.created, "n_runs": fit.get("n_runs"),
                "n_points": fit.get("n_points"), "n_bootstrap": 0 if boot is None else len(boot),
                "n_jackknife": 0 if self.card.jackknife_params is None else len(self.card.jackknife_params),
                "not_identified": self.card.not_identified(),
                "identifiability": self.identifiability_notes(), "outlier_runs": self.outliers()}


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "", "any", "all") else str(value)


def load_card(path: str | Path, *, law: str | None = None) -> Card:
    """Read and check a card; ``law`` (if given) is the law the caller needs.

    Raises:
        BadInput: missing file, invalid JSON, not a card, wrong law, missing or non-finite
            parameters, a malformed bootstrap table.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"law card {str(path)!r} not found; {HOW_TO_GET_A_CARD}")
    try:
        card = fitting_load_card(path)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise BadInput(f"law card {str(path)!r} is malformed ({type(exc).__name__}: {exc}); "
                       "expected a card written by 'fitting fit'") from None
    if law is not None and card.law.name != law:
        raise BadInput(f"law card {str(path)!r} is a {card.law.name!r} card; this command needs a "
                       f"{law!r} card ('fitting fit RUNS --law {law} --out CARD.json')")
    bad = [k for k, v in card.params.items() if not math.isfinite(v)]
    if bad:
        raise BadInput(f"law card {str(path)!r} has non-finite parameters {bad}; refit it")
    return Card(path, card)


# ----------------------------------------------------------------------------- bundled cards


def cards_dir() -> Path:
    """Where bundled cards are looked up (``PRUNELAW_CARDS_DIR`` overrides the package dir)."""
    env = os.environ.get(CARDS_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "cards"


def scan(directory: Path | None = None) -> list[tuple[Path, Card | None, str]]:
    """``(path, card or None, problem)`` for each ``*.json`` in the cards directory but the index."""
    directory = cards_dir() if directory is None else directory
    out: list[tuple[Path, Card | None, str]] = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        if path.name == INDEX_FILE:
            continue
        try:
            out.append((path, load_card(path), ""))
        except BadInput as exc:
            out.append((path, None, str(exc)))
    return out


@dataclass(frozen=True)
class Selection:
    """A card chosen for a query, with the reason in words (printed and in --json)."""

    card: Card
    reason: str


def select_card(law: str, family: str, method: str | None, n0: float,
                directory: Path | None = None) -> Selection:
    """Pick the bundled card for ``(law, family, method)`` by the lookup order above.

    ``method=None`` matches any method (from-scratch cards have none).

    Raises:
        BadInput: when no card fits, naming how to get one.
    """
    directory = cards_dir() if directory is None else directory
    cards = [c for _, c, _ in scan(directory) if c is not None and c.law == law]
    exact = [c for c in cards if c.family == family and (method is None or c.method == method)]
    if exact:
        return Selection(_closest(exact, n0), f"bundled {law} card for family {family}"
                         + (f", method {method}" if method else ""))
    same_method = [c for c in cards if method is not None and c.method == method]
    if same_method:
        card = _closest(same_method, n0)
        return Selection(card, f"no bundled {law} card for family {family}; using method {method} "
                               f"fitted on family {card.family} (parents closest in size)")
    default = _default_card(directory, law)
    if default is not None:
        return Selection(default, f"no bundled {law} card for family {family}"
                         + (f", method {method}" if method else "")
                         + f"; using the default card named in {INDEX_FILE}")
    raise BadInput(f"no bundled {law} law card for family {family!r}"
                   + (f", method {method!r}" if method else "")
                   + f" (looked in {directory}); {HOW_TO_GET_A_CARD}")


def _closest(cards: list[Card], n0: float) -> Card:
    """The card whose fitted parent sizes are nearest ``n0`` in log space (ties: by path)."""
    def distance(card: Card) -> float:
        span = card.axis_range("params_before") or card.axis_range("N") or (n0, n0)
        lo, hi = span
        return 0.0 if lo <= n0 <= hi else min(abs(math.log(n0 / lo)), abs(math.log(n0 / hi)))
    return min(cards, key=lambda c: (distance(c), str(c.path)))


def _default_card(directory: Path, law: str) -> Card | None:
    """The card named by ``index.json``'s ``default`` (a file name, or ``{law: file}``)."""
    index = directory / INDEX_FILE
    if not index.is_file():
        return None
    try:
        entry = json.loads(index.read_text()).get("default")
    except (json.JSONDecodeError, AttributeError):
        raise BadInput(f"{index} is not a JSON object like {{\"default\": {{\"p2\": \"FILE.json\"}}}}") from None
    name = entry.get(law) if isinstance(entry, dict) else (entry if law == "p2" else None)
    if not name:
        return None
    card = load_card(directory / str(name))
    return card if card.law == law else None
