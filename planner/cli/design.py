"""``planner design``: the cheapest grid of runs that makes D* at one query credible.

--json schema: ``{"command": "design", "verdict", "query", "prior", "d_star", "chosen",
"naive", "front", "naive_front", "checks", "grid"}``; each design is ``{runs: [{parent,
hf_id, ratio_target, ratio, tokens, gpu_hours}], gpu_hours, interval_factor, interval}``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from data.cli import BadInput
from data.units import format_count
from planner.cli.common import new_parser, print_json
from planner.design.candidates import EVAL_POINTS, MAX_TOKEN_EXTRAPOLATION
from planner.design.optimal import Z
from data.compute import DEFAULT_GPU, DEFAULT_MFU, get_gpu
from planner.query import METHODS, parse_method, parse_parent, parse_positive, parse_ratio

if TYPE_CHECKING:  # pragma: no cover
    from planner.design import DesignPlan
    from planner.design.optimal import Design

EPILOG = """\
The design minimises the predicted 95% interval of log D* (the slope criterion) at the query per
GPU-hour, by the delta method at a prior, over grids of the family's real parents x ratios x one
budget; then checks it by refitting simulated worlds with the product's own fitter.

examples:
  planner design --params 8B --ratio 0.5 --method depth --family llama3 --budget-gpu-hours 100 --out grid.yaml
  planner design --params qwen2.5-7b --ratio 0.35 --method width --target-precision 0.2
  planner design --params 8B --ratio 0.5 --runs runs/design-llama3 --target-precision 0.1
"""


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser("planner design", "Design the cheapest grid that pins down D* at one query.", EPILOG)
    parser.add_argument("--params", required=True, metavar="SIZE|MODEL", help="the parent to answer for (8B, llama-3.1-8b)")
    parser.add_argument("--ratio", required=True, help="pruning ratio of the query, in (0, 1)")
    parser.add_argument("--method", help=f"pruning method (default depth); one of {', '.join(METHODS)}")
    parser.add_argument("--family", help="llama3 or qwen2.5 (families with >= 3 real sizes); default llama3")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--budget-gpu-hours", metavar="H", help="spend at most H GPU-hours (the most precise design)")
    how.add_argument("--target-precision", metavar="P",
                     help="the cheapest design whose 95%% interval of D* is within x(1+P) (default 0.25)")
    parser.add_argument("--gpu", default=DEFAULT_GPU, help=f"accelerator of the cost model (default {DEFAULT_GPU})")
    parser.add_argument("--mfu", default=str(DEFAULT_MFU), help=f"model FLOPs utilisation (default {DEFAULT_MFU})")
    parser.add_argument("--slope", default="1e-3", help="D* criterion: nats gained per extra 1e9 tokens (default 1e-3)")
    parser.add_argument("--prior", metavar="CARD.json", help="a P2 card of the family as the prior "
                        "(default: the family's bundled card if it describes these sizes, else a stated weak prior)")
    parser.add_argument("--runs", metavar="STORE", help="runs already done: fit them, use the fit as the prior, "
                        "propose the next batch (or stop when already precise)")
    parser.add_argument("--simulations", default="64", help="simulated worlds per design in the check (default 64; 0: skip)")
    parser.add_argument("--workers", default="2", help="processes for the simulations (default 2)")
    parser.add_argument("--out", metavar="GRID.yaml", help="write the chosen grid for 'engine grid plan|launch'")
    parser.add_argument("--shards", default="shards/pretrain", help="the grid's token shards directory")
    parser.add_argument("--models-dir", default="",
                        help="parents from this folder (<dir>/<model name>) instead of their hub ids")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")
    return parser


def _count(text: str, flag: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < low:
        raise BadInput(f"bad {flag} {text!r}: expected an integer >= {low}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    from planner.design import DesignQuery, check, plan, resolve_prior, runs_prior
    from planner.design.grid import write_grid

    args = build_parser().parse_args(argv)
    query = DesignQuery(
        parse_parent(args.params, args.family), parse_method(args.method), parse_ratio(args.ratio),
        get_gpu(args.gpu), parse_positive(args.mfu, "--mfu", "0.4"), parse_positive(args.slope, "--slope", "1e-3"),
        None if args.budget_gpu_hours is None else parse_positive(args.budget_gpu_hours, "--budget-gpu-hours", "100"),
        None if args.target_precision is None else parse_positive(args.target_precision, "--target-precision", "0.25"))
    if query.mfu > 1:
        raise BadInput(f"bad --mfu {args.mfu!r}: must be in (0, 1], e.g. 0.4")
    worlds, workers = _count(args.simulations, "--simulations", 0), _count(args.workers, "--workers", 1)
    if args.out is not None:
        from data.cli import check_output_file

        check_output_file(args.out, force=args.force)
    if args.runs is not None and args.prior is not None:
        raise BadInput("give --runs or --prior, not both: the runs' own fit is the prior in sequential mode")
    if args.runs is not None and not os.path.exists(args.runs):
        raise BadInput(f"--runs {args.runs!r} does not exist; expected a run-store directory (or a .csv/.parquet table)")
    existing = None
    if args.runs is not None:
        prior, existing = runs_prior(args.runs, query)
    else:
        prior = resolve_prior(query, args.prior)
    result = plan(query, prior, existing)
    if worlds and not result.done:
        result = check(result, worlds, workers=workers)
    written = None
    if args.out is not None and not result.done:
        written = str(write_grid(result, args.out, args.shards, args.models_dir, args.force))
    if args.json:
        print_json(to_dict(result, written))
    else:
        print(render(result, written))
    return 0


# -- rendering ---------------------------------------------------------------------------


def verdict(r: DesignPlan) -> str:
    q, d = r.query, r.chosen
    gpu = q.gpu.name.upper()
    if r.done:
        f = math.exp(Z * r.existing_sd)
        return (f"verdict: already as precise as asked: the runs done pin D* within x{f:.3g} (95%, asked "
                f"x{1 + (q.target or 0.25):g}); stop")
    lo, hi = r.interval("chosen")
    nlo, nhi = r.interval("naive")
    gain = math.log(r.factor("naive")) / math.log(r.factor("chosen"))
    head = "run" if r.reached else "no design reaches the target precision; the most precise is"
    return (f"verdict: {head} {len(d.runs)} jobs ({len(d.parents)} parents x {len(d.ratios)} ratios x "
            f"{format_count(d.tokens)} tokens), {d.gpu_hours:.3g} {gpu} GPU-hours: D* = {format_count(r.d_star)} "
            f"[{format_count(lo)}, {format_count(hi)}] (95%); the naive grid at the same GPU-hours: "
            f"[{format_count(nlo)}, {format_count(nhi)}], " + (f"{gain:.2f}x wider" if gain >= 1 else
            f"{1 / gain:.2f}x narrower" + (" (on a budget below the token floor: see its note)"
                                            if r.naive.tokens < r.token_floor else "")))


def _runs_table(design: Design) -> list[str]:
    rows = [f"  {'parent':<14} {'hub id':<24} {'ratio':>6} {'achieved':>8} {'tokens':>8} {'GPU-h':>8}"]
    for run in design.runs:
        rows.append(f"  {run.spec.name:<14} {run.spec.hf_id:<24} {run.ratio_target:>6g} {run.ratio:>8.3f} "
                    f"{format_count(run.tokens):>8} {run.gpu_hours:>8.3g}")
    return rows


def _front(r: DesignPlan) -> list[str]:
    rows = [f"  {'GPU-h':>8} {'design':<34} {'95% factor':>10}   {'naive at same GPU-h':>19}"]
    for d, n in zip(r.front, r.naive_front):
        shape = f"{len(d.parents)}x{len(d.ratios)} ({', '.join(f'{x:g}' for x in d.ratios)}) x {format_count(d.tokens)}"
        rows.append(f"  {d.gpu_hours:>8.3g} {shape:<34} {'x%.3f' % d.factor:>10}   {'x%.3f' % n.factor:>19}")
    return rows


def render(r: DesignPlan, written: str | None) -> str:
    q = r.query
    out = [verdict(r)]
    out.append(f"query     {q.parent.describe()}, {q.method} at ratio {q.ratio:g}; D* by slope {q.slope:g} "
               f"nats per 1e9 tokens; cost 6 N D on {q.gpu.name.upper()} at MFU {q.mfu:g}")
    out.append(f"prior     {r.prior.source}")
    out += [f"          {n}" for n in r.prior.notes]
    if r.existing_sd is not None:
        out.append(f"runs done pin D* within x{math.exp(Z * r.existing_sd):.3g} (95%, delta method)")
    if r.done:
        return "\n".join(out)
    out += ["", f"chosen runs ({r.chosen.gpu_hours:.3g} GPU-hours, eval at {EVAL_POINTS} checkpoints each):"]
    out += _runs_table(r.chosen)
    out += ["", f"naive runs (every parent x the paper's ratios x equal tokens, {r.naive.gpu_hours:.3g} GPU-hours):"]
    out += _runs_table(r.naive)
    if r.naive.tokens < r.token_floor:
        out.append(f"  note: the naive budget {format_count(r.naive.tokens)} is below the designs' floor "
                   f"{format_count(r.token_floor)} (D*/{MAX_TOKEN_EXTRAPOLATION:g}): its interval takes P2 on trust over "
                   f"{math.log10(r.d_star / r.naive.tokens):.1f} decades of unseen tokens")
    out += ["", "precision (95% interval of D* as a factor either side):"]
    for name, design in (("chosen", r.chosen), ("naive", r.naive)):
        c = r.checks.get(name)
        sim = "not simulated" if c is None else (
            f"simulated {c.worlds} worlds: 95% of errors within x{math.exp(c.half_width):.3f}, median error "
            f"x{math.exp(c.bias):.3f}, {c.coverage:.0%} inside the delta interval, {c.failed} failed fits")
        out.append(f"  {name:<7} delta method x{design.factor:.3f}; {sim}; promised x{r.factor(name):.3f}")
    out += ["", "Pareto front, cost vs precision (delta method; the naive grid at the same GPU-hours beside):"]
    out += _front(r)
    if written:
        out += ["", f"grid written to {written} (check it with: engine grid plan {written})"]
    return "\n".join(out)


def _design_dict(r: DesignPlan, name: str) -> dict:
    d = r.chosen if name == "chosen" else r.naive
    lo, hi = r.interval(name)
    return {"runs": [{"parent": x.spec.name, "hf_id": x.spec.hf_id, "ratio_target": x.ratio_target, "ratio": x.ratio,
                      "tokens": x.tokens, "gpu_hours": x.gpu_hours} for x in d.runs],
            "gpu_hours": d.gpu_hours, "delta_factor": d.factor, "interval_factor": r.factor(name),
            "interval": [lo, hi]}


def to_dict(r: DesignPlan, written: str | None) -> dict:
    q = r.query
    front = [{"gpu_hours": d.gpu_hours, "factor": d.factor, "parents": [s.name for s in d.parents],
              "ratios": d.ratios, "tokens": d.tokens, "naive_factor": n.factor}
             for d, n in zip(r.front, r.naive_front)]
    return {"command": "design", "verdict": verdict(r), "done": r.done,
            "query": {"params_before": q.parent.params_before, "family": q.parent.family, "method": q.method,
                      "ratio": q.ratio, "slope": q.slope, "gpu": q.gpu.name, "mfu": q.mfu,
                      "budget_gpu_hours": q.budget, "target_precision": q.target},
            "prior": r.prior.to_dict(), "d_star": r.d_star,
            "existing_factor": None if r.existing_sd is None else math.exp(Z * r.existing_sd),
            "chosen": None if r.done else _design_dict(r, "chosen"),
            "naive": None if r.done else _design_dict(r, "naive"),
            "front": front, "checks": {k: c.to_dict() for k, c in r.checks.items()}, "grid": written}
