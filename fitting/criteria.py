"""How a token budget D* is chosen on the token term ``L(D) = a + k * D**-beta``: the criteria.

A criterion is a small class registered by its ``kind``, as a law is (``fitting.laws``): it
carries everything that differs between criteria, so nothing else branches on its kind:

- its command-line flag, metavar, help and the epilog lines that explain it (``planner
  recommend`` builds its flags from :data:`CRITERIA`);
- its checks on the value, and its words (``describe``, ``notes``);
- the budget it picks per sample of the token term (:meth:`Criterion.solver`, used by
  ``fitting.term.TokenTerm.tokens``: the planner's answers and the online stop's forecast);
- whether it needs the loss where the recoverable gap starts (``needs_start``), and the advice
  its budget check gives when a budget is out of a training run's reach.

``register(cls)`` adds one (a user's own criterion, tests); ``Criterion.of(kind, value)`` makes
one by name (the engine's ``stop:`` block names ``recover`` or ``target_loss``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from data.cli import BadInput
from data.units import format_count

DEFAULT_RECOVER = 0.9
"""Close 90 % of the recoverable gap (README: why a fraction, and why 0.9)."""
MIN_TOKENS_PER_PARAM = 1e-3
"""Budgets are judged per parent parameter, so the bounds mean the same for a 400K-parameter
reference parent and an 8B model: under 1e-3 tokens per parameter (8M tokens at 8B, about two
optimizer steps) a recommendation is not a training run."""
MAX_TOKENS_PER_PARAM = 1e4
"""Over 1e4 tokens per parameter (80T at 8B: several times the largest pretraining corpora, 500x
Chinchilla's 20) a law answers nothing."""

Solver = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""D per sample of the token term's ``(a, k, beta)`` columns (NaN or <= 0: no budget)."""


@dataclass(frozen=True)
class Reference:
    """Where the recoverable gap starts: a measured loss right after pruning, or a budget.

    ``loss`` (same scale as the term: absolute, or dL when relative) is the eval loss at
    tokens == 0 of a pilot; without one, ``tokens`` is a reference budget D_ref and the gap
    starts at the law's own L(D_ref) (P2 diverges at D = 0).
    """

    loss: float | None = None
    tokens: float | None = None
    source: str = ""

    def target(self, a: np.ndarray, k: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
        """Loss after closing ``fraction`` of ``start - a``: ``a + (1 - F) * (start - a)``."""
        start = self.loss if self.loss is not None else a + k * float(self.tokens) ** -b
        return a + (1.0 - fraction) * (np.asarray(start) - a)


def _tokens_to(a: np.ndarray, k: np.ndarray, b: np.ndarray, target: np.ndarray | float) -> np.ndarray:
    """Smallest D with ``a + k D^-b <= target``; NaN where the target is at or below ``a``."""
    d = (k / (target - a)) ** (1.0 / b)
    return np.where(target > a, d, np.nan)


@dataclass(frozen=True)
class Criterion:
    """How D is chosen: a registered ``kind`` and its value (F, S or L)."""

    value: float
    kind: ClassVar[str]
    flag: ClassVar[str]
    metavar: ClassVar[str]
    help: ClassVar[str]
    explain: ClassVar[str]
    """The epilog lines of ``planner recommend --help`` (flag, then what it means)."""
    harder: ClassVar[str]
    easier: ClassVar[str]
    """What to ask for when a budget is met too early (harder) or out of reach (easier)."""
    needs_start: ClassVar[bool] = False
    """True: D is found from where the recoverable gap starts (a :class:`Reference`)."""

    @staticmethod
    def of(kind: str, value: float) -> "Criterion":
        """The registered criterion ``kind`` with ``value``; ``BadInput`` naming the allowed ones."""
        if kind not in CRITERIA:
            raise BadInput(f"unknown criterion {kind!r}; allowed: {', '.join(CRITERIA)}")
        return CRITERIA[kind](value)

    def __post_init__(self) -> None:
        if not self.value > 0:
            raise BadInput(f"bad {self.flag} {self.value!r}: must be positive")

    def describe(self) -> str:
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Caveats that always hold for an answer under this criterion."""
        return []

    def solver(self, start: Reference, asymptote: float, relative: bool) -> Solver:
        """D per sample; ``asymptote`` and ``relative`` are the point term's (checks only).

        Raises:
            BadInput: the term cannot answer this criterion at all.
        """
        raise NotImplementedError

    def unreachable_fraction(self, asymptotes: np.ndarray | None) -> float:
        """Share of samples (their asymptotes) that never meet the criterion."""
        return 0.0

    def check_budget(self, tokens: float, where: str, n0: float) -> None:
        """Exit 2 on budgets no training run means, judged in tokens per parent parameter."""
        low, high = MIN_TOKENS_PER_PARAM * n0, MAX_TOKENS_PER_PARAM * n0
        if tokens < low:
            raise BadInput(f"{self.describe()} gives D* = {format_count(tokens)} tokens ({where}): met within "
                           f"{format_count(low)} tokens ({MIN_TOKENS_PER_PARAM:g} per parent parameter), i.e. right after pruning, so the law cannot resolve "
                           f"it; ask for {self.harder} or calibrate with --pilot")
        if tokens > high:
            raise BadInput(f"{self.describe()} gives D* = {format_count(tokens)} tokens ({where}), beyond "
                           f"{format_count(high)} ({MAX_TOKENS_PER_PARAM:g} tokens per parent parameter): out of practical reach; "
                           f"ask for {self.easier}")


CRITERIA: dict[str, type[Criterion]] = {}
"""Registry: kind -> criterion class (the order of ``planner recommend``'s flags)."""


def register(cls: type[Criterion]) -> type[Criterion]:
    """Add a criterion class to the registry (``planner recommend`` then offers its flag)."""
    CRITERIA[cls.kind] = cls
    return cls


@register
@dataclass(frozen=True)
class Recover(Criterion):
    """Close a fraction F of the recoverable gap, from the loss right after pruning to the
    law's asymptote (the default: scale-free, every F < 1 is reachable)."""

    kind: ClassVar[str] = "recover"
    flag: ClassVar[str] = "--recover"
    metavar: ClassVar[str] = "F"
    help: ClassVar[str] = f"fraction of the recoverable gap to close, in (0, 1); default {DEFAULT_RECOVER:g}"
    explain: ClassVar[str] = """\
  --recover F      close a fraction F of the recoverable gap: from the loss right after pruning
                   (a pilot's measured tokens=0 loss; else the law at a reference budget) down to
                   the law's asymptote. Scale-free: the same F means the same on any model."""
    harder: ClassVar[str] = "a larger --recover"
    easier: ClassVar[str] = "a smaller --recover"
    needs_start: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0.0 < self.value < 1.0:
            raise BadInput(f"bad --recover {self.value!r}: the fraction of the recoverable gap to close "
                           "must be in (0, 1), e.g. 0.9")

    def describe(self) -> str:
        return (f"recover: close {self.value:.0%} of the recoverable gap (loss right after pruning "
                "minus the law's asymptote)")

    def solver(self, start: Reference, asymptote: float, relative: bool) -> Solver:
        return lambda a, k, b: _tokens_to(a, k, b, start.target(a, k, b, self.value))


@register
@dataclass(frozen=True)
class Slope(Criterion):
    """D* where the next 1e9 tokens lower the predicted loss by S nats (absolute)."""

    kind: ClassVar[str] = "slope"
    flag: ClassVar[str] = "--slope"
    metavar: ClassVar[str] = "S"
    help: ClassVar[str] = "nats per extra 1e9 tokens (see below)"
    explain: ClassVar[str] = """\
  --slope S        D* where the next 1e9 tokens lower the predicted eval loss by S nats
                   (absolute nats per extra 1B tokens; independent of L0)"""
    harder: ClassVar[str] = "a smaller --slope"
    easier: ClassVar[str] = "a larger --slope"

    def describe(self) -> str:
        return (f"slope: D* where the next 1e9 post-training tokens lower the predicted eval loss "
                f"by {self.value:g} nats (absolute nats per extra 1B tokens)")

    def notes(self) -> list[str]:
        return ["the slope criterion is absolute (nats per extra 1e9 tokens): its D* does not depend "
                "on L0, but the same S means less on a lower-loss model"]

    def solver(self, start: Reference, asymptote: float, relative: bool) -> Solver:
        return lambda a, k, b: (b * k * 1e9 / self.value) ** (1.0 / (b + 1.0))


@register
@dataclass(frozen=True)
class TargetLoss(Criterion):
    """The smallest D with predicted eval loss <= L (needs a known L0 or a pilot)."""

    kind: ClassVar[str] = "target_loss"
    flag: ClassVar[str] = "--target-loss"
    metavar: ClassVar[str] = "L"
    help: ClassVar[str] = "target eval loss in nats"
    explain: ClassVar[str] = """\
  --target-loss L  the smallest budget whose predicted eval loss is <= L nats (needs
                   --loss-before or a pilot; refused at or below the asymptote)"""
    harder: ClassVar[str] = "a lower --target-loss"
    easier: ClassVar[str] = "a higher --target-loss"

    def describe(self) -> str:
        return f"target loss: smallest budget with predicted eval loss <= {self.value:g} nats"

    def solver(self, start: Reference, asymptote: float, relative: bool) -> Solver:
        if relative:
            raise BadInput(f"--target-loss {self.value:g} is an eval loss but the parent's L0 is unknown "
                           "(the law only gives dL above L0): pass --loss-before L0 or --pilot")
        if self.value <= asymptote:
            raise BadInput(f"--target-loss {self.value:g} is at or below the law's asymptote "
                           f"{asymptote:.4f}: no budget reaches it; ask for a loss above the asymptote")
        return lambda a, k, b: _tokens_to(a, k, b, self.value)

    def unreachable_fraction(self, asymptotes: np.ndarray | None) -> float:
        """Share of samples whose asymptote is at or above the target (left out of intervals)."""
        if asymptotes is None or len(asymptotes) == 0:
            return 0.0
        return float(np.mean(asymptotes >= self.value))


DEFAULT_CRITERION: Criterion = Recover(DEFAULT_RECOVER)
"""The criterion when none is asked for: close :data:`DEFAULT_RECOVER` of the gap."""
