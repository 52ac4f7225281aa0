"""Backtest pilot-run calibration on real curves: does a pilot of the first x % predict the rest?

For every pruned run of every run store given (default: ``work/demo/runs`` and each store
under ``docs/reference_runs/`` that exists), and pilots made of the run's first 5, 10, 20 and
30 % of tokens, three planners predict the run's final eval loss and the D* found on the full
curve (the planner's default criterion, recover 0.9 of the recoverable gap measured from the
run's own loss right after pruning, fitted pilot-only on the whole curve):

- ``card``        the P2 card for the run's method alone (no pilot);
- ``pilot``       the pilot alone, L = L_inf + B / D^beta;
- ``pilot+card``  the pilot with the card's mixture prior on beta (``fitting.pilot``).

Reported per planner and pilot fraction: runs scored, MAPE of the final dL = L - L0, the share
of runs whose true final loss lies in the 95 % interval, the median |log10| error of D* and the
coverage of the D* interval (D* scored only where the full curve resolves it: its D* within 10x
the run's last point). Runs with fewer than 3 points after step 0 in a pilot are skipped
for that fraction (counted in ``skipped``). Cards: ``--cards DIR`` (default: the bundled ones).
NB: the bundled cards were fitted on the demo runs, so ``card`` rows on the demo store are
in-sample (optimistic); a store the card never saw is the honest test.

``--synthetic`` instead scores synthetic worlds at the user's scale, where the truth is known and
the card was never fitted: an 8B parent at ratio 0.5 whose curve is exactly
``L = a + k D^-beta`` (beta in 0.15-0.7, i.i.d. multiplicative noise 0.1-1 %), pilots run to
5/10/20/30 % of the true D*, each fitted pilot-only and with three card priors on beta:

- ``card@8B``        a bundled card (``--card``) at the query: 4.3 decades past its largest
                     parent (the realistic case; its beta is right only near 0.45);
- ``card in range``  the same card's betas as if the query were inside its range (full prior
                     weight: the hard case for a card whose beta is wrong);
- ``right card``     the same card's spread centred on the world's own beta, in range (a card
                     that is right: where the prior should narrow the answer).

Reported per (beta, noise, pilot) cell: coverage of the true D* (recover 0.9 from the pilot's
measured step-0 loss) and of the true loss at the planned budget by the 95 % intervals, and the
median ratio of each interval's width to pilot-only's on the same world (D*: in log tokens).
A world whose mode gives no interval counts as a miss.

    .venv/bin/python benchmarks/pilot_backtest.py [STORE ...] [--cards DIR] [--json]
    .venv/bin/python benchmarks/pilot_backtest.py --synthetic-store work/synthetic_runs  # a P2 store
    .venv/bin/python benchmarks/pilot_backtest.py --synthetic --worlds 200 --workers 1
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
    """(run_id, meta, tokens, loss) of every pruned run with a step-0 row and >= 6 points;
    points inside the run's learning-rate warm-up are dropped, as every pilot fit drops them
    (``fitting.table.fit_points``)."""
    from data.runs import load
    from fitting.table import fit_points

    table = load(store)
    table = table[(table["init"].fillna("pruned") == "pruned") & (table["ratio"].fillna(0) > 0)]
    for run_id, g in table.groupby("run_id"):
        g = g.sort_values("tokens")
        tokens, loss = g["tokens"].to_numpy(float), g["eval_loss"].to_numpy(float)
        if len(tokens) < 6 or tokens[0] != 0 or not np.all(np.isfinite(loss)):
            continue
        keep = fit_points(tokens, g["lr"].to_numpy(float) if "lr" in g else None)[0] | (tokens == 0)
        yield run_id, g.iloc[0], tokens[keep], loss[keep]


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
    from fitting.pilot import Pilot, card_prior, fit_pilot
    from fitting.criteria import Recover, Reference

    crit, ref = Recover(0.9), Reference(loss=float(loss[0]))
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
    cterm = None if card is None else card.token_term(n0, ratio, l0)
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
                    prior = None if mode == "pilot" else card_prior(card, params_before=n0, ratio=ratio)
                    term = fit_pilot(pilot, prior=prior, loss_before=l0)
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


# -- synthetic worlds at the user's scale ------------------------------------------------------

WORLD_BETAS = (0.15, 0.2, 0.3, 0.45, 0.6, 0.7)
WORLD_NOISES = (0.001, 0.003, 0.01)
WORLD_N0, WORLD_RATIO, WORLD_D_STAR, RECOVER = 8e9, 0.5, 300e9, 0.9
PRIORS = ("pilot", "card@8B", "card in range", "right card")
EVALS = np.concatenate([np.geomspace(1e-3, 0.05, 10, endpoint=False), np.linspace(0.05, 1.0, 20)])
"""Evaluation points as fractions of the pilot's length: log-spaced early, then every 5 %."""
DEFAULT_CARD = Path(__file__).resolve().parents[1] / "planner" / "cards" / "p2_llama3_depth.json"


def world(beta: float, noise: float, fraction: float, rng: np.random.Generator):
    """One world: a pilot to ``fraction`` of D* and the truth (D*, loss at the planned budget).

    The token term holds where the loss is below the measured step-0 loss (it diverges at
    D = 0), so earlier evaluations are left out of the pilot, as a real curve would show them.
    """
    from fitting.pilot import Pilot

    a, gap = rng.uniform(2.1, 2.5), rng.uniform(1.0, 2.5)
    k = (1 - RECOVER) * gap * WORLD_D_STAR ** beta
    start = (a + gap) * np.exp(noise * rng.standard_normal())
    tokens = fraction * WORLD_D_STAR * EVALS
    clean = a + k * tokens ** -beta
    keep = clean < a + gap
    loss = clean * np.exp(noise * rng.standard_normal(len(tokens)))
    true_d = (k / ((1 - RECOVER) * (start - a))) ** (1 / beta)
    pilot = Pilot("world", tokens[keep], loss[keep], float(start), None, WORLD_N0, WORLD_RATIO)
    return pilot, true_d, a + k * WORLD_D_STAR ** -beta


def world_priors(card_path: Path, beta: float) -> dict:
    """The three card priors of a world (see the module docstring)."""
    from fitting.card import load_card
    from fitting.pilot import CardPrior, card_prior

    at_query = card_prior(load_card(card_path), params_before=WORLD_N0, ratio=WORLD_RATIO)
    betas = at_query.betas
    return {"pilot": None, "card@8B": at_query, "card in range": CardPrior(betas, reach=0.0),
            "right card": CardPrior(betas - np.median(betas) + beta, reach=0.0)}


def score_cell(cell: tuple) -> list[dict]:
    """Every world of one (beta, noise, fraction) cell: one row per world and prior."""
    from data.cli import BadInput
    from fitting.pilot import fit_pilot
    from fitting.criteria import Recover, Reference

    beta, noise, fraction, worlds, seed, card_path = cell
    rng = np.random.default_rng([seed, int(beta * 1000), int(noise * 1e5), int(fraction * 100)])
    priors, crit, rows = world_priors(card_path, beta), Recover(RECOVER), []
    for i in range(worlds):
        pilot, true_d, true_loss = world(beta, noise, fraction, rng)
        for mode, prior in priors.items():
            row = {"beta": beta, "noise": noise, "fraction": fraction, "world": i, "mode": mode,
                   "points": len(pilot.tokens), "cover_d": False, "cover_loss": False,
                   "width_d": None, "width_loss": None, "card_weight": None}
            try:
                term = fit_pilot(pilot, prior=prior, seed=i)
                d = term.tokens(crit, Reference(loss=pilot.loss_start))
                final = term.loss(WORLD_D_STAR)
            except BadInput as exc:
                rows.append({**row, "skipped": str(exc)})
                continue
            if d.low is not None:
                row.update(cover_d=bool(d.low <= true_d <= d.high), width_d=float(np.log(d.high / d.low)))
            if final.low is not None:
                row.update(cover_loss=bool(final.low <= true_loss <= final.high),
                           width_loss=float(final.high - final.low))
            rows.append({**row, "card_weight": term.card_weight})
    return rows


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 %)."""
    if n == 0:
        return float("nan"), float("nan")
    p, z2 = hits / n, z * z
    mid, half = (p + z2 / (2 * n)) / (1 + z2 / n), z / (1 + z2 / n) * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return mid - half, mid + half


def summarise_worlds(rows: list[dict]) -> list[dict]:
    """One record per cell: coverage per prior, and median width ratios against pilot-only."""
    cells = sorted({(r["beta"], r["noise"], r["fraction"]) for r in rows})
    by_key = {(r["beta"], r["noise"], r["fraction"], r["world"], r["mode"]): r for r in rows}
    out = []
    for beta, noise, fraction in cells:
        worlds = sorted({r["world"] for r in rows if (r["beta"], r["noise"], r["fraction"]) == (beta, noise, fraction)})
        rec = {"beta": beta, "noise": noise, "fraction": fraction, "worlds": len(worlds),
               "points": float(np.median([by_key[beta, noise, fraction, w, "pilot"]["points"] for w in worlds]))}
        for mode in PRIORS:
            sel = [by_key[beta, noise, fraction, w, mode] for w in worlds]
            for key in ("cover_d", "cover_loss"):
                rec[f"{key}/{mode}"] = sum(bool(r[key]) for r in sel)
            weights = [r["card_weight"] for r in sel if r["card_weight"] is not None]
            rec[f"card_weight/{mode}"] = float(np.median(weights)) if weights else None
            for key in ("width_d", "width_loss"):
                ratios = [by_key[beta, noise, fraction, w, mode][key] / by_key[beta, noise, fraction, w, "pilot"][key]
                          for w in worlds if by_key[beta, noise, fraction, w, mode][key] is not None
                          and by_key[beta, noise, fraction, w, "pilot"][key]]
                rec[f"{key}/{mode}"] = float(np.median(ratios)) if ratios else None
        out.append(rec)
    return out


def render_worlds(cells: list[dict]) -> str:
    """The per-cell table, then the goals: worst cell per prior and its shortfall against pilot."""
    n = cells[0]["worlds"] if cells else 0
    pct = lambda hits: f"{100 * hits / n:.0f}"  # noqa: E731
    short = {"pilot": "P", "card@8B": "C8", "card in range": "Cr", "right card": "R"}
    head = " / ".join(short[m] for m in PRIORS)
    lines = [f"{n} worlds per cell; priors P = pilot-only, C8 = bundled card at 8B, Cr = the same card in range, "
             "R = a right card in range; width = median ratio to pilot-only's interval on the same world",
             f"| beta | noise | pilot | points | D* coverage % ({head}) | final-loss coverage % ({head}) | "
             "D* width (C8 / Cr / R) | loss width (C8 / Cr / R) | card weight (C8 / Cr / R) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ratio(c, key):
        return " / ".join("-" if c[f"{key}/{m}"] is None else f"{c[f'{key}/{m}']:.2f}" for m in PRIORS[1:])
    for c in cells:
        lines.append(f"| {c['beta']:g} | {c['noise']:.1%} | {c['fraction']:.0%} | {c['points']:.0f} | "
                     f"{' / '.join(pct(c[f'cover_d/{m}']) for m in PRIORS)} | "
                     f"{' / '.join(pct(c[f'cover_loss/{m}']) for m in PRIORS)} | {ratio(c, 'width_d')} | "
                     f"{ratio(c, 'width_loss')} | {ratio(c, 'card_weight')} |")
    lines += ["", "| prior | quantity | worst cell | coverage (Wilson 95 %) | cells < 90 % | "
              "cells > 5 points below pilot-only | median width ratio |", "|---|---|---|---|---|---|---|"]
    for mode in PRIORS:
        for key, name in (("cover_d", "D*"), ("cover_loss", "final loss")):
            worst = min(cells, key=lambda c: c[f"{key}/{mode}"])
            lo, hi = wilson(worst[f"{key}/{mode}"], n)
            below = sum(c[f"{key}/{mode}"] < 0.9 * n for c in cells)
            behind = sum(c[f"{key}/{mode}"] < c[f"{key}/pilot"] - 0.05 * n for c in cells)
            widths = [c[f"width_{key[6:]}/{mode}"] for c in cells if c[f"width_{key[6:]}/{mode}"] is not None]
            lines.append(f"| {mode} | {name} | beta {worst['beta']:g}, noise {worst['noise']:.1%}, pilot "
                         f"{worst['fraction']:.0%} | {pct(worst[f'{key}/{mode}'])}% [{100 * lo:.0f}, {100 * hi:.0f}] | "
                         f"{below}/{len(cells)} | {behind}/{len(cells)} | "
                         f"{np.median(widths) if mode != 'pilot' else 1.0:.2f} |")
    return "\n".join(lines)


def run_worlds(worlds: int, workers: int, seed: int, card: Path) -> list[dict]:
    cells = [(b, s, f, worlds, seed, card) for b in WORLD_BETAS for s in WORLD_NOISES for f in FRACTIONS]
    if workers <= 1:
        return [r for cell in cells for r in score_cell(cell)]
    from multiprocessing import Pool

    with Pool(workers) as pool:
        return [r for rows in pool.map(score_cell, cells) for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="*", type=Path, help="run stores (default: the project's own, if present)")
    parser.add_argument("--cards", type=Path, help="cards directory (default: the bundled planner cards)")
    parser.add_argument("--synthetic-store", type=Path, metavar="DIR",
                        help="write a synthetic P2 store there and use it")
    parser.add_argument("--synthetic", action="store_true", help="score synthetic 8B worlds instead of stores")
    parser.add_argument("--worlds", type=int, default=200, help="worlds per cell with --synthetic (default 200)")
    parser.add_argument("--card", type=Path, default=DEFAULT_CARD, help="the card prior of --synthetic")
    parser.add_argument("--workers", type=int, default=1, help="processes for --synthetic (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.synthetic:
        cells = summarise_worlds(run_worlds(args.worlds, args.workers, args.seed, args.card))
        print(json.dumps(cells, indent=2) if args.json else render_worlds(cells))
        return 0
    stores = list(args.stores) or default_stores()
    if args.synthetic_store is not None:
        stores.append(write_synthetic(args.synthetic_store))
    for missing in [s for s in stores if not s.is_dir()]:
        print(f"skipping {missing}: not a directory", file=sys.stderr)
    stores = [s for s in stores if s.is_dir()]
    if not stores:
        print("no run store found (work/demo/runs, docs/reference_runs/*); pass STORE paths, --synthetic-store DIR "
              "or --synthetic", file=sys.stderr)
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
