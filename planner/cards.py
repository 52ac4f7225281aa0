"""Law cards for the planner: the checks a decision needs, and the bundled lookup.

Cards are read with ``fitting.card.load_card`` (numpy only, no pandas/scipy: the planner stays
sub-second) into the same class a fit returns (``fitting.card.LawCard``, with its file and
hash), and the planner holds that card itself: every prediction, interval, decision quantity,
slot and provenance comes from it. This module adds the checks a decision needs (a law the
planner can plan with, finite parameters) and turns every malformed card into one clear
:class:`data.cli.BadInput` line.

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

from data.cli import BadInput
from fitting.card import LawCard
from fitting.card import load_card as fitting_load_card
from fitting.laws import LAWS

CARDS_ENV = "PRUNELAW_CARDS_DIR"
INDEX_FILE = "index.json"
HOW_TO_GET_A_CARD = ("pass --law CARD.json (made by 'fitting fit RUNS --law p2 --out CARD.json') "
                     "or run 'engine demo' to produce one")


def load_card(path: str | Path, *, law: str | None = None) -> LawCard:
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
    return card


def planning_card(path: str | Path) -> LawCard:
    """A card given by path for a budget: read and checked, of a law that ``plans_budgets``."""
    card = load_card(path)
    if not card.law.plans_budgets:
        able = ", ".join(name for name, known in LAWS.items() if known.plans_budgets)
        raise BadInput(f"law card {str(path)!r} is a {card.law.name!r} card, a law without token, size "
                       f"and ratio axes: a budget needs one of the laws {able}")
    return card


# ----------------------------------------------------------------------------- bundled cards


def cards_dir() -> Path:
    """Where bundled cards are looked up (``PRUNELAW_CARDS_DIR`` overrides the package dir)."""
    env = os.environ.get(CARDS_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "cards"


def scan(directory: Path | None = None) -> list[tuple[Path, LawCard | None, str]]:
    """``(path, card or None, problem)`` for each ``*.json`` in the cards directory but the index."""
    directory = cards_dir() if directory is None else directory
    out: list[tuple[Path, LawCard | None, str]] = []
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

    card: LawCard
    reason: str


@dataclass(frozen=True)
class _Header:
    """What the lookup needs of a card, read from its JSON without building it: only the
    card chosen is loaded in full (the planner's cold start reads one card, not all)."""

    path: Path
    law: str
    family: str | None
    method: str | None
    size_range: tuple[float, float] | None

    @classmethod
    def read(cls, path: Path) -> "_Header | None":
        try:
            raw = json.loads(path.read_text())
            data, law = raw.get("data") or {}, LAWS.get(str(raw.get("law")))
        except (OSError, ValueError, AttributeError):
            return None
        if law is None:
            return None
        span = (raw.get("range") or {}).get(law.size_axis) if law.size_axis else None
        size = (float(span["min"]), float(span["max"])) if isinstance(span, dict) else None
        family, method = data.get("family"), data.get("method")
        return cls(path, law.name, str(family) if family else None, str(method) if method else None, size)

    def wanted(self, law: str | None) -> bool:
        return _wanted(self.law, law)


def _headers(directory: Path) -> list[_Header]:
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    return [h for h in (_Header.read(p) for p in paths if p.name != INDEX_FILE) if h is not None]


def select_card(law: str | None, family: str, method: str | None, n0: float,
                directory: Path | None = None) -> Selection:
    """Pick the bundled card for ``(law, family, method)`` by the lookup order above.

    ``law=None`` takes a card of any law the planner can plan with (``Law.plans_budgets``);
    ``method=None`` matches any method (from-scratch cards have none).

    Raises:
        BadInput: when no card fits, naming how to get one.
    """
    directory = cards_dir() if directory is None else directory
    headers = [h for h in _headers(directory) if h.wanted(law)]
    exact = [h for h in headers if h.family == family and (method is None or h.method == method)]
    if exact:
        card = load_card(_closest(exact, n0).path)
        return Selection(card, f"bundled {card.law.name} card for family {family}"
                         + (f", method {method}" if method else ""))
    same_method = [h for h in headers if method is not None and h.method == method]
    if same_method:
        card = load_card(_closest(same_method, n0).path)
        return Selection(card, f"no bundled {card.law.name} card for family {family}; using method {method} "
                               f"fitted on family {card.family} (parents closest in size)")
    default = _default_card(directory, law)
    if default is not None:
        return Selection(default, f"no bundled {default.law.name} card for family {family}"
                         + (f", method {method}" if method else "")
                         + f"; using the default card named in {INDEX_FILE}")
    raise BadInput(f"no bundled {law or 'planning'} law card for family {family!r}"
                   + (f", method {method!r}" if method else "")
                   + f" (looked in {directory}); {HOW_TO_GET_A_CARD}")


def _wanted(name: str, law: str | None) -> bool:
    """A card of law ``name`` answers a query for ``law`` (None: any law that plans budgets)."""
    return name == law if law is not None else LAWS[name].plans_budgets


def _closest(headers: list[_Header], n0: float) -> _Header:
    """The card whose fitted parent sizes are nearest ``n0`` in log space (ties: by path)."""
    def distance(header: _Header) -> float:
        lo, hi = header.size_range or (n0, n0)
        return 0.0 if lo <= n0 <= hi else min(abs(math.log(n0 / lo)), abs(math.log(n0 / hi)))
    return min(headers, key=lambda h: (distance(h), str(h.path)))


def _default_card(directory: Path, law: str | None) -> LawCard | None:
    """The card named by ``index.json``'s ``default`` (a file name, or ``{law: file}``; a bare
    file name is the P2 card's; ``law=None``: the first named card the planner can plan with)."""
    index = directory / INDEX_FILE
    if not index.is_file():
        return None
    try:
        entry = json.loads(index.read_text()).get("default")
    except (json.JSONDecodeError, AttributeError):
        raise BadInput(f"{index} is not a JSON object like {{\"default\": {{\"p2\": \"FILE.json\"}}}}") from None
    named = entry if isinstance(entry, dict) else {"p2": entry} if entry else {}
    for key, name in named.items():
        if name and (key == law or law is None):
            card = load_card(directory / str(name))
            if _wanted(card.law.name, law):
                return card
    return None
