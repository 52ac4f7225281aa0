"""Published practice: how many post-training tokens real pruning recipes spent (a cited table).

``planner/practice.csv`` (package data) holds one row per published recipe: parent, its size,
the pruned model, the achieved ratio, method, tokens (with a range for guidance rather than a
single run) and the source URL and citation. Outside a card's fitted range the planner prints
the nearest rows and the ratio of its D* to each, so a user sees at once when a law fitted on
small parents answers orders of magnitude away from what practitioners spent.

Ratios of the table are fractions of total parameters removed (docs/design-contract.md), computed from the
sizes the sources report; the 2:4 row counts non-zero parameters and is approximate.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "practice.csv"
COLUMNS = ("parent", "params", "target", "target_params", "ratio", "method", "tokens", "tokens_low",
           "tokens_high", "source", "citation")


@dataclass(frozen=True)
class Practice:
    """One published recipe."""

    parent: str
    params: float | None
    target: str
    ratio: float
    method: str
    tokens: float
    tokens_low: float
    tokens_high: float
    source: str
    citation: str

    def to_dict(self) -> dict:
        return dict(vars(self))


def load_practice(path: Path = TABLE) -> list[Practice]:
    """The bundled table (a test checks every row is complete and cited)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [Practice(r["parent"], float(r["params"]) if r["params"] else None, r["target"], float(r["ratio"]),
                     r["method"], float(r["tokens"]), float(r["tokens_low"]), float(r["tokens_high"]),
                     r["source"], r["citation"]) for r in rows]


def nearest(n0: float, ratio: float, k: int = 3) -> list[Practice]:
    """The ``k`` rows closest to (N0, ratio): log-size distance plus ratio distance (x5: a 0.2
    ratio step weighs like a factor e in size). Guidance rows without a size count by ratio."""
    def distance(p: Practice) -> float:
        size = abs(math.log(n0 / p.params)) if p.params else 1.0
        return size + 5.0 * abs(ratio - p.ratio)
    return sorted(load_practice(), key=distance)[:k]


def comparisons(d_star: float, n0: float, ratio: float, k: int = 3) -> list[dict]:
    """The nearest rows with ``law_over_practice`` = D* / the row's tokens."""
    return [{**p.to_dict(), "law_over_practice": d_star / p.tokens} for p in nearest(n0, ratio, k)]
