"""Backtest pilot-run calibration on real curves: does a pilot of the first x % predict the rest?

For every pruned run of every run store given (default: ``work/demo/runs`` and each store
under ``docs/reference_runs/`` that exists), and pilots made of the run's first 5, 10, 20 and
30 % of tokens, three planners predict the run's final eval loss and the D* found on the full
curve (the planner's default criterion, recover 0.9 of the recoverable gap measured from the
run's own loss right after pruning, fitted pilot-only on the whole curve):

- ``card``        the P2 card for the run's method alone (no pilot);
- ``pilot``       the pilot alone, L = L_inf + B / D^beta;
- ``pilot+card``  the pilot with the card's beta bootstrap as prior.

Reported per planner and pilot fraction: runs scored, MAPE of the final dL = L - L0, the share
of runs whose true final loss lies in the 95 % interval, the median |log10| error of D* and the
coverage of the D* interval (D* scored only where the full curve resolves it: its D* within 10x
the run's last point). Runs with fewer than 3 points after step 0 in a pilot are skipped
for that fraction (counted in ``skipped``). Cards: ``--cards DIR`` (default: the bundled ones).
NB: the bundled cards were fitted on the demo runs, so ``card`` rows on the demo store are
in-sample (optimistic); a store the card never saw is the honest test.

    .venv/bin/python benchmarks/pilot_backtest.py [STORE ...] [--cards DIR] [--json]
    .venv/bin/python benchmarks/pilot_backtest.py --synthetic work/synthetic_runs   # no store yet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FRACTIONS = (0.05, 0.1, 0.2, 0.3)
MODES = ("card", "pilot", "pilot+card")
RESOLVED = 10.0
"""D* is scored only on runs whose full-curve D* is within 10x their own last point."""
DEFAULT_STORES = ("work/demo/runs",)
REFERENCE = Path("docs/reference_runs")


def default_stores() -> list[Path]:
    out = {Path(p) for p in DEFAULT_STORES if Path(p).is_dir()}
    if REFERENCE.is_dir():  # every directory holding run directories is a store
        out |= {run.parent.parent for run in REFERENCE.glob("**/run.json")}
    return sorted(out)


def write_synthetic(root: Path, seed: int = 0) -> Path:
    """A run store of P2 curves with known truth (fitting.synthetic's parameters), engine-shaped."""
    from data.runs import RunStore
    from fitting.laws import P2
    from fitting.synthetic import TRUE_P2

    rng = np.random.default_rng(seed)
    store = RunStore(root)
    steps = [0, 1, 2, 4, 8, 16, 31, 62, 125, 250, 375, 500, 625, 750, 875, 1000]
    for n0 in (2e8, 1e9):
        for ratio in (0.25, 0.5):
            l0 = 1.7 + 400.0 / n0 ** 0.3
            run_id = f"syn_n{n0:.0e}_r{ratio:g}"
            store.write(run_id, {"status": "done", "meta": {"run_id": run_id, "family": "llama3", "method": "depth",
                                                            "params_before": n0, "ratio": ratio, "loss_before": l0,
                                                            "init": "pruned", "objective": "lm"}})
            tokens = np.array(steps, float) * 2e6
            law = P2.predict(TRUE_P2, params_before=n0, ratio=ratio, tokens=np.maximum(tokens, 1e6),
                             loss_before=l0)
            loss = law * np.exp(0.003 * rng.standard_normal(len(tokens)))
            store.append_curve(run_id, [{"step": s, "tokens": int(t), "eval_loss": float(y)}
                                        for s, t, y in zip(steps, tokens, loss)])
    return root


def runs_of(store: Path):
    """(run_id, meta, tokens, loss) of every pruned run with a step-0 row and >= 6 points."""
    from data.runs import load

    table = load(store)
    table = table[(table["init"].fillna("pruned") == "pruned") & (table["ratio"].fillna(0) > 0)]
    for run_id, g in table.groupby("run_id"):
        g = g.sort_values("tokens")
        tokens, loss = g["tokens"].to_numpy(float), g["eval_loss"].to_numpy(float)
        if len(tokens) < 6 or tokens[0] != 0 or not np.all(np.isfinite(loss)):
            continue
        yield run_id, g.iloc[0], tokens, loss


def card_for(meta, cards_dir: Path | None):
    from data.cli import BadInput
    from planner.cards import select_card

    try:
        return select_card("p2", str(meta["family"]), str(meta["method"]), float(meta["params_before"]),
                           cards_dir).card
    except BadInput:
        return None


def score_run(tokens, loss, meta, card, prior_card: bool = True) -> list[dict]:
    """One row per (mode, fraction) for one run."""
    from data.cli import BadInput
    from fitting.pilot import Pilot, fit_pilot
    from fitting.term import Criterion, Reference
    from planner.recommend import card_term

    crit, ref = Criterion("recover", 0.9), Reference(loss=float(loss[0]))
    l0, n0, ratio = float(meta["loss_before"]), float(meta["params_before"]), float(meta["ratio"])
    full = Pilot("full", tokens[1:], loss[1:], float(loss[0]), l0, n0, ratio)
    try:
        true_d = fit_pilot(full, loss_before=l0).tokens(crit, ref).value
    except BadInput:
        true_d = float("nan")
    final_tokens, true_final = float(tokens[-1]), float(loss[-1])
    if not true_d <= RESOLVED * final_tokens:  # the run cannot vouch for a D* far past its own end
        true_d = float("nan")
    out = []
    cterm = None if card is None else card_term(card, n0, ratio, l0)
    for frac in FRACTIONS:
        keep = (tokens > 0) & (tokens <= frac * final_tokens)
        for mode in MODES:
            row = {"mode": mode, "fraction": frac}
            try:
                if mode == "card":
                    if cterm is None:
                        raise BadInput("no card")
                    term = cterm
                else:
                    if keep.sum() < 3:
                        raise BadInput("fewer than 3 pilot points")
                    if mode == "pilot+card" and cterm is None:
                        raise BadInput("no card")
                    pilot = Pilot("pilot", tokens[keep], loss[keep], float(loss[0]), l0, n0, ratio)
                    betas = None if mode == "pilot" or cterm.samples is None else cterm.samples[:, 2]
                    term = fit_pilot(pilot, card_betas=betas, card_beta=None if mode == "pilot" else cterm.beta,
                                     loss_before=l0)
                final = term.loss(final_tokens)
                d = term.tokens(crit, ref)
            except BadInput as exc:
                out.append({**row, "skipped": str(exc)})
                continue
            true_dl = true_final - l0
            row.update(ape=abs((final.value - l0) - true_dl) / abs(true_dl) if true_dl else float("nan"),
                       cover=None if final.low is None else bool(final.low <= true_final <= final.high),
                       log_d=abs(np.log10(d.value / true_d)) if np.isfinite(true_d) else float("nan"),
                       cover_d=None if d.low is None or not np.isfinite(true_d) else bool(d.low <= true_d <= d.high))
            out.append(row)
    return out


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for mode in MODES:
        for frac in FRACTIONS:
            sel = [r for r in rows if r["mode"] == mode and r["fraction"] == frac]
            ok = [r for r in sel if "skipped" not in r]

            def mean(key):
                vals = [float(r[key]) for r in ok if r.get(key) is not None and np.isfinite(float(r[key]))]
                return float(np.mean(vals)) if vals else None

            def median(key):
                vals = [r[key] for r in ok if r.get(key) is not None and np.isfinite(r[key])]
                return float(np.median(vals)) if vals else None
            d_runs = sum(1 for r in ok if r.get("log_d") is not None and np.isfinite(r["log_d"]))
            table.append({"mode": mode, "fraction": frac, "runs": len(ok), "skipped": len(sel) - len(ok),
                          "dstar_runs": d_runs,
                          "mape_dl": mean("ape"), "coverage_loss": mean("cover"),
                          "median_abs_log10_dstar": median("log_d"), "coverage_dstar": mean("cover_d")})
    return table


def render(table: list[dict], stores: list[Path]) -> str:
    def f(x, pct=False):
        return "-" if x is None else (f"{100 * x:.0f}%" if pct else f"{x:.3g}")
    lines = [f"stores: {', '.join(str(s) for s in stores)}",
             "| planner | pilot | runs | skipped | MAPE of final L-L0 | final-loss coverage | D* runs | "
             "median abs log10 D* err | D* coverage |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['mode']} | {r['fraction']:.0%} | {r['runs']} | {r['skipped']} | {f(r['mape_dl'], True)} | "
                     f"{f(r['coverage_loss'], True)} | {r['dstar_runs']} | {f(r['median_abs_log10_dstar'])} | "
                     f"{f(r['coverage_dstar'], True)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="*", type=Path, help="run stores (default: the project's own, if present)")
    parser.add_argument("--cards", type=Path, help="cards directory (default: the bundled planner cards)")
    parser.add_argument("--synthetic", type=Path, metavar="DIR", help="write a synthetic P2 store there and use it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    stores = list(args.stores) or default_stores()
    if args.synthetic is not None:
        stores.append(write_synthetic(args.synthetic))
    for missing in [s for s in stores if not s.is_dir()]:
        print(f"skipping {missing}: not a directory", file=sys.stderr)
    stores = [s for s in stores if s.is_dir()]
    if not stores:
        print("no run store found (work/demo/runs, docs/reference_runs/*); pass STORE paths or --synthetic DIR",
              file=sys.stderr)
        return 2
    rows = []
    for store in stores:
        for run_id, meta, tokens, loss in runs_of(store):
            rows += [{**r, "store": str(store), "run_id": run_id}
                     for r in score_run(tokens, loss, meta, card_for(meta, args.cards))]
    tables = {str(s): summarise([r for r in rows if r["store"] == str(s)]) for s in stores}
    if len(stores) > 1:
        tables["all"] = summarise(rows)
    if args.json:
        json.dump({"stores": [str(s) for s in stores], "tables": tables, "rows": rows}, sys.stdout, indent=2,
                  default=str)
        print()
    else:
        print("\n\n".join(render(t, [Path(name)]) for name, t in tables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
