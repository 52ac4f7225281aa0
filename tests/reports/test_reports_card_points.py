"""A report draws and scores a card on the points it was fitted on: the committed SmolLM2-135M
curves hold a KD width run and an LM run of the same shape, and the bundled width card was
fitted on KD alone, after each run's LR warm-up."""

from pathlib import Path

import numpy as np
import pytest

from data.runs import load
from fitting.card import load_card
from reports import laws

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "docs" / "smollm2_runs"


def test_the_residual_page_scores_a_kd_card_on_its_own_post_warmup_points() -> None:
    card = load_card(ROOT / "planner" / "cards" / "p2_smollm2_width.json")
    frame = load(STORE)
    width = frame[frame["method"] == "width"]
    assert {"kd", "lm"} <= set(width["objective"])  # the LM control shares the KD card's shape

    table = laws.residuals(frame, card)
    fitted = card.points_in(STORE)
    assert sorted(table["tokens"]) == sorted(fitted.axes[card.law.token_axis])
    assert set(table["run_id"]) == set(fitted.run_ids)
    rmse = float(np.sqrt(np.mean(table["residual"] ** 2)))
    assert rmse == pytest.approx(card.metrics["rmse"], rel=1e-3)  # the page's RMSE is the card's


def test_the_law_is_drawn_over_the_runs_it_describes_from_their_first_post_warmup_point() -> None:
    card = load_card(ROOT / "planner" / "cards" / "p2_smollm2_width.json")
    frame = load(STORE)
    drawn = laws.predictions(frame, card)
    kd = frame[(frame["method"] == "width") & (frame["objective"] == "kd")]
    assert set(drawn["run_id"]) == set(kd["run_id"])
    fitted = card.points_in(STORE)
    first = min(fitted.axes[card.law.token_axis])
    assert drawn["tokens"].min() == pytest.approx(first)
    assert first > kd.loc[kd["tokens"] > 0, "tokens"].min()  # the warm-up's points are not under the law
