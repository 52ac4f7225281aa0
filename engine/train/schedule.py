"""When to evaluate: one function turns a step budget into evaluation steps.

Loss curves of post-training change fastest right after pruning, so the first half of the
points is log-spaced and the rest evenly spaced up to the budget; one long run with these
checkpoints serves every smaller token budget of a scaling-law fit. The log-spaced half starts
where the learning-rate warm-up ends: every fit leaves the ramp's points out
(``fitting.table.fit_points``), and with a 2% warm-up and 16 points, 6 of the 8 log-spaced
points of a 10,000-step pilot used to fall on it.
"""

from __future__ import annotations

import math


def eval_steps(total_steps: int, points: int, start: int = 1) -> list[int]:
    """Sorted, unique optimizer steps to evaluate at, always ``0`` and ``total_steps``.

    Args:
        total_steps: optimizer steps in the whole run (>= 1).
        points: evaluation points after step 0 (fewer come back when steps are too few).
        start: the first log-spaced step (the warm-up's end); 1 when it would reach the
            evenly spaced half.

    Example:
        >>> eval_steps(1000, 8)
        [0, 1, 4, 16, 63, 250, 500, 750, 1000]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} must be >= 1")
    n_log = points // 2
    n_lin = points - n_log
    # the log part spans [1, first evenly spaced point) so the two parts never overlap
    first_lin = total_steps / max(n_lin, 1)
    steps = {0, total_steps}
    if n_log:
        lo = math.log(start) if 1 <= start < first_lin else 0.0
        hi = math.log(max(first_lin, 1.0))
        steps.update(round(math.exp(lo + (hi - lo) * i / n_log)) for i in range(n_log))
    steps.update(round(first_lin * (i + 1)) for i in range(n_lin))
    return sorted(s for s in steps if 0 <= s <= total_steps)
