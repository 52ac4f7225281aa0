"""The way to a grounded answer when a card cannot answer at the user's scale: a pilot run.

A pilot is the first stretch of the very post-training job being planned, run with this
product, whose loss curve ``planner recommend --pilot`` fits (``fitting.pilot``). What makes a
pilot fit well is fixed here, once, for every screen that suggests one:

- its budget: :data:`PILOT_FRACTION` of the nearest published recipe's tokens, scaled to the
  user's N0 by tokens per parent parameter (a budget practitioners found sufficient, so a
  tenth of it is well before D* and still past the steep first part of the curve);
- a constant learning rate after a short warm-up: a cosine or linear decay bends the curve
  down at its end and the fitted exponent with it;
- :data:`PILOT_EVAL_POINTS` held-out evaluations (log-spaced early by the engine), plus the
  one at tokens == 0 that measures the loss right after pruning.

The job file prunes the parent itself, so the run records N0, the achieved ratio and the
parent's L0, which ``--pilot`` checks against the query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data.units import format_amount, format_count
from data.compute import Compute
from planner.query import Parent
from fitting.criteria import MIN_TOKENS_PER_PARAM

PILOT_FRACTION = 0.1
PILOT_EVAL_POINTS = 16
PILOT_WARMUP = 0.02
"""Warm-up as a fraction of the pilot's steps (engine ``optim.warmup_frac``)."""


@dataclass(frozen=True)
class PilotRecipe:
    """What to run for a pilot of one query, and what it costs."""

    tokens: float
    basis: str
    """Where the budget comes from, in words."""
    job: dict[str, Any]
    """The ``engine train`` job file (YAML keys of ``engine.train.config.JobConfig``)."""
    commands: tuple[str, ...]
    compute: Compute
    design: str
    """The ``planner design`` command for the same query."""

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "basis": self.basis, "eval_points": PILOT_EVAL_POINTS,
                "schedule": "constant after warm-up", "job": self.job, "commands": list(self.commands),
                "gpu_hours": self.compute.gpu_hours, "cost_usd": self.compute.cost_usd, "design": self.design}


def pilot_tokens(n0: float, ratio: float, method: str) -> tuple[float, str]:
    """:data:`PILOT_FRACTION` of the nearest published budget (same method first) per parameter, x N0."""
    from planner.practice import nearest

    sized = [p for p in nearest(n0, ratio, k=1_000) if p.params]
    if not sized:
        tokens = float(f"{20.0 * PILOT_FRACTION * n0:.2g}")
        return tokens, f"{PILOT_FRACTION:.0%} of 20 tokens per parent parameter (no published recipe to scale)"
    family = method.split("-")[0]
    row = next((p for p in sized if p.method.split("+")[0].startswith(family)), sized[0])
    per_param = row.tokens / row.params
    tokens = float(f"{max(PILOT_FRACTION * per_param * n0, MIN_TOKENS_PER_PARAM * n0 * 10):.2g}")
    return tokens, (f"{PILOT_FRACTION:.0%} of {row.target}'s {format_count(row.tokens)} tokens "
                    f"({per_param:.3g} per parent parameter), scaled to N0")


def design_command(parent: Parent, ratio: float, method: str) -> str:
    return (f"planner design --params {_params_arg(parent)} --ratio {ratio:g} --method {method} "
            f"--family {parent.family}")


def recommend_command(parent: Parent, ratio: float, method: str, extra: str = "") -> str:
    return f"planner recommend --params {_params_arg(parent)} --ratio {ratio:g} --method {method}{extra}"


def _params_arg(parent: Parent) -> str:
    return parent.name or format_count(parent.params_before)


def pilot_recipe(parent: Parent, method: str, ratio: float, cost: Callable[[float], Compute]) -> PilotRecipe:
    """The pilot for this query: job file, commands and ``cost(tokens)`` of its budget."""
    tokens, basis = pilot_tokens(float(parent.params_before), ratio, method)
    job = {"parent": "PARENT_DIR", "method": method, "ratio": ratio, "tokens": format_count(tokens),
           "data": {"shards": "work/pilot-shards"},
           "optim": {"schedule": "constant", "warmup_frac": PILOT_WARMUP},
           "eval": {"points": PILOT_EVAL_POINTS}}
    commands = ("data prepare --corpus YOUR_CORPUS --tokenizer PARENT_DIR --seq-len 2048 --out work/pilot-shards",
                "engine train --config pilot.yaml",
                recommend_command(parent, ratio, method, " --pilot runs/RUN_ID"))
    return PilotRecipe(tokens, basis, job, commands, cost(tokens), design_command(parent, ratio, method))


def render_recipe(recipe: PilotRecipe) -> list[str]:
    """The recipe as the text answer prints it (copyable lines, placeholders in capitals)."""
    c = recipe.compute
    job = recipe.job
    return [
        "a grounded answer, from your own data:",
        f"  1. pilot: post-train this very model for {job['tokens']} tokens ({recipe.basis}), "
        f"~{format_amount(c.gpu_hours)} {c.gpu.upper()} GPU-hours (${format_amount(c.cost_usd)}), then fit its curve",
        "     pilot.yaml (engine train prunes the parent itself, so the run records N0, ratio and L0):",
        "       parent: PARENT_DIR            # the local Hugging Face directory of your parent",
        f"       method: {job['method']}",
        f"       ratio: {job['ratio']:g}",
        f"       tokens: {job['tokens']}",
        f"       data: {{shards: {job['data']['shards']}}}",
        f"       optim: {{schedule: constant, warmup_frac: {PILOT_WARMUP:g}}}   # no decay: it would bend "
        "the curve the fit reads",
        f"       eval: {{points: {PILOT_EVAL_POINTS}}}          # held-out evaluations, log-spaced early, "
        "plus one right after pruning",
        *[f"     {cmd}" for cmd in recipe.commands],
        f"  2. or fit the law on a grid of the family's real models: {recipe.design}",
    ]
