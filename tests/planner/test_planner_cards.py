"""Card reading and the bundled-card lookup of the planner (plus card fixtures for its tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data.cli import BadInput
from planner.cards import load_card, scan, select_card

P2_TRUE = {"N_C": 250.0, "D_C": 2000.0, "E": 0.5, "alpha": 0.3, "beta": 0.35, "gamma": -0.8, "delta": 0.05}
CHIN_TRUE = {"E": 1.8, "A": 480.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


def card_dict(law: str = "p2", params: dict | None = None, *, family: str | None = "llama3",
              method: str | None = "depth", n_boot: int = 200, spread: float = 0.05,
              n0: tuple[float, float] = (1e8, 1e9), seed: int = 0) -> dict:
    """A card in fitting's format (what ``fitting.card.save_card`` writes), from known params.

    Bootstrap samples perturb every parameter multiplicatively by ``spread`` (log-normal), so
    intervals are non-trivial and centred on the known values.
    """
    params = dict(params or (P2_TRUE if law == "p2" else CHIN_TRUE))
    names = list(params)
    rng = np.random.default_rng(seed)
    samples = np.array([params[k] for k in names]) * np.exp(spread * rng.standard_normal((n_boot, len(names))))
    ranges = ({"params_before": {"min": n0[0], "max": n0[1]}, "ratio": {"min": 0.2, "max": 0.5},
               "tokens": {"min": 1e6, "max": 1e9}, "loss_before": {"min": 2.5, "max": 3.0}}
              if law == "p2" else {"N": {"min": 1e7, "max": 1e10}, "D": {"min": 1e8, "max": 1e12}})
    card = {"law": law, "version": 1, "created": "2026-01-01T00:00:00Z", "params": params,
            "ci": {"level": 0.95}, "fit": {"n_runs": 12, "n_points": 96, "seed": seed},
            "metrics": {}, "range": ranges, "identifiable": {},
            "data": {"family": family, "method": method, "source": "test fixture",
                     "content_hash": f"sha256:{seed:064d}"}}
    if n_boot:
        card["bootstrap"] = {"params": names, "samples": samples.tolist()}
    return card


def write_card(path: Path, **kwargs) -> Path:
    path.write_text(json.dumps(card_dict(**kwargs)))
    return path


def test_load_card_reads_fitting_format(tmp_path):
    card = load_card(write_card(tmp_path / "c.json"), law="p2")
    assert card.law.name == "p2" and card.family == "llama3" and card.method == "depth"
    assert card.params == P2_TRUE
    assert card.bootstrap_params.shape == (200, 7)
    assert card.provenance()["n_bootstrap"] == 200


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"law": "p2"}), "lacks"),
    (json.dumps({**card_dict(), "params": {"N_C": 1.0}}), "lacks parameters"),
    (json.dumps({**card_dict(), "bootstrap": {"params": ["x"], "samples": [[1]]}}), "malformed"),
])
def test_bad_cards_are_bad_input(tmp_path, content, needle):
    path = tmp_path / "card.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInput, match=needle):
        load_card(path, law="p2")


def test_wrong_law_names_both_laws(tmp_path):
    path = write_card(tmp_path / "c.json", law="chinchilla")
    with pytest.raises(BadInput, match="'chinchilla' card.*needs a 'p2' card"):
        load_card(path, law="p2")


def test_lookup_order_exact_then_method_then_default(tmp_path):
    write_card(tmp_path / "a.json", family="qwen2.5", method="width", n0=(1e8, 1e9))
    write_card(tmp_path / "b.json", family="llama3", method="width", n0=(1e10, 1e11))
    write_card(tmp_path / "c.json", family="llama3", method="depth")
    exact = select_card("p2", "llama3", "depth", 8e9, tmp_path)
    assert exact.card.path.name == "c.json" and "bundled" in exact.reason
    # same method, other family: no qwen2.5 depth card -> nothing; qwen2.5 width exists
    other = select_card("p2", "smollm2", "width", 8e9, tmp_path)
    assert other.card.path.name == "b.json", "the card whose parents are closest to 8B"
    assert "family llama3" in other.reason
    with pytest.raises(BadInput, match="no bundled p2 law card.*--law"):
        select_card("p2", "qwen2.5", "2:4", 8e9, tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"default": {"p2": "a.json"}}))
    fallback = select_card("p2", "qwen2.5", "2:4", 8e9, tmp_path)
    assert fallback.card.path.name == "a.json" and "default" in fallback.reason


def test_scan_reports_unreadable_cards_without_failing(tmp_path):
    write_card(tmp_path / "good.json")
    (tmp_path / "bad.json").write_text("{")
    found = {p.name: (c is not None, problem) for p, c, problem in scan(tmp_path)}
    assert found["good.json"] == (True, "")
    assert found["bad.json"][0] is False and "not valid JSON" in found["bad.json"][1]
    assert select_card("p2", "llama3", "depth", 1e9, tmp_path).card.path.name == "good.json"


def test_no_card_committed_without_provenance():
    """Bundled cards (if any) must be real fitting output: readable, with a source and a hash."""
    for path, card, problem in scan(Path(__file__).resolve().parents[2] / "planner" / "cards"):
        assert card is not None, problem
        prov = card.provenance()
        assert prov["source"] and prov["content_hash"], path
