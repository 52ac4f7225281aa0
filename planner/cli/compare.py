"""``planner compare``: predicted loss per pruning ratio at equal tokens and at equal compute.

Equal compute uses the parent as reference: ``C = 6 * N0 * tokens``; ratio rho gets
``tokens / (1 - rho)`` tokens for depth/width, but the same ``tokens`` for 2:4/unstructured,
which train on dense kernels, unless ``--sparse-kernel`` (see ``planner.compare``). The
from-scratch settings are named in the output: equal post-training tokens, and (with
``--parent-tokens``) the whole pipeline's tokens. With a Chinchilla card for the family
(``--scratch-law`` or bundled), each row also says whether pruning or training a model of the
same size from scratch wins at that budget.

The first line is the verdict, as ``planner recommend`` words it; when the card's formula
predicts losses no model of the family can have at this N0 ("not credible"), the tables are
printed only with --show-extrapolation and the JSON moves them under ``extrapolation``.

--json schema (one document on stdout; ``schema_version`` 2; Estimate as in recommend)::

    command         "compare"
    schema_version  2
    verdict         str     the first line of the text answer
    credible        bool    false: ``rows`` is [] and the rows are under ``extrapolation``
    why_not_credible str or null
    query           {params_before, model, family, method, tokens, ratios: [float]}
    scratch_settings [str]  the token-matched from-scratch settings used, by name
    card            {path, law, ..., selected_because}     the P2 card (as in recommend)
    scratch_card    {path, law: "chinchilla", ...} or null
    scratch_reason  str     why that card (or why none)
    assumptions     {loss_before (null: unknown, losses are dL), loss_before_source, loss_scale,
                     parent, parent_tokens}
    equal_compute   {flops, kernel: dense|sparse, reference}
    rows            [{ratio, params_after,
                      equal_tokens:  {tokens, loss: Estimate, scratch_loss: Estimate|null,
                                      winner: "pruning"|"scratch"|"uncertain"|null,
                                      scratch_pipeline_loss: Estimate|null, pipeline_winner},
                      equal_compute: {same keys}}]
    extrapolation   null, or (not credible) {label, rows: [as above]}
    warnings        [str]
"""

from __future__ import annotations

from collections.abc import Sequence

from data.cli import BadInput
from data.units import format_count
from fitting.card import LawCard
from planner.cards import load_card, select_card
from planner.cli.common import add_parent_options, check_loss_before, new_parser, law_card, print_json
from planner.compare import Arm, Comparison, compare, kernel_rule, scratch_settings
from planner.grounding import design_command, recommend_command
from planner.query import Parent, parse_method, parse_parent, parse_ratios, parse_tokens

EPILOG = """\
examples:
  planner compare --params llama-3.1-8b --ratios 0.25,0.5,0.75 --tokens 10B
  planner compare --params 1.5B --family qwen2.5 --method width --ratios 0.3,0.5 --tokens 2B --loss-before 2.4
  planner compare --params 8B --ratios 0.5 --tokens 50B --law p2.json --scratch-law chinchilla.json --json
  planner compare --params llama-3.1-8b --method 2:4 --ratios 0.5 --tokens 13B --loss-before 1.9 --parent-tokens 15T
"""


def build_parser():
    parser = new_parser("planner compare", "Loss per pruning ratio at equal tokens and at equal "
                        "compute (reference: the parent, 6 * N0 * tokens), and against training "
                        "the same size from scratch when a Chinchilla card exists.", EPILOG)
    add_parent_options(parser)
    parser.add_argument("--ratios", required=True, help="comma-separated ratios in (0, 1), e.g. 0.25,0.5,0.75")
    parser.add_argument("--tokens", required=True, help="post-training tokens (10B, 2T, 5e9)")
    parser.add_argument("--scratch-law", metavar="CARD.json",
                        help="Chinchilla card for training from scratch; default: the bundled one "
                             "for the family, if any")
    parser.add_argument("--sparse-kernel", action="store_true",
                        help="2:4/unstructured training runs sparse kernels (default: dense, 6 * N0 per token)")
    parser.add_argument("--parent-tokens", metavar="TOKENS",
                        help="the parent's pretraining tokens (15T for Llama-3.1): adds the from-scratch setting "
                             "given the whole pipeline's tokens")
    parser.add_argument("--show-extrapolation", action="store_true",
                        help="when the verdict is 'not credible': print the loss tables anyway, labelled as the "
                             "card's formula outside where it describes models")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout, nothing else")
    return parser


def scratch_card(path: str | None, parent: Parent) -> tuple[LawCard | None, str]:
    """The Chinchilla card (``--scratch-law`` or bundled, same family only) and why."""
    if path is not None:
        return load_card(path, law="chinchilla"), "given with --scratch-law"
    try:
        sel = select_card("chinchilla", parent.family, None, parent.params_before)
    except BadInput:
        return None, (f"no from-scratch (chinchilla) card for family {parent.family}; "
                      "pass --scratch-law to compare with training from scratch")
    if sel.card.family != parent.family:  # from-scratch losses of another family's data do not compare
        return None, f"no from-scratch (chinchilla) card for family {parent.family}"
    return sel.card, sel.reason


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parent = parse_parent(args.params, args.family)
    method, ratios = parse_method(args.method), parse_ratios(args.ratios)
    tokens, loss_before = parse_tokens(args.tokens), check_loss_before(args.loss_before)
    selection = law_card(args.law, parent.family, method, parent.params_before)
    scratch, why = scratch_card(args.scratch_law, parent)
    parent_tokens = None if args.parent_tokens is None else parse_tokens(args.parent_tokens, "--parent-tokens")
    result = compare(parent, method, ratios, tokens, selection.card, selection.reason,
                     scratch=scratch, scratch_reason=why, loss_before=loss_before,
                     sparse_kernel=args.sparse_kernel, parent_tokens=parent_tokens)
    if args.json:
        print_json(result.to_dict())
    else:
        print(render(result, show_extrapolation=args.show_extrapolation))
    return 0


def _est(e, sign: str = "") -> str:
    return f"{e.value:{sign}.4f}" + (f" [{e.low:{sign}.4f}, {e.high:{sign}.4f}]" if e.low is not None else "")


def _table(c: Comparison, rule: str) -> list[str]:
    """One block per budget rule: ratio, N, D, pruned loss, scratch loss, winner."""
    scratch = c.scratch is not None
    sign = "+" if c.relative else ""
    pruned = "pruned, dL above L0" if c.relative else "pruned + post-trained"
    head = f"  {'ratio':>5}  {'N':>7}  {'tokens':>7}  {pruned:<26}"
    pipe = c.parent_tokens is not None and scratch
    lines = [head + (f"  {'scratch, equal post-train D':<28}  winner" if scratch else "")
             + (f"  {'scratch, whole pipeline D':<26}  winner" if pipe else "")]
    for r in c.rows:
        a: Arm = getattr(r, rule)
        line = (f"  {r.ratio:>5g}  {format_count(r.params_after):>7}  {format_count(a.tokens):>7}  "
                f"{_est(a.loss, sign):<26}")
        if a.scratch_loss is not None:
            line += f"  {_est(a.scratch_loss):<28}  {a.winner or '-'}"
        if a.pipeline_loss is not None:
            line += f"  {_est(a.pipeline_loss):<26}  {a.pipeline_winner or '-'}"
        lines.append(line)
    return lines


def render(c: Comparison, *, show_extrapolation: bool = False) -> str:
    """The verdict, then the tables (not credible: the way to a grounded answer instead, the
    tables only with ``show_extrapolation``)."""
    card = c.card.provenance()
    lines = [c.verdict] + ([] if c.credible else [f"why        {c.doubt}"]) + [
        f"parent     {c.parent.describe()}, family {c.parent.family}, method {c.method}",
        f"card       {card['path']} ({card['family'] or 'any family'}/{card['method'] or 'any method'}; "
        f"{c.card_reason})",
        f"scratch    {c.scratch.path if c.scratch is not None else '-'} ({c.scratch_reason})",
        f"L0         {'unknown' if c.relative else f'{c.loss_before:.4f} nats'} ({c.loss_before_source})",
    ]
    if not c.credible:
        lines += ["", "a grounded answer per ratio, from your own data: a pilot run of each "
                      "(what to run, for how long, then --pilot):"]
        lines += [f"  {recommend_command(c.parent, r.ratio, c.method)}" for r in c.rows]
        lines += [f"  {design_command(c.parent, r.ratio, c.method)}" for r in c.rows]
        if not show_extrapolation:
            lines += ["", "the loss tables (the card's formula at this N0, not a prediction): "
                          "--show-extrapolation prints them"]
            return "\n".join(lines + [f"warning: {w}" for w in c.warnings])
        lines += ["", "the card's extrapolation (its formula where it does not describe models; not a prediction):"]
    lines += [
        "",
        f"equal tokens: {format_count(c.tokens)} post-training tokens for every ratio",
        *_table(c, "equal_tokens"),
        "",
        f"equal compute: 6 * N0 * tokens = {c.compute_flops:.3g} FLOPs (the parent on {format_count(c.tokens)} "
        f"tokens); {kernel_rule(c.method, c.kernel)}",
        *_table(c, "equal_compute"),
    ]
    if c.scratch is not None:
        lines += ["", "from-scratch settings: " + "; ".join(scratch_settings(c.parent_tokens)),
                  "winner: the lower predicted loss when the 95% intervals do not overlap, else "
                  "'uncertain' ('-': L0 unknown); in 'equal post-train D' the parent's pretraining counts as "
                  "already paid"]
    lines += [f"warning: {w}" for w in c.warnings]
    return "\n".join(lines)
