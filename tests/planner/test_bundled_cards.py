"""Every bundled P2 card is reproduced from the curves committed under docs/ that it names.

A clean clone holds the grids' run.json + curve.parquet files (no checkpoints): the toy
reference grid (docs/reference_runs) and the real SmolLM2-135M grid (docs/smollm2_runs), so
anyone can refit the planner's answers; this test does it for each card (point fit, no
bootstrap: a few seconds each) and checks what the evidence itself must show.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from data.runs import load, size_order_violations
from fitting.card import LawCard
from fitting.fit import FitConfig, fit

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "docs" / "reference_runs"
CARDS = sorted((ROOT / "planner" / "cards").glob("p2_*.json"))


def test_reference_parents_are_size_ordered_and_span_16x():
    frame = load(RUNS)
    assert size_order_violations(frame) == []
    llama = frame[(frame["family"] == "llama3") & (frame["method"] != "none")]
    sizes = sorted(set(llama["nonembed_before"]))
    assert len(sizes) >= 5 and sizes[-1] / sizes[0] >= 16


def test_there_is_a_card_per_family_and_method_and_none_has_a_machine_path():
    slots = set()
    for path in CARDS:
        text = path.read_text()
        assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text, path.name
        data = json.loads(text)["data"]
        slots.add((data["family"], data["method"]))
    assert {("llama3", "depth"), ("llama3", "width"), ("qwen2.5", "depth"), ("qwen2.5", "width")} <= slots


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_card_is_refitted_from_the_committed_curves(path):
    card = LawCard.load(path)
    source = ROOT / card.data["source"]
    assert source.parent == ROOT / "docs", card.data["source"]  # committed curves, not a work dir
    data = card.points_in(source)
    assert data.content_hash() == card.data["content_hash"]
    again = fit(data, FitConfig(seed=card.fit.get("seed", 0), n_bootstrap=0))
    # The same optimum: the objective and the fitted curves agree to rounding. Parameters the card
    # itself flags (at a bound, collapsed, along a sloppy direction) are free along a flat valley
    # and land elsewhere on another CPU's BLAS; every other parameter must agree.
    assert again.objective == pytest.approx(card.objective, rel=1e-7)
    np.testing.assert_allclose(again.predict(**data.axes), card.predict(**data.axes), rtol=1e-6)
    flagged = {n for n in card.law.params for line in card.diagnosis if re.search(rf"\b{re.escape(n)}\b", line)}
    pinned = [j for j, n in enumerate(card.law.params) if n not in flagged]
    np.testing.assert_allclose(again.params_array[pinned], card.params_array[pinned], rtol=1e-4, atol=1e-9)
    # the card knows the parents it rests on: the planner's range warnings read this
    assert card.range["params_before"]["max"] == pytest.approx(float(np.max(data.axes["params_before"])))
