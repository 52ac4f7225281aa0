"""A new law and a new criterion are one registration each: the planner uses them unedited.

The toy law and the toy criterion below live only in this file. Registered through the public
registries (``fitting.laws.register``, ``fitting.criteria.register``), ``planner recommend``
plans with a card of the law (its own axis names, no P2 anywhere) under the criterion (its own
flag, help line, D* and budget check), and nothing else in the project names either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fitting import criteria, laws
from fitting.criteria import Criterion, Reference, Solver
from fitting.laws import Law, Term
from fitting.laws.base import Interval
from planner.__main__ import main
from planner.cli.recommend import build_parser

TRUE = {"E": 2.0, "B": 1000.0, "g": 0.1, "k": 0.5, "b": 0.4}
N0, RATIO, L0, WITHIN = 1e9, 0.5, 2.5, 0.05


def _predict(p: Mapping[str, np.ndarray], x: Mapping[str, np.ndarray]) -> np.ndarray:
    return x["L0"] + p["E"] * x["N"] ** -p["g"] + p["B"] * (1.0 - x["rho"]) ** -p["k"] * x["D"] ** -p["b"]


TOY_LAW = Law(
    name="toy", formula="L = L0 + E / N^g + B / ((1 - rho)^k D^b)", params=("E", "B", "g", "k", "b"),
    axes=("N", "rho", "D", "L0"), target="loss",
    terms=(Term("E", (("g", "N", -1.0),), "the size term E / N^g"),
           Term("B", (("k", "keep", -1.0), ("b", "D", -1.0)), "the data term B / ((1 - rho)^k D^b)")),
    offset="L0", bounds={"g": (0.0, 2.0), "k": (0.0, 3.0), "b": (0.0, 2.0)},
    grid={"g": np.linspace(0, 1, 5), "k": np.linspace(0, 2, 5), "b": np.linspace(0.1, 1, 5)},
    predict_fn=_predict, features={"keep": lambda x: 1.0 - x["rho"]},
    store={"N": "params_before", "rho": "ratio", "D": "tokens", "L0": "loss_before", "loss": "eval_loss"},
    domain={"rho": Interval(0.0, 1.0, low_closed=True)},
    token_axis="D", size_axis="N", ratio_axis="rho")


@dataclass(frozen=True)
class Within(Criterion):
    """The smallest budget whose predicted loss is within E nats of the law's asymptote."""

    kind = "within"
    flag = "--within"
    metavar = "E"
    help = "nats above the asymptote"
    explain = "  --within E       the budget whose predicted loss is within E nats of the asymptote"
    harder = "a smaller --within"
    easier = "a larger --within"

    def describe(self) -> str:
        return f"within: the smallest budget whose predicted loss is within {self.value:g} nats of the asymptote"

    def solver(self, start: Reference, asymptote: float, relative: bool) -> Solver:
        return lambda a, k, b: (k / self.value) ** (1.0 / b)


@pytest.fixture
def toy_card(tmp_path: Path):
    """A card of the toy law (registered for the test only) and the toy criterion."""
    laws.register(TOY_LAW)
    criteria.register(Within)
    rng = np.random.default_rng(0)
    names = list(TRUE)
    samples = np.array([TRUE[n] for n in names]) * np.exp(0.02 * rng.standard_normal((100, len(names))))
    card = {"law": "toy", "version": 2, "created": "2026-01-01T00:00:00Z", "params": TRUE,
            "ci": {"level": 0.95}, "fit": {"n_runs": 12, "n_points": 96}, "metrics": {},
            "range": {"N": {"min": 1e8, "max": 1e10}, "rho": {"min": 0.2, "max": 0.7},
                      "D": {"min": 1e7, "max": 1e12}, "L0": {"min": 2.0, "max": 3.0}},
            "identifiable": {}, "data": {"family": "llama3", "method": "depth", "source": "toy"},
            "bootstrap": {"params": names, "samples": samples.tolist()}}
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(card))
    yield path
    laws.LAWS.pop("toy")
    criteria.CRITERIA.pop("within")


def _recommend(capsys, card: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["recommend", "--params", f"{N0:g}", "--ratio", str(RATIO), "--law", str(card),
                 "--loss-before", str(L0), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_planner_plans_with_a_registered_law_and_criterion(toy_card, capsys):
    code, out, err = _recommend(capsys, toy_card, "--within", str(WITHIN), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["card"]["law"] == "toy" and doc["criterion"]["kind"] == "within"
    assert doc["verdict"].startswith("verdict: in range")
    k = TRUE["B"] * (1 - RATIO) ** -TRUE["k"]
    assert doc["tokens"]["value"] == pytest.approx((k / WITHIN) ** (1 / TRUE["b"]), rel=1e-9)
    loss = L0 + TRUE["E"] * N0 ** -TRUE["g"] + WITHIN
    assert doc["loss"]["value"] == pytest.approx(loss, rel=1e-9)


def test_the_criterion_brings_its_flag_help_and_budget_check(toy_card, capsys):
    assert "--within E" in build_parser().format_help()
    code, _, err = _recommend(capsys, toy_card, "--within", "1e-12")
    assert code == 2 and "out of practical reach" in err and "a larger --within" in err


def test_the_default_card_criteria_are_unchanged_by_the_registration(toy_card, capsys):
    code, out, err = _recommend(capsys, toy_card, "--json")
    assert code == 0, err
    assert json.loads(out)["criterion"]["kind"] == "recover"
