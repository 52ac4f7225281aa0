"""What the user asks about: a parent (size or model name), a family, a method, ratios.

Validation happens here, once, for both ``recommend`` and ``compare``: every bad value raises
:class:`data.cli.BadInput` with one line naming it and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from data.cli import BadInput
from data.methods import METHODS  # noqa: F401 - the planner's CLI lists and checks them
from data.methods import SPARSE as SPARSE_METHODS  # noqa: F401 - dense kernels gain nothing from these
from data.models import FAMILIES, get_spec, normalize_family
from data.units import format_count, parse_count

DEFAULT_METHOD = "depth"
PARAMS_RANGE = (1e3, 1e13)
"""Plausible parent sizes N0: the tiny test shapes (tens of thousands) up to 10T, several times
the largest published language models."""


@dataclass(frozen=True)
class Parent:
    """The model to be pruned."""

    params_before: int
    """N0, total parameters (docs/design-contract.md convention)."""
    family: str
    name: str | None
    """The model name when the user gave one (``llama-3.1-8b``), else None."""

    def describe(self) -> str:
        size = f"N0 = {format_count(self.params_before)} params"
        return f"{self.name} ({size})" if self.name else f"a {self.family} parent with {size}"


def parse_parent(params: str, family: str | None) -> Parent:
    """``--params`` (size or model name) and ``--family`` into a :class:`Parent`.

    A model name fixes the family; an explicit ``--family`` that disagrees is an error.
    Without either, the family defaults to ``llama3``.
    """
    fam = _family(family) if family is not None else None
    try:
        spec = get_spec(params)
    except KeyError:
        spec = None
    if spec is not None:
        if fam is not None and fam != spec.family:
            raise BadInput(f"--family {family!r} contradicts --params {params!r} (a {spec.family} model); "
                           "drop --family or pass a size such as 8B")
        return Parent(spec.params_total, spec.family, spec.name)
    try:
        number = float(params)
    except ValueError:
        number = None
    if number is not None and not number > 0:
        raise BadInput(f"bad --params {params!r}: the parent's parameter count must be positive, "
                       "e.g. 8B, 1.5B, 500M, 8e9 or a model name such as llama-3.1-8b")
    try:
        count = parse_count(params, what="--params", allow_model=True)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    lo, hi = PARAMS_RANGE
    if not lo <= count <= hi:
        raise BadInput(f"bad --params {params!r}: N0 = {count:.3g} parameters is outside the plausible range "
                       f"{format_count(lo)}-{format_count(hi)} (a parent's total parameter count, e.g. 8B)")
    return Parent(count, fam or "llama3", None)


def _family(name: str) -> str:
    try:
        return normalize_family(name)
    except KeyError:
        raise BadInput(f"unknown --family {name!r}; allowed: {', '.join(FAMILIES)}") from None


def parse_method(name: str | None) -> str:
    """A pruning method name from the engine's registry (default ``depth``)."""
    if name is None:
        return DEFAULT_METHOD
    key = name.strip().lower()
    if key not in METHODS:
        raise BadInput(f"unknown --method {name!r}; allowed: {', '.join(METHODS)}")
    return key


def parse_ratio(text: str | float, flag: str = "--ratio") -> float:
    """A pruning ratio rho strictly between 0 and 1 (P2 has (1/rho)**gamma: rho=0 is undefined)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BadInput(f"bad {flag} {text!r}: expected a number in (0, 1), e.g. 0.5") from None
    if not 0.0 < value < 1.0:
        raise BadInput(f"bad {flag} {text!r}: the fraction of parameters removed must be in (0, 1), e.g. 0.5")
    return value


def parse_ratios(text: str) -> tuple[float, ...]:
    """``0.25,0.5,0.75`` -> a sorted tuple of distinct ratios (empty items and repeats refused)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise BadInput(f"bad --ratios {text!r}: expected comma-separated numbers in (0, 1) with no empty "
                       "item, e.g. 0.25,0.5")
    ratios = [parse_ratio(p, "--ratios value") for p in parts]
    if len(set(ratios)) != len(ratios):
        raise BadInput(f"bad --ratios {text!r}: a ratio is listed twice; list each once, e.g. 0.25,0.5")
    return tuple(sorted(ratios))


def parse_tokens(text: str, flag: str = "--tokens") -> float:
    """A token count (``10B``, ``2T``, ``5e9``)."""
    try:
        return float(parse_count(text, what=flag))
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def parse_positive(text: str, flag: str, example: str) -> float:
    """A positive finite float for ``flag``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise BadInput(f"bad {flag} {text!r}: expected a positive number, e.g. {example}")
    return value
