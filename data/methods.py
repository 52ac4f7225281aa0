"""The table of pruning methods: one row per method (torch-free).

Read by the engine (which function prunes, which options it takes, whether it needs
calibration data or trains), by the planner (which methods are sparse) and by the reports (the
order that fixes each method's colour). It lives in ``data`` because that is the one package all
three may import (tests/test_import_graph.py); the functions and option types it names are
``"module:attribute"`` strings, resolved only by the engine, so reading the table costs nothing.

To add a method: one :class:`MethodSpec` row below, plus its module (``prune`` function and, for
options, a frozen dataclass in a torch-free module). Nothing else lists methods.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass

from data.cli import BadInput

KINDS = ("depth", "width", "sparse")
"""``depth`` drops decoder layers, ``width`` shrinks them (both structural: a smaller dense
model), ``sparse`` zeroes weights under masks kept through training."""


@dataclass(frozen=True)
class MethodSpec:
    """One pruning method."""

    name: str
    """Lookup key (``engine prune --method``, a job's ``method``, run ids)."""
    label: str
    """What it is, in a few words (help texts)."""
    kind: str
    """One of :data:`KINDS`."""
    prune: str
    """``module:function`` of its ``prune(model, ratio, calib, *, args)``."""
    args: str
    """``module:Class`` of its options: a frozen dataclass in a torch-free module, one default
    per field, built by ``from_dict`` (a job's ``prune_args``; plan-time checks import it)."""
    calib: bool
    """Needs calibration token ids."""
    trained: bool = False
    """Trains while pruning: a job hands it its token stream and a state directory
    (``stream_factory``, ``seq_len``, ``state_dir``) and counts its tokens in the run's."""
    order: int = 100
    """Position in the reports' fixed colour order (lower first; equal: table order)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name}: kind {self.kind!r}; allowed: {', '.join(KINDS)}")

    @property
    def sparse(self) -> bool:
        return self.kind == "sparse"

    def args_type(self) -> type:
        """The options dataclass (imported on first use)."""
        return _resolve(self.args)

    def function(self) -> Callable:
        """The ``prune`` function (imports its module, torch with it)."""
        return _resolve(self.prune)


def _resolve(ref: str) -> object:
    module, attribute = ref.split(":")
    return getattr(importlib.import_module(module), attribute)


_P = "engine.pruning."
_SPARSE_ARGS = _P + "sparse_args:SparseArgs"

METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("depth", "ShortGPT block influence", "depth", _P + "depth_influence:prune", _P + "args:DepthArgs",
               calib=True, order=0),
    MethodSpec("depth-block", "Minitron contiguous block, by calibration loss", "depth", _P + "depth_block:prune",
               _P + "args:DepthArgs", calib=True, order=4),
    MethodSpec("depth-last", "drop the last layers (control)", "depth", _P + "depth_last:prune",
               _P + "args:DepthArgs", calib=False, order=5),
    MethodSpec("width", "Minitron importance: MLP neurons, GQA heads, hidden channels", "width",
               _P + "width:prune", _P + "width_shape:WidthArgs", calib=True, order=1),
    MethodSpec("width-search", "Minitron: K same-size shapes, short KD, best kept", "width", _P + "search:prune",
               _P + "args:SearchArgs", calib=True, trained=True, order=11),
    MethodSpec("targeted", "Sheared-LLaMA learned masks to an exact shape", "width", _P + "targeted:prune",
               _P + "targeted_shape:TargetedArgs", calib=True, trained=True, order=10),
    MethodSpec("2:4", "Wanda 2:4", "sparse", _P + "semistructured:prune", _SPARSE_ARGS, calib=True, order=2),
    MethodSpec("2:4-magnitude", "magnitude 2:4", "sparse", _P + "semistructured:prune_magnitude", _SPARSE_ARGS,
               calib=False, order=6),
    MethodSpec("2:4-sparsegpt", "SparseGPT 2:4", "sparse", _P + "semistructured:prune_sparsegpt", _SPARSE_ARGS,
               calib=True, order=7),
    MethodSpec("unstructured", "Wanda", "sparse", _P + "unstructured:prune", _SPARSE_ARGS, calib=True, order=3),
    MethodSpec("unstructured-magnitude", "magnitude", "sparse", _P + "unstructured:prune_magnitude", _SPARSE_ARGS,
               calib=False, order=8),
    MethodSpec("unstructured-sparsegpt", "SparseGPT", "sparse", _P + "unstructured:prune_sparsegpt", _SPARSE_ARGS,
               calib=True, order=9),
)}
"""Every pruning method, in the order help texts and error messages list them."""


class MethodSet(Set):
    """The names of the rows that satisfy a predicate, read from :data:`METHODS` at each use
    (a row added later, or by a test, is in it)."""

    def __init__(self, keep: Callable[[MethodSpec], bool]) -> None:
        self._keep = keep

    def __iter__(self) -> Iterator[str]:
        return (name for name, m in METHODS.items() if self._keep(m))

    def __contains__(self, name: object) -> bool:
        return name in METHODS and self._keep(METHODS[name])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"MethodSet({sorted(self)})"


NEEDS_CALIB = MethodSet(lambda m: m.calib)
TRAINED = MethodSet(lambda m: m.trained)
SPARSE = MethodSet(lambda m: m.sparse)


def get_method(name: str) -> MethodSpec:
    """The row of ``name``.

    Raises:
        BadInput: naming the allowed methods.
    """
    if name not in METHODS:
        raise BadInput(f"unknown pruning method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def display_order() -> list[str]:
    """Method names in the reports' colour order (a method keeps its colour whatever else ran)."""
    return sorted(METHODS, key=lambda name: METHODS[name].order)
