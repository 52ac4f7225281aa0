"""``planner design``: the cheapest grid of runs that makes the answer for one query credible.

An optimal experimental design for D* (the slope criterion's budget) at the user's
(N0, ratio, method, family): candidate runs on the family's real parents with their GPU cost
(``candidates``), a prior (``prior``), the delta method's search over grid-shaped designs
(``optimal``), a simulation check with the product's own fitter (``simulate``), the grid YAML
(``grid``), all put together in ``plan``.
"""

from planner.design.plan import DesignPlan, DesignQuery, check, design_summary, plan, resolve_prior, runs_prior

__all__ = ["DesignPlan", "DesignQuery", "check", "design_summary", "plan", "resolve_prior", "runs_prior"]
