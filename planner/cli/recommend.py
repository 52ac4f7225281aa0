"""``planner recommend``: how many post-training tokens a pruned model needs, and what it costs.

The first line of the text answer is the verdict (in range / extrapolating Nx beyond the card
/ not credible at this scale / pilot-calibrated). Not credible (the card's formula predicts a
loss above a uniform guess for this N0): the verdict and why, the nearest published recipes,
the pilot to run (job file, commands, cost) and the ``planner design`` command; the card's
numbers only with --show-extrapolation. --json schema (one document on stdout;
``schema_version`` 3). Numbers are floats in SI units (tokens, FLOPs, USD); an Estimate is
``{"value": x, "low": lo|null, "high": hi|null}`` with a percentile interval (card: bootstrap
samples; pilot: posterior samples)::

    command        "recommend"
    schema_version 3
    verdict        str     the first line of the text answer
    credible       bool    false: no budget is recommended (tokens, loss, asymptote, compute null,
                           budgets []): the card's numbers are under ``extrapolation``
    why_not_credible  str or null
    mode           "card" | "pilot" | "pilot+card"
    query          {params_before, model (name or null), family, method, ratio, params_after}
    card           {path, law, version, family, method, source, content_hash, created, n_runs,
                    n_points, n_bootstrap, not_identified: [names], identifiability: [str]
                    (the card's notes, as the text prints them: the collapsed law, parameters
                    at a bound, weak ones, sloppy directions), outlier_runs: [run ids],
                    selected_because} or null
    pilot          {path, points, warmup_left_out, max_tokens, loss_start, last_loss,
                    fit: {a, k, beta, samples}} or null
    assumptions    {loss_before (null: unknown), loss_before_source, loss_scale, parent,
                    recover_reference}
    criterion      {kind: recover|slope|target_loss, value, description}
    tokens         Estimate    the recommended budget D*
    loss           Estimate    predicted eval loss at D* (dL above L0 when loss_before is null)
    asymptote      Estimate    predicted loss as D -> infinity (no budget beats it)
    card_only      {tokens: Estimate|null, loss_at_pilot_dstar, extrapolation_factor,
                    tokens_ratio, moved: str} or null   (pilot+card: what the card alone says)
    budgets        [{multiple: 0.1|0.3|1|3, tokens, loss: Estimate, gpu_hours, cost_usd}]
    compute        {flops, flops_formula, gpu, peak_flops, mfu, gpu_hours,
                    price_per_gpu_hour, cost_usd}     at D*
    extrapolation  null, or (not credible) {label, why, reach (str|null: why the formula gives no
                    usable budget either), tokens, loss, asymptote, card_only, budgets, compute}
    next_steps     null, or (card-only answers outside the card's range) {pilot: {tokens, basis,
                    eval_points, schedule, job (the engine train YAML keys), commands: [str],
                    gpu_hours, cost_usd, design}, design: str (the planner design command)}
    practice       [{parent, params, target, ratio, method, tokens, tokens_low, tokens_high,
                     source, citation, law_over_practice}]   nearest published recipes
    warnings       [str]   extrapolation outside the card's fitted range (and how far), etc.
    notes          [str]   caveats that always hold for this query
"""

from __future__ import annotations

from collections.abc import Sequence

from data.cli import BadInput
from data.units import format_amount, format_count
from planner.grounding import render_recipe
from planner.cli.common import (add_cost_options, add_parent_options, check_loss_before, new_parser,
                                law_card, print_json)
from data.compute import check_mfu, check_price, get_gpu
from planner.query import METHODS, parse_method, parse_parent, parse_ratio
from fitting.criteria import CRITERIA, DEFAULT_CRITERION, Criterion
from fitting.term import Estimate
from planner.recommend import Recommendation, recommend

EPILOG = """\
criteria (one of; default {default}):
{criteria}

pilot (--pilot PATH): an engine run directory, a run store holding one matching run, or a
CSV/parquet curve with columns tokens, loss [, loss_before, params_before, ratio]; the first
5-30 % of the planned run, same learning-rate schedule. With a card its beta is the prior
(pilot+card); with --no-card or no card, a pilot-only power law.

examples:
  planner recommend --params llama-3.1-8b --ratio 0.5 --method depth
  planner recommend --params 1.5B --family qwen2.5 --ratio 0.3 --method width --target-loss 2.6 --loss-before 2.4
  planner recommend --params 8B --ratio 0.5 --law card.json --recover 0.8 --gpu a100 --price 1.2 --json
  planner recommend --params 8B --ratio 0.5 --pilot pilot.csv
  planner recommend --params 8B --ratio 0.5 --show-extrapolation
"""


def epilog() -> str:
    """The --help epilog, with every registered criterion (``fitting.criteria.CRITERIA``)."""
    return EPILOG.format(default=f"{DEFAULT_CRITERION.flag} {DEFAULT_CRITERION.value:g}",
                         criteria="\n".join(kind.explain for kind in CRITERIA.values()))


def build_parser():
    parser = new_parser("planner recommend", "Post-training token budget, predicted loss and cost "
                        "for one pruned model, from a P2 law card and/or a pilot run.", epilog())
    add_parent_options(parser)
    parser.add_argument("--ratio", required=True, help="fraction of parameters removed, in (0, 1)")
    crit = parser.add_mutually_exclusive_group()
    for kind in CRITERIA.values():
        crit.add_argument(kind.flag, dest=kind.kind, type=float, metavar=kind.metavar, help=kind.help)
    parser.add_argument("--pilot", metavar="RUN|STORE|CURVE", help="calibrate on a pilot curve (see below)")
    parser.add_argument("--no-card", action="store_true", help="with --pilot: ignore every card (pilot-only)")
    parser.add_argument("--show-extrapolation", action="store_true",
                        help="when the verdict is 'not credible': print the card's D*, loss and cost table "
                             "anyway, labelled as what they are (the formula outside where it describes models)")
    parser.add_argument("--sparse-kernel", action="store_true",
                        help="training runs sparse kernels: count 6 * N * D for 2:4/unstructured, not 6 * N0 * D")
    add_cost_options(parser)
    return parser


def _criterion(args) -> Criterion:
    """The criterion whose flag was given (they exclude each other), else the default."""
    given = [kind for kind in CRITERIA.values() if getattr(args, kind.kind) is not None]
    return given[0](getattr(args, given[0].kind)) if given else DEFAULT_CRITERION


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parent = parse_parent(args.params, args.family)
    method, ratio = parse_method(args.method), parse_ratio(args.ratio)
    criterion, gpu = _criterion(args), get_gpu(args.gpu)
    check_mfu(args.mfu)
    if args.price is not None:
        check_price(args.price)
    loss_before = check_loss_before(args.loss_before)
    if args.no_card and args.pilot is None:
        raise BadInput("--no-card needs --pilot (without both there is nothing to fit)")
    pilot = None
    if args.pilot is not None:
        from fitting.pilot import check_consistent, read_pilot

        pilot = read_pilot(args.pilot, ratio=ratio, method=method)
        check_consistent(pilot, float(parent.params_before), ratio)
    card, reason = _card(args, parent, method, pilot)
    if args.method is None and args.law and card is not None and card.method in METHODS:
        method = card.method  # a card given with --law answers for its own method
    result = recommend(parent, method, ratio, card, reason, criterion=criterion, gpu=gpu, mfu=args.mfu,
                       price=args.price, loss_before=loss_before, pilot=pilot, sparse_kernel=args.sparse_kernel)
    if args.json:
        print_json(result.to_dict())
    else:
        print(render(result, show_extrapolation=args.show_extrapolation))
    return 0


def _card(args, parent, method, pilot):
    """The card (or None for pilot-only) and why; a pilot without a bundled card runs alone."""
    if args.no_card:
        return None, "--no-card"
    try:
        selection = law_card(args.law, parent.family, method, parent.params_before)
    except BadInput:
        if pilot is None or args.law is not None:
            raise
        return None, "no card found: pilot-only"
    return selection.card, selection.reason


def _est(e: Estimate, fmt) -> str:
    if e.low is None or e.high is None:
        return fmt(e.value)
    return f"{fmt(e.value)} [{fmt(e.low)}, {fmt(e.high)}]"


def _header(r: Recommendation) -> list[str]:
    lines = [r.verdict,
             f"parent     {r.parent.describe()}, family {r.parent.family}",
             f"pruning    {r.method} at ratio {r.ratio:g} -> N = {format_count(r.params_after)} params"]
    if r.card is not None:
        card = r.card.provenance()
        lines += [f"card       {card['path']} ({card['law']}, {card['family'] or 'any family'}/"
                  f"{card['method'] or 'any method'}, {card['n_runs']} runs, {card['n_bootstrap']} bootstrap "
                  f"samples; created {card['created']})",
                  f"           chosen: {r.card_reason}; data: {card['source']} [{card['content_hash']}]"]
    else:
        lines.append(f"card       none ({r.card_reason})")
    if r.pilot is not None:
        p = r.pilot
        warm = f" (+{p['warmup_left_out']} inside the LR warm-up, left out)" if p["warmup_left_out"] else ""
        lines.append(f"pilot      {p['path']}: {p['points']} points{warm} up to {format_count(p['max_tokens'])} tokens, "
                     f"fitted beta {p['fit']['beta']:.3g} (mode {r.mode})")
    l0 = "unknown" if r.loss_before is None else f"{r.loss_before:.4f} nats"
    lines += [f"L0         {l0} ({r.loss_before_source})", f"criterion  {r.criterion.describe()}"]
    if r.reference:
        lines.append(f"           gap starts at {r.reference}")
    return lines


def _design_line(r: Recommendation) -> list[str]:
    """What ``planner design`` would cost for this query (the delta method at its prior, no
    simulation). Imported here, on the text screen of a not-credible answer only: the design
    package is the heaviest import of the planner, and --json and credible answers stay fast."""
    from data.compute import get_gpu
    from planner.design import DesignQuery, design_summary

    compute = r.pilot_recipe.compute
    try:
        return [f"     {design_summary(DesignQuery(r.parent, r.method, r.ratio, get_gpu(compute.gpu), compute.mfu))}"]
    except BadInput as exc:  # a family without three real sizes, a ratio its sizes cannot reach
        return [f"     (no design for this query: {exc})"]


def render(r: Recommendation, *, show_extrapolation: bool = False) -> str:
    """The human-readable answer; its first line is the verdict.

    Not credible: the verdict and why, the published practice, the way to a grounded answer;
    the card's numbers only with ``show_extrapolation``, under a heading that says what they are.
    """
    if r.credible:
        lines = _header(r) + [""] + _numbers(r) + _practice(r)
        if r.pilot_recipe is not None:
            lines += [""] + render_recipe(r.pilot_recipe)
    else:
        lines = [r.verdict, f"why        {r.doubt}"] + _header(r)[1:] + _practice(r) + [""]
        lines += render_recipe(r.pilot_recipe) + _design_line(r) if r.pilot_recipe is not None else []
        if show_extrapolation:
            lines += ["", "the card's extrapolation (its formula where it does not describe models; not a "
                          "prediction):"] + [f"  {line}" for line in _numbers(r)]
            lines += [f"  reach: {r.reach}"] if r.reach and r.tokens is not None else []
        else:
            lines += ["", "the card's extrapolated D*, loss and cost at this N0 are not a prediction: "
                          "--show-extrapolation prints them"]
    lines += _identifiability(r) if r.credible or show_extrapolation else []
    lines += [f"warning: {w}" for w in r.warnings]
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def _numbers(r: Recommendation) -> list[str]:
    """D*, the loss there, its cost and the budget table (none when no budget was found)."""
    if r.tokens is None or r.loss is None or r.compute is None:
        return [f"tokens D*  none ({r.reach})"]
    c = r.compute
    # card intervals are the hull of the run bootstrap and the leave-one-run-out jackknife
    kind = "bootstrap/jackknife" if r.mode == "card" else "posterior"
    level = "95% " + kind + " interval" if r.tokens.low is not None else "no samples: no intervals"

    def loss(x: float) -> str:
        return f"+{x:.4f}" if r.relative else f"{x:.4f}"
    scale = " dL above L0" if r.relative else ""
    lines = [
        f"tokens D*  {_est(r.tokens, format_count)}   ({level})",
        f"loss @ D*  {_est(r.loss, loss)}{scale}   (asymptote {_est(r.asymptote, loss)})",
        f"compute    {c.flops:.3g} FLOPs ({c.formula}) = {format_amount(c.gpu_hours)} {c.gpu.upper()} GPU-hours at MFU "
        f"{c.mfu:g} = ${format_amount(c.cost_usd)} at ${c.price_per_gpu_hour:.2f}/GPU-h",
    ]
    if r.card_only is not None:
        lines.append(f"card only  {r.card_only['moved']}")
    lines += ["", f"  {'budget':>8}  {'tokens':>8}  {'predicted loss' + scale:<28}  {'GPU-hours':>10}  {'cost':>10}"]
    for b in r.budgets:
        lines.append(f"  {b.multiple:>7g}x  {format_count(b.tokens):>8}  {_est(b.loss, loss):<28}  "
                     f"{format_amount(b.compute.gpu_hours):>10}  {'$' + format_amount(b.compute.cost_usd):>10}")
    return lines


def _practice(r: Recommendation) -> list[str]:
    """The nearest published recipes: their budgets, and (credible answers) D* over them."""
    if not r.practice:
        return []
    head = ("published practice (nearest recipes; D* / their tokens):" if r.credible
            else "published practice (nearest recipes; the tokens they post-trained on):")
    lines = ["", head]
    for p in r.practice:
        ours = f"; law D* is {p['law_over_practice']:.3g}x" if r.credible else ""
        lines.append(f"  {p['parent']} -> {p['target']} ({p['method']}, ratio {p['ratio']:.2g}): "
                     f"{format_count(p['tokens'])} tokens{ours}  [{p['source']}]")
    return lines


def _identifiability(r: Recommendation) -> list[str]:
    """The card's own identifiability notes (bounds, collapsed terms, sloppy directions)."""
    notes = [] if r.card is None else r.card.identifiability_notes()
    if not notes:
        return []
    used = "the answer rests on them" if r.mode == "card" else "the pilot fit takes only its beta"
    return ["", f"card fit (what the card's fit could not pin down; {used}):"] + [f"  {n}" for n in notes]
