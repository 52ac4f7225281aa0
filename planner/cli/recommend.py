"""``planner recommend``: how many post-training tokens a pruned model needs, and what it costs.

--json schema (one document on stdout; ``schema_version`` 1). Numbers are floats in SI units
(tokens, FLOPs, USD); an Estimate is ``{"value": x, "low": lo|null, "high": hi|null}`` with
the card's bootstrap percentile interval (null without bootstrap samples)::

    command        "recommend"
    schema_version 1
    query          {params_before, model (name or null), family, method, ratio, params_after}
    card           {path, law, version, family, method, source, content_hash, created, n_runs,
                    n_points, n_bootstrap, not_identified: [names], selected_because}
    assumptions    {loss_before, loss_before_source, parent}
    criterion      {kind: slope|target_loss|recover, value, description}
    tokens         Estimate    the recommended budget D*
    loss           Estimate    predicted eval loss at D*
    asymptote      Estimate    predicted loss as D -> infinity (no budget beats it)
    budgets        [{multiple: 0.1|0.3|1|3, tokens, loss: Estimate, gpu_hours, cost_usd}]
    compute        {flops, flops_formula, gpu, peak_flops, mfu, gpu_hours,
                    price_per_gpu_hour, cost_usd}     at D*
    warnings       [str]   extrapolation outside the card's fitted range (and how far), etc.
    notes          [str]   caveats that always hold for this query
"""

from __future__ import annotations

from collections.abc import Sequence

from data.units import format_count
from planner.cli.common import (add_cost_options, add_parent_options, check_loss_before, new_parser,
                                p2_card, print_json)
from planner.hardware import get_gpu
from planner.query import METHODS, parse_method, parse_parent, parse_ratio
from planner.recommend import DEFAULT_SLOPE, Criterion, Estimate, Recommendation, recommend

EPILOG = f"""\
criteria (one of; default --slope {DEFAULT_SLOPE:g}):
  --slope S        D* where one more billion tokens improves the predicted loss by < S nats.
                   The default {DEFAULT_SLOPE:g}: past D*, 10B more tokens buy < 0.01 nats, about the
                   seed-to-seed spread of a held-out eval loss, i.e. no longer measurable.
  --target-loss L  the smallest budget whose predicted loss is <= L (refused below the asymptote)
  --recover F      close a fraction F of the gap between the loss right after pruning (predicted
                   at the card's smallest fitted budget; P2 diverges at D=0) and the parent's L0

examples:
  planner recommend --params llama-3.1-8b --ratio 0.5 --method depth
  planner recommend --params 1.5B --family qwen2.5 --ratio 0.3 --method width --target-loss 2.6 --loss-before 2.4
  planner recommend --params 8B --ratio 0.5 --law card.json --recover 0.9 --gpu a100 --price 1.2 --json
"""


def build_parser():
    parser = new_parser("planner recommend", "Post-training token budget, predicted loss and cost "
                        "for one pruned model, from a P2 law card.", EPILOG)
    add_parent_options(parser)
    parser.add_argument("--ratio", required=True, help="fraction of parameters removed, in (0, 1)")
    crit = parser.add_mutually_exclusive_group()
    crit.add_argument("--slope", type=float, metavar="S", help="nats per 1B tokens (see below)")
    crit.add_argument("--target-loss", type=float, metavar="L", help="target eval loss in nats")
    crit.add_argument("--recover", type=float, metavar="F", help="fraction of the pruning gap, in (0, 1)")
    add_cost_options(parser)
    return parser


def _criterion(args) -> Criterion:
    if args.target_loss is not None:
        return Criterion("target_loss", args.target_loss)
    if args.recover is not None:
        return Criterion("recover", args.recover)
    return Criterion("slope", DEFAULT_SLOPE if args.slope is None else args.slope)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parent = parse_parent(args.params, args.family)
    method, ratio = parse_method(args.method), parse_ratio(args.ratio)
    criterion, gpu = _criterion(args), get_gpu(args.gpu)
    loss_before = check_loss_before(args.loss_before)
    selection = p2_card(args.law, parent.family, method, parent.params_before)
    if args.method is None and args.law and selection.card.method in METHODS:
        method = selection.card.method  # a card given with --law answers for its own method
    result = recommend(parent, method, ratio, selection.card, selection.reason, criterion=criterion,
                       gpu=gpu, mfu=args.mfu, price=args.price, loss_before=loss_before)
    if args.json:
        print_json(result.to_dict())
    else:
        print(render(result))
    return 0


def _est(e: Estimate, fmt) -> str:
    if e.low is None or e.high is None:
        return fmt(e.value)
    return f"{fmt(e.value)} [{fmt(e.low)}, {fmt(e.high)}]"


def _loss(x: float) -> str:
    return f"{x:.4f}"


def _amount(x: float) -> str:
    """Readable at every scale: 12,345 / 12.3 / 0.012."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2g}"


def render(r: Recommendation) -> str:
    """The human-readable answer."""
    c, card = r.compute, r.card.provenance()
    ci = r.card.card.ci if isinstance(r.card.card.ci, dict) else {}
    level = (f"{ci.get('level', 0.95):.0%} bootstrap interval" if card["n_bootstrap"]
             else "no bootstrap samples in the card: no intervals")
    lines = [
        f"parent     {r.parent.describe()}, family {r.parent.family}",
        f"pruning    {r.method} at ratio {r.ratio:g} -> N = {format_count(r.params_after)} params",
        f"card       {card['path']} ({card['law']}, {card['family'] or 'any family'}/{card['method'] or 'any method'}, "
        f"{card['n_runs']} runs, {card['n_bootstrap']} bootstrap samples; created {card['created']})",
        f"           chosen: {r.card_reason}; data: {card['source']} [{card['content_hash']}]",
        f"L0         {r.loss_before:.4f} nats ({r.loss_before_source})",
        f"criterion  {r.criterion.describe()}",
        "",
        f"tokens D*  {_est(r.tokens, format_count)}   ({level})",
        f"loss @ D*  {_est(r.loss, _loss)}   (asymptote {_est(r.asymptote, _loss)})",
        f"compute    {c.flops:.3g} FLOPs (6 N D) = {_amount(c.gpu_hours)} {c.gpu.upper()} GPU-hours at MFU "
        f"{c.mfu:g} = ${_amount(c.cost_usd)} at ${c.price_per_gpu_hour:.2f}/GPU-h",
        "",
        f"  {'budget':>8}  {'tokens':>8}  {'predicted loss':<28}  {'GPU-hours':>10}  {'cost':>10}",
    ]
    for b in r.budgets:
        lines.append(f"  {b.multiple:>7g}x  {format_count(b.tokens):>8}  {_est(b.loss, _loss):<28}  "
                     f"{_amount(b.compute.gpu_hours):>10}  {'$' + _amount(b.compute.cost_usd):>10}")
    lines += [f"warning: {w}" for w in r.warnings]
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)
