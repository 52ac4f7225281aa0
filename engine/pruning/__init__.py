"""Pruning methods: one file each, one public ``prune`` function per file, listed in the method
table ``data.methods`` (one row per method: its function, options type, calibration, training).

Every method has the signature::

    prune(model, ratio, calib, *, args: dict | None = None) -> PruneReport

``model`` is a transformers ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` pruned in place (or a
new model returned in ``report.model`` when shapes change), ``ratio`` the target fraction of
parameters to remove (docs/design-contract.md counting), ``calib`` a LongTensor [n, seq_len] of calibration
token ids or None for methods that need none, ``args`` the fields of the row's options
dataclass. The table names functions as ``"module:function"`` strings, so importing it costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from data.methods import METHODS, NEEDS_CALIB, TRAINED  # noqa: F401 - the engine's names for the table's views


def get_method(name: str) -> Callable:
    """The ``prune`` function of method ``name``.

    Raises:
        KeyError: naming the allowed methods.
    """
    if name not in METHODS:
        raise KeyError(f"unknown pruning method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name].function()


def check_args(name: str, args: dict[str, Any] | None) -> Any:
    """Method ``name``'s options built from ``args`` (torch-free: its type's module only).

    Raises:
        BadInput: an unknown key or a bad value, naming the key and what is allowed.
    """
    from engine.pruning.args import options

    return options(METHODS[name].args_type(), args, name)
