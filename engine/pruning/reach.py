"""Which target ratios a method reaches on a parent, from its shape alone (torch-free).

The methods map a target ratio to a concrete shape: depth to a layer count, width to
(hidden, FFN, heads), 2:4 to the number of covered layers. Those maps need only the parent's
shape, so ``engine grid plan`` runs them on each parent's known shape (a preset's, with the
grid's vocabulary, or a local parent's ``config.json``) and refuses a grid with an unreachable
(method, ratio) before any parent pretrains. The pruning code calls the same functions on the
loaded model, so plan and run cannot disagree.
"""

from __future__ import annotations

from typing import Any

from data.cli import BadInput
from data.methods import MethodSet
from data.models import ModelSpec

DEPTH_METHODS = MethodSet(lambda m: m.kind == "depth")
"""Methods that drop whole layers: the nearest layer count (:func:`depth_layers`)."""
WIDTH_METHODS = ("width",)
NM_METHODS = ("2:4", "2:4-magnitude", "2:4-sparsegpt")
ARCHS = {"llama": "llama", "qwen2": "qwen2"}
"""config.json ``model_type`` -> ``data.models`` arch: the architectures the engine prunes."""


def depth_layers(total: int, per_layer: int, n_layers: int, ratio: float, method: str) -> int:
    """Nearest layer count whose removal approaches ``ratio`` of the ``total`` parameters.

    Raises:
        BadInput: when the nearest count is 0 (for ratio > 0) or every layer; the message
            lists the ratios depth pruning can reach on this shape.
    """
    if ratio == 0:
        return 0
    n = int(round(ratio * total / per_layer))
    if 1 <= n < n_layers:
        return n
    reachable = [round(k * per_layer / total, 4) for k in range(1, n_layers)]
    shown = ", ".join(str(r) for r in reachable[:6]) + (f", ..., {reachable[-1]}" if len(reachable) > 6 else "")
    what = "removes no layer" if n < 1 else f"would remove all {n_layers} layers"
    raise BadInput(f"{method}: ratio {ratio} {what}; reachable ratios drop 1..{n_layers - 1} "
                   f"layers: {shown}")


def nm_layers(reachable: dict[int, float], ratio: float, n: int, m: int, tolerance: float) -> int:
    """How many (last) decoder layers N:M must cover to come nearest ``ratio``.

    Args:
        reachable: k covered layers -> the exact whole-model ratio.

    Raises:
        BadInput: no coverage comes within ``tolerance``; lists the reachable ratios.
    """
    k = min(reachable, key=lambda j: abs(reachable[j] - ratio))
    if abs(ratio - reachable[k]) > tolerance:
        listed = ", ".join(f"{r:.4f}" for r in reachable.values())
        raise BadInput(f"{n}:{m} removes {1 - n / m:.0%} of the linears of each covered decoder layer: "
                       f"on this model it reaches only {listed} (1..{len(reachable)} layers), not {ratio}; "
                       f"ask for one of those or use unstructured")
    return k


def _nm_reachable(spec: ModelSpec, n: int, m: int) -> dict[int, float]:
    """k -> whole-model ratio of N:M on the last k layers of ``spec`` (all layers are equal)."""
    d, f, q, kv = spec.hidden, spec.ffn, spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    linears = {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q),
               "gate_proj": (f, d), "up_proj": (f, d), "down_proj": (d, f)}  # (out, in)
    for name, (_, width) in linears.items():
        if width % m:
            raise BadInput(f"{n}:{m} needs input widths divisible by {m}; {name} has {width}: use unstructured")
    per_layer = sum(rows * cols // m * (m - n) for rows, cols in linears.values())
    return {k: k * per_layer / spec.params_total for k in range(1, spec.layers + 1)}


def check_reachable(spec: ModelSpec, method: str, ratio: float, args: dict[str, Any] | None = None) -> None:
    """Refuse a ``ratio`` that ``method`` cannot reach on ``spec``.

    Depth, width and 2:4 are checked; the other methods reach any ratio in (0, 1) or choose
    their shape while they train (targeted checks its target itself), so they pass.

    Raises:
        BadInput: naming the method, the ratio and what it can reach.
    """
    args = dict(args or {})
    if method in DEPTH_METHODS:
        depth_layers(spec.params_total, spec.layer_params, spec.layers, ratio, method)
    elif method in WIDTH_METHODS:
        from engine.pruning.width_shape import Base, WidthArgs, choose_shape

        known = {k: v for k, v in args.items() if k in WidthArgs.__dataclass_fields__}
        base = Base(spec.hidden, spec.heads, spec.kv_heads, spec.head_dim, spec.ffn, spec.layers, spec.vocab,
                    spec.tied, spec.qkv_bias)
        choose_shape(base, ratio, WidthArgs.from_dict(known))
    elif method in NM_METHODS:
        from engine.pruning.sparse_args import SparseArgs

        cfg = SparseArgs.from_dict(args)
        nm_layers(_nm_reachable(spec, cfg.n, cfg.m), ratio, cfg.n, cfg.m, cfg.tolerance)


def spec_from_config(config: dict[str, Any], name: str) -> ModelSpec:
    """The shape of a local parent from its ``config.json``.

    Raises:
        BadInput: an architecture the engine does not prune, or a config missing a shape field.
    """
    kind = config.get("model_type")
    if kind not in ARCHS:
        raise BadInput(f"parent {name!r} is a {kind!r} model (config.json model_type); "
                       f"allowed: {', '.join(ARCHS)} (Llama-3 / Qwen-2.5 architectures)")
    try:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return ModelSpec(name, "", ARCHS[kind], hidden, int(config["num_hidden_layers"]), heads,
                         int(config.get("num_key_value_heads") or heads),
                         int(config.get("head_dim") or hidden // heads), int(config["intermediate_size"]),
                         int(config["vocab_size"]), bool(config.get("tie_word_embeddings", False)),
                         kind == "qwen2" or bool(config.get("attention_bias", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"parent {name!r}: config.json lacks a usable shape field ({exc})") from None
