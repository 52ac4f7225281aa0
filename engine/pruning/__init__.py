"""Pruning methods: one file each, one public ``prune`` function per file, registered here.

Every method has the signature::

    prune(model, ratio, calib, *, args: dict | None = None) -> PruneReport

``model`` is a transformers ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` pruned in place (or a
new model returned in ``report.model`` when shapes change), ``ratio`` the target fraction of
parameters to remove (docs/design-contract.md counting), ``calib`` a LongTensor [n, seq_len] of calibration
token ids or None for methods that need none. The registry maps names to
``"module:function"`` strings so that importing it costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

METHODS: dict[str, str] = {
    # depth: drop whole decoder layers
    "depth": "engine.pruning.depth_influence:prune",  # ShortGPT block influence (default)
    "depth-block": "engine.pruning.depth_block:prune",  # Minitron contiguous block, calib loss
    "depth-last": "engine.pruning.depth_last:prune",  # drop the last layers (control)
    # width: shrink MLP neurons, attention heads and hidden channels (Minitron importance)
    "width": "engine.pruning.width:prune",
    "width-search": "engine.pruning.search:prune",  # Minitron: K same-size shapes, short KD, best kept
    # targeted: learned hard-concrete masks to an exact target shape (Sheared-LLaMA), trained
    "targeted": "engine.pruning.targeted:prune",
    # sparsity: masks kept through training
    "2:4": "engine.pruning.semistructured:prune",  # Wanda 2:4 (default scorer)
    "2:4-magnitude": "engine.pruning.semistructured:prune_magnitude",
    "2:4-sparsegpt": "engine.pruning.semistructured:prune_sparsegpt",
    "unstructured": "engine.pruning.unstructured:prune",  # Wanda (default scorer)
    "unstructured-magnitude": "engine.pruning.unstructured:prune_magnitude",
    "unstructured-sparsegpt": "engine.pruning.unstructured:prune_sparsegpt",
}

NEEDS_CALIB: frozenset[str] = frozenset(
    {"depth", "depth-block", "width", "2:4", "2:4-sparsegpt", "unstructured", "unstructured-sparsegpt",
     "targeted", "width-search"}
)

TRAINED: frozenset[str] = frozenset({"targeted", "width-search"})
"""Methods that train while pruning: a job hands them its token stream and a state directory
(``args``: ``stream_factory``, ``seq_len``, ``state_dir``) and counts their tokens
(``report.choices['prune_tokens']``) in the run's ``tokens``."""


def get_method(name: str) -> Callable:
    """The ``prune`` function registered under ``name``.

    Raises:
        KeyError: naming the allowed methods.
    """
    if name not in METHODS:
        raise KeyError(f"unknown pruning method {name!r}; allowed: {', '.join(METHODS)}")
    module, func = METHODS[name].split(":")
    return getattr(importlib.import_module(module), func)
