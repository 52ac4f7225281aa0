"""The planner's budget bounds on the token term (``fitting.term``, re-exported here).

The token term ``L(D) = a + k * D**-beta`` and its decisions (criteria, D*, the loss at a
budget, intervals) live in ``fitting.term``, shared with the engine's online stop; this module
adds only what the planner refuses to recommend: budgets no training run means.
"""

from __future__ import annotations

from data.cli import BadInput
from data.units import format_count
from fitting.term import (CRITERIA, DEFAULT_RECOVER, Criterion, Estimate, Reference, TokenTerm, percentile,
                          sample_interval)

__all__ = ["CRITERIA", "DEFAULT_RECOVER", "Criterion", "Estimate", "Reference", "TokenTerm", "percentile",
           "sample_interval", "check_budget", "MIN_TOKENS_PER_PARAM", "MAX_TOKENS_PER_PARAM"]

MIN_TOKENS_PER_PARAM = 1e-3
"""Budgets are judged per parent parameter, so the bounds mean the same for a 400K-parameter
reference parent and an 8B model: under 1e-3 tokens per parameter (8M tokens at 8B, about two
optimizer steps) a recommendation is not a training run."""
MAX_TOKENS_PER_PARAM = 1e4
"""Over 1e4 tokens per parameter (80T at 8B: several times the largest pretraining corpora, 500x
Chinchilla's 20) a law answers nothing."""

_EASIER = {"target_loss": ("a lower --target-loss", "a higher --target-loss"),
           "recover": ("a larger --recover", "a smaller --recover"),
           "slope": ("a smaller --slope", "a larger --slope")}


def check_budget(tokens: Estimate, criterion: Criterion, where: str, n0: float) -> None:
    """Exit 2 on budgets no training run means, judged in tokens per parent parameter."""
    d = tokens.value
    harder, easier = _EASIER[criterion.kind]
    low, high = MIN_TOKENS_PER_PARAM * n0, MAX_TOKENS_PER_PARAM * n0
    if d < low:
        raise BadInput(f"{criterion.describe()} gives D* = {format_count(d)} tokens ({where}): met within "
                       f"{format_count(low)} tokens ({MIN_TOKENS_PER_PARAM:g} per parent parameter), i.e. right after pruning, so the law cannot resolve "
                       f"it; ask for {harder} or calibrate with --pilot")
    if d > high:
        raise BadInput(f"{criterion.describe()} gives D* = {format_count(d)} tokens ({where}), beyond "
                       f"{format_count(high)} ({MAX_TOKENS_PER_PARAM:g} tokens per parent parameter): out of practical reach; "
                       f"ask for {easier}")
