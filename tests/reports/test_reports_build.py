"""``reports build`` end to end: a real run store, real law cards from the fitting package."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from data.runs import RunStore
from reports.__main__ import main
from reports.plots import fmt_num
from reports.synthetic import SyntheticGrid, write_synthetic_store

PARENTS = (("tiny-135m", 134_515_008), ("tiny-360m", 361_821_120), ("tiny-1.7b", 1_711_376_384))
CURVES_WITH_LAW = "Loss vs post-training tokens (L − L0 where every point is above L0), the law and its bootstrap band"


def pdf_pages(path: Path) -> int:
    """Page objects in a matplotlib PDF (its page dictionaries are not compressed)."""
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", path.read_bytes()))


def pdf_text(path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True)
    return out.stdout


def _fit_card(runs: Path, method: str, out: Path, bootstrap: int) -> Path:
    from fitting.card import save_card
    from fitting.fit import FitConfig, fit
    from fitting.table import load_data

    result = fit(load_data(runs, "p2", method=method, objective="lm"), FitConfig(n_bootstrap=bootstrap))
    return save_card(result, out)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """18 pruned lm runs (3 parents x 2 methods x 3 ratios) plus, for the smallest parent and
    depth only, the random-init and kd runs the comparison pages pair them with."""
    root = tmp_path_factory.mktemp("reports") / "runs"
    write_synthetic_store(root, SyntheticGrid(parents=PARENTS, methods=("depth", "width"), n_points=6,
                                              domains=("books",)))
    for seed, extra in enumerate(({"inits": ("random",)}, {"objectives": ("kd",)}), 1):
        write_synthetic_store(root, SyntheticGrid(parents=PARENTS[:1], methods=("depth",), n_points=6,
                                                  domains=("books",), **extra), seed=seed)
    return root


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """Two runs of one parent: enough for a curves-only report, quick to draw."""
    root = tmp_path_factory.mktemp("reports_small") / "runs"
    write_synthetic_store(root, SyntheticGrid(parents=PARENTS[:1], methods=("depth",), ratios=(0.25, 0.5),
                                              n_points=5))
    return root


@pytest.fixture(scope="module")
def cards(store: Path) -> tuple[Path, Path]:
    return (_fit_card(store, "depth", store.parent / "depth.json", bootstrap=10),
            _fit_card(store, "width", store.parent / "width.json", bootstrap=0))


@pytest.fixture(scope="module")
def report(store: Path, cards: tuple[Path, Path]) -> tuple[Path, str]:
    out = store.parent / "report.pdf"
    code = main(["build", str(store), "--law", str(cards[0]), "--law", str(cards[1]), "--out", str(out)])
    assert code == 0
    return out, pdf_text(out)


def test_report_has_every_section(report):
    out, text = report
    assert out.read_bytes().startswith(b"%PDF")
    headings = [CURVES_WITH_LAW,
                "Loss after pruning and after post-training vs ratio",
                "[1] Fitted parameters: p2 [synthetic/depth]", "[1] Residuals", "[1] Held-out extrapolation",
                "[1] Recommended post-training tokens D*", "[2] Fitted parameters: p2 [synthetic/width]",
                "Per-domain loss: books", "Pruned init vs random init at matched tokens",
                "Post-training objective vs lm at matched tokens"]
    for heading in headings:
        assert heading in text, heading
    # 3 parents x (depth, width) pruned + 1 random-init panel = 7 curve panels, 4 per page
    assert text.count(CURVES_WITH_LAW) == 2
    # title, 2 curve pages, 1 ratio page, card 1 (4 pages) + card 2 (4 pages), 1 domain, 2 comparisons
    assert pdf_pages(out) == 1 + 2 + 1 + 4 + 4 + 1 + 2


def test_title_page_gives_provenance(report, cards, store):
    import hashlib

    _, text = report
    title = text.split("\f")[0]
    runs = len(RunStore(store).run_ids())
    assert f"runs counted: {runs} (done {runs})" in title
    assert "commit " in title and "prunelaw 0.1.0" in title
    for card in cards:
        assert hashlib.sha256(card.read_bytes()).hexdigest()[:16] in title
    assert "criterion: huber (delta 0.001) on log loss" in title
    assert "close 90% of the recoverable gap, planner recommend's default criterion" in title
    assert "fitted on this store's runs" in title and "OTHER data" not in title


def _planner_dstar(card_path: Path, n0: float, ratio: float, family: str):
    """What ``planner recommend --law CARD --params N0 --ratio R`` answers (default criterion)."""
    from planner.cards import load_card
    from data.compute import get_gpu
    from planner.query import Parent
    from fitting.criteria import DEFAULT_RECOVER, Criterion
    from planner.recommend import recommend

    card = load_card(card_path, law="p2")
    return recommend(Parent(int(n0), family, None), card.method, ratio, card, "test",
                     criterion=Criterion.of("recover", DEFAULT_RECOVER), gpu=get_gpu("h100"), mfu=0.4,
                     price=None).tokens


def test_title_headline_dstar_is_the_planners_answer(report, cards):
    from data.units import format_count

    _, text = report
    title = " ".join(text.split("\f")[0].split())
    family = json.loads(cards[0].read_text())["data"]["family"]
    est = _planner_dstar(cards[0], PARENTS[-1][1], 0.5, family)
    assert "[1] D* for tiny-1.7b (N0 = 1.71B; close 90% of the recoverable gap" in title
    assert f"ρ=0.5: {format_count(est.value)} [{format_count(est.low)}, {format_count(est.high)}]" in title
    assert "random − pruned, depth (lm): mean loss gap" in title and "kd − lm, depth (pruned)" in title


def test_parameter_table_holds_the_card_numbers(report, cards):
    _, text = report
    card = json.loads(cards[0].read_text())
    page = next(p for p in text.split("\f") if "[1] Fitted parameters" in p)
    for name, value in card["params"].items():
        assert re.search(rf"{re.escape(name)}\s+{re.escape(fmt_num(value))}\s", page), name
        low, high = card["ci"]["params"][name]
        assert fmt_num(low) in page and fmt_num(high) in page
    assert f"rmse = {card['metrics']['rmse']:.4g}" in page
    # the width card has no bootstrap: no made-up intervals
    width_page = next(p for p in text.split("\f") if "[2] Fitted parameters" in p)
    assert "no bootstrap interval" in width_page


def test_heldout_page_shows_each_split_with_its_error(report):
    _, text = report
    page = next(p for p in text.split("\f") if "[1] Held-out extrapolation" in p)
    # splits are named by what they hold out: tokens / size / ratio
    assert "tokens" in page and "size" in page and "ratio" in page


def test_without_a_card_the_report_is_curves_only_and_says_so(small_store, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(small_store, runs)
    failed = RunStore(runs)
    record = failed.read(failed.run_ids()[0])
    failed.write("diverged", {**record, "status": "failed", "reason": "loss is NaN at step 30"})
    failed.append_curve("diverged", [{"step": 0, "tokens": 0, "eval_loss": 4.0},
                                     {"step": 30, "tokens": 10_000, "eval_loss": 99.0}])
    out = tmp_path / "curves.pdf"
    assert main(["build", str(runs), "--out", str(out), "--panels", "6"]) == 0
    text = pdf_text(out)
    assert "runs counted: 3 (done 2, failed 1)" in text
    # counted, not drawn: its loss of 99 would stretch the loss axis to ticks 20, 50, 80
    curves = text.split("\f")[1]
    assert "Loss vs post-training tokens" in curves and not re.search(r"\b(20|50|80)\b", curves)
    assert "No law card given (--law): curves only." in text
    assert "Fitted parameters" not in text and "Residuals" not in text
    assert "Loss vs post-training tokens" in text and "the law and its bootstrap band" not in text


def test_a_card_for_a_method_not_in_the_store_is_refused(small_store, cards, tmp_path, capsys):
    card = json.loads(cards[1].read_text())
    card["data"]["method"] = "2:4"
    path = tmp_path / "sparse.json"
    path.write_text(json.dumps(card))
    out = tmp_path / "r.pdf"
    assert main(["build", str(small_store), "--law", str(path), "--out", str(out), "--no-heldout"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "describes no runs" in err and "2:4" in err and not out.exists()


def test_the_headline_of_the_bundled_card_is_the_planners_answer():
    """The reference store and its bundled llama3/depth card: the title page's D* per ratio
    (value and interval) is exactly what ``planner recommend`` answers for that parent."""
    from data.runs import load
    from reports import build, laws

    root = Path(__file__).resolve().parents[2]
    card = root / "planner" / "cards" / "p2_llama3_depth.json"
    frame = load(root / "docs" / "reference_runs")
    (opened,) = laws.open_cards([str(card)])
    here = laws.check_against_store([opened], root / "docs" / "reference_runs", frame)
    assert here[opened.sha256], "the bundled card was fitted on the reference runs"
    name, n0, table = build.headline_dstar(opened, laws.card_rows(frame, opened))
    assert name == "ref-llama-5" and n0 == 410688
    for row in table.itertuples():
        est = _planner_dstar(card, n0, row.ratio, "llama3")
        assert (row.dstar, row.lo, row.hi) == pytest.approx((est.value, est.low, est.high), rel=1e-12)


def test_a_card_fitted_on_other_data_is_labelled_never_the_fitted_law(store, cards, tmp_path):
    from data.runs import load
    from reports import laws

    other = tmp_path / "other"
    write_synthetic_store(other, SyntheticGrid(parents=PARENTS, methods=("depth",), n_points=6), seed=7)
    foreign = _fit_card(other, "depth", tmp_path / "foreign.json", bootstrap=0)
    opened = laws.open_cards([str(cards[0]), str(foreign)])
    here = [laws.check_against_store(opened, store, load(store))[c.sha256] for c in opened]
    assert here == [True, False]
    assert laws.law_label(here[0]) == "fitted law" and "OTHER" not in laws.label(opened[0], here[0])
    assert laws.law_label(here[1]) == "law fitted on other data" and "fitted on OTHER data" in laws.label(opened[1], here[1])


def _bare_store(root: Path) -> Path:
    """One run whose metadata lacks loss_before and params_before (not an engine run)."""
    store = RunStore(root)
    store.write("r0", {"status": "done", "meta": {"parent": "p", "method": "depth", "ratio": 0.5,
                                                  "init": "pruned", "objective": "lm"}})
    store.append_curve("r0", [{"step": 0, "tokens": 0, "eval_loss": 4.0},
                              {"step": 1, "tokens": 1000, "eval_loss": 3.5}])
    return root


@pytest.mark.parametrize("case, expect", [
    ("missing", "does not exist"),
    ("empty", "holds no runs"),
    ("columns", "lack column(s) ['params_before', 'loss_before']"),
    ("law", "unknown law 'nosuch'; allowed: "),
    ("corrupt", "is not valid JSON"),
    ("suffix", "must end in .pdf"),
])
def test_bad_input_exits_2_with_one_line_and_keeps_the_old_report(case, expect, store, cards, tmp_path, capsys):
    out = tmp_path / "old.pdf"
    out.write_bytes(b"%PDF previous report")
    runs, card = str(store), str(cards[0])
    if case == "missing":
        runs = str(tmp_path / "nope")
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        runs = str(tmp_path / "empty")
    elif case == "columns":
        runs = str(_bare_store(tmp_path / "bare"))
    elif case in ("law", "corrupt"):
        bad = tmp_path / "bad.json"
        raw = json.loads(cards[0].read_text())
        bad.write_text(json.dumps({**raw, "law": "nosuch"}) if case == "law" else "{not json")
        card = str(bad)
    # --force: the bad input itself must be refused before the old report is touched
    args = ["build", runs, "--law", card, "--out", str(out if case != "suffix" else tmp_path / "r.png"), "--force"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("reports build: error:")
    assert expect in err
    assert out.read_bytes() == b"%PDF previous report"


def test_help_has_examples(capsys):
    try:  # argparse exits 0 after --help; the shared dispatcher may turn that into a return
        code = main(["build", "--help"])
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    assert capsys.readouterr().out.count("  reports build runs/") >= 3


def _evidence(path: Path) -> Path:
    """A closed-loop evidence file as scripts/reference_evidence.py writes it (rendered cells)."""
    from planner.evidence import TABLE_HEAD, table_cells

    row = {"family": "llama3", "method": "depth", "holdout": "size", "run_id": "l5_depth", "params_before": 410e3,
           "ratio": 0.46, "loss_before": 3.194, "d_star": 7.2e5, "d_star_low": 5e5, "d_star_high": 9e5,
           "loss_pred": 3.31, "loss_low": 3.29, "loss_high": 3.35, "loss_actual": 3.30, "tokens_max": 8e5,
           "mode": "card", "err_dl": (3.31 - 3.30) / (3.30 - 3.194), "inside": True, "beyond": None}
    summary = {"runs": 1, "scored": 1, "median_abs_err_dl": 0.094, "inside": 1, "covered_of": 1,
               "beyond_observed": 0}
    loop = {"head": list(TABLE_HEAD), "llama3/depth/size": {"summary": summary, "rows": [row],
                                                           "cells": [table_cells(row)]}}
    path.write_text(json.dumps({"closed_loop": loop, "claims": {}}))
    return path


def test_evidence_pages_print_the_findings_cells(small_store, tmp_path):
    evidence = _evidence(tmp_path / "closed_loop.json")
    out = tmp_path / "r.pdf"
    assert main(["build", str(small_store), "--evidence", str(evidence), "--out", str(out)]) == 0
    text = pdf_text(out)
    cells = json.loads(evidence.read_text())["closed_loop"]["llama3/depth/size"]["cells"][0]
    assert "Closed loop: the largest parent held out" in text
    assert all(c in text for c in (cells[5], cells[6], cells[8])), cells  # D*, dL pred, error
    assert "1/1 inside the interval" in text
    assert "The evidence file holds no ratio hold-out rows." in text


def test_evidence_without_rendered_cells_is_refused(small_store, tmp_path, capsys):
    old = tmp_path / "closed_loop.json"
    old.write_text(json.dumps({"closed_loop": {"llama3/depth/size": {"summary": {}, "rows": []}}}))
    out = tmp_path / "r.pdf"
    assert main(["build", str(small_store), "--evidence", str(old), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not closed-loop evidence with rendered tables" in err
    assert not out.exists()


RECON_LINES = [
    {"cell": "dense", "loss": 2.9604, "eval": "16x512"},
    {"cell": "mag50", "method": "unstructured-magnitude", "sparsity": 0.5, "loss_after_prune": 5.8475},
    {"cell": "mag50:block:16", "method": "unstructured-magnitude", "sparsity": 0.5, "loss_after_prune": 5.8475,
     "granularity": "block", "recon_calib": "16x256", "loss_after_recon": 4.3741},
    {"cell": "mag50:layer:16", "method": "unstructured-magnitude", "sparsity": 0.5, "loss_after_prune": 5.8475,
     "granularity": "layer", "recon_calib": "16x256", "loss_after_recon": 4.6570},
    {"cell": "mag50:lora:16", "method": "unstructured-magnitude", "sparsity": 0.5, "loss_after_prune": 5.8475,
     "peft_tokens": 4096, "loss_after_peft": 4.9001, "loss_after_peft_masked": 5.4393},
    {"cell": "width25:block:4", "method": "width", "ratio": 0.25, "loss_after_prune": 5.8236,
     "granularity": "block", "recon_calib": "4x256", "loss_after_recon": 4.7433},
    {"cell": "peer:mag50", "loss_after_prune": 5.8000},
]


def test_recon_page_tabulates_each_pruning_by_granularity_and_calibration(small_store, tmp_path):
    from reports.tables import recon_table

    columns, cells = recon_table(RECON_LINES)
    assert columns == ["pruning", "after prune", "block @ 16x256", "block @ 4x256", "layer @ 16x256",
                       "LoRA @ 4,096 tok", "llm-compressor"]
    assert cells == [["unstructured-magnitude 50% [mag50]", "5.848", "4.374", "—", "4.657", "4.900 / 5.439", "5.800"],
                     ["width ratio 0.25 [width25]", "5.824", "—", "4.743", "—", "—", "—"]]
    results = tmp_path / "recon.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in RECON_LINES))
    out = tmp_path / "r.pdf"
    assert main(["build", str(small_store), "--recon", str(results), "--out", str(out)]) == 0
    text = pdf_text(out)
    assert "Local reconstruction after pruning" in text and "4.374" in text and "dense parent 2.960" in text


@pytest.mark.parametrize("content, message", [(None, "no such file"), ("{not json", "is not JSON lines"),
                                              ('{"loss": 1}', "holds no result lines")])
def test_bad_recon_results_exit_2(small_store, tmp_path, capsys, content, message):
    results = tmp_path / "recon.jsonl"
    if content is not None:
        results.write_text(content)
    out = tmp_path / "r.pdf"
    assert main(["build", str(small_store), "--recon", str(results), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not out.exists()


def test_dstar_page_marks_what_lies_outside_the_fit(report):
    _, text = report
    page = next(p for p in text.split("\f") if "Recommended post-training tokens D*" in p)
    # ratios 0.1-0.9 are drawn, the store holds 0.25-0.75: both sides are shaded as extrapolation
    assert "outside the fitted ratios" in page and "largest budget observed" in page


def test_a_flat_dstar_page_says_it_is_the_criterion_not_a_fault(report):
    """Recover D* of a power-law token term does not move with the ratio: the page says why."""
    _, text = report
    page = next(p for p in text.split("\f") if "Recommended post-training tokens D*" in p)
    assert "D* is the same at every ratio" in " ".join(page.split())


def test_the_flat_dstar_note_is_only_for_flat_lines():
    import pandas as pd

    from fitting.card import LawCard
    from reports import laws

    flat = pd.DataFrame({"label": ["a"] * 3, "ratio": [0.2, 0.5, 0.8], "dstar": [4e5] * 3})
    assert laws.ratio_free_note(flat).startswith("D* is the same at every ratio")
    assert laws.ratio_free_note(flat.assign(dstar=[4e5, 5e5, 6e5])) == ""
    bundled = LawCard.load(Path(__file__).resolve().parents[2] / "planner" / "cards" / "p2_llama3_width.json")
    assert laws.ratio_free_note(laws.dstar_table(bundled, {"8B": 8e9})) != ""  # what the 8B page shows


def test_parents_pretraining_has_its_own_page_not_a_panel_among_the_pruned(small_store, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(small_store, runs)
    store = RunStore(runs)
    meta = dict(store.read(store.run_ids()[0])["meta"], method="none", ratio=0.0, ratio_target=0.0,
                init="random", params_after=PARENTS[0][1])
    store.write("parent-pretrain", {"status": "done", "meta": meta})
    store.append_curve("parent-pretrain", [{"step": s, "tokens": s * 10_000, "eval_loss": 9.0 / (1 + s) ** 0.3}
                                           for s in range(6)])
    out = tmp_path / "r.pdf"
    assert main(["build", str(runs), "--out", str(out)]) == 0
    pages = pdf_text(out).split("\f")
    assert sum("Parents' pretraining: loss vs tokens" in p for p in pages) == 1
    curves = [p for p in pages if "Loss vs post-training tokens" in p]
    assert curves and not any("none" in p and "random init" in p for p in curves)


def test_the_demo_summary_prints_the_report_headline_d_star():
    """The demo's closing block and the report's title page give one D* for one card and parent."""
    from data.runs import load
    from data.units import format_count
    from planner.cards import load_card
    from data.compute import get_gpu
    from planner.query import Parent
    from fitting.criteria import DEFAULT_RECOVER, Criterion
    from planner.recommend import recommend
    from reports import build, laws
    from workflow.demo import planner_line

    root = Path(__file__).resolve().parents[2]
    path = root / "planner" / "cards" / "p2_llama3_depth.json"
    frame = load(root / "docs" / "reference_runs")
    (card,) = laws.open_cards([str(path)])
    name, n0, table = build.headline_dstar(card, laws.card_rows(frame, card))
    l0 = float(frame.loc[frame["parent"] == name, "loss_before"].iloc[0])
    rec = recommend(Parent(int(n0), "llama3", None), "depth", 0.5, load_card(path, law="p2"), "demo",
                    criterion=Criterion.of("recover", DEFAULT_RECOVER), gpu=get_gpu("h100"), mfu=0.4, price=None,
                    loss_before=l0)  # the demo passes the L0 its grid measured
    row = table.loc[table["ratio"] == 0.5].iloc[0]
    (line,) = planner_line(rec)
    assert f"D* = {format_count(row['dstar'])} [{format_count(row['lo'])}, {format_count(row['hi'])}] tokens" in line


def test_the_real_parent_report_says_its_two_run_card_has_no_interval(tmp_path):
    """The committed SmolLM2-135M curves and their bundled depth card (one parent, two ratios):
    the report draws them and its title page says the bootstrap could not give an interval."""
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "smollm2.pdf"
    assert main(["build", str(root / "docs" / "smollm2_runs"), "--law",
                 str(root / "planner" / "cards" / "p2_smollm2_depth.json"), "--no-heldout", "--out", str(out)]) == 0
    title = pdf_text(out).split("\f")[0]
    assert "smollm2-135m (N0 = 135M)" in title and "none varies: no interval" in title
