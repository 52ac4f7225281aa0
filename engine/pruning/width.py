"""Width pruning with Minitron activation importance (Muralidharan et al. 2024).

Importance, from one calibration pass over the parent (all axes scored before any surgery):

- MLP neuron ``j``: mean ``|silu(gate) * up|_j``, the input of ``down_proj``.
- attention head ``h``: mean L2 norm of the head's output (its slice of the ``o_proj`` input).
- hidden channel ``c``: mean ``|RMSNorm(x)|_c`` summed over every norm output in the model
  (each layer's two norms and the final norm: the inputs of q_proj, gate_proj and lm_head).

Shapes stay uniform across layers (one config), indices differ per layer. Heads are removed
GQA-aware: the same number of query heads per KV group, so ``heads % kv_heads == 0`` holds and
every kept query head still reads its own KV head; whole KV groups go only when asked
(``kv_heads``, or axis ``kv``). ``head_dim`` never changes (RoPE rotates pairs inside a head).

Allocation rule (shapes for a target ratio): over the free axes, every combination of hidden
and FFN sizes in multiples of ``multiple`` (8) and of query heads per KV group is scored by
``|achieved - target| + 0.01 * (max - min of log(kept fraction) over the free axes)``: the
nearest achievable ratio wins, and among near-equal ones the most uniform shrink. Shapes whose
hidden size is not a multiple of the query head count are skipped (transformers' config
validation rejects them when saving).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.pruning import common
from engine.pruning.report import PruneReport
from engine.pruning.width_shape import AXES, TOLERANCE, Base, WidthArgs, choose_shape  # noqa: F401 - re-exported

def _scores(model: nn.Module, calib: torch.Tensor, base: Base, batch_size: int) -> dict[str, torch.Tensor]:
    """Accumulated importance statistics, one calibration pass (see module docstring)."""
    mods: dict[str, nn.Module] = {}
    for i, layer in enumerate(common.decoder_layers(model)):
        mods[f"ffn.{i}"] = layer.mlp.down_proj
        mods[f"heads.{i}"] = layer.self_attn.o_proj
        mods[f"hidden.attn.{i}"] = layer.self_attn.q_proj
        mods[f"hidden.mlp.{i}"] = layer.mlp.gate_proj
    mods["hidden.final"] = model.lm_head

    def reduce(name: str, x: torch.Tensor) -> torch.Tensor:
        if name.startswith("heads."):
            x = x.reshape(*x.shape[:-1], -1, base.head_dim).norm(dim=-1)  # [b, T, H]
        return x.abs().sum(dim=tuple(range(x.dim() - 1)))  # [features]

    return common.capture_inputs(model, calib, mods, reduce, batch_size=batch_size)


def _slice_linear(lin: nn.Linear, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None) -> None:
    """Keep rows ``out_idx`` and columns ``in_idx`` of ``lin`` in place (bias with its rows)."""
    w = lin.weight.data
    if out_idx is not None:
        w = w.index_select(0, out_idx)
        if lin.bias is not None:
            lin.bias = nn.Parameter(lin.bias.data.index_select(0, out_idx).contiguous())
    if in_idx is not None:
        w = w.index_select(1, in_idx)
    # index_select copies only the kept slice; the old full tensor is freed on reassignment.
    lin.weight = nn.Parameter(w.contiguous())
    lin.out_features, lin.in_features = lin.weight.shape


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in ascending index order (keeps module order)."""
    return score.topk(k).indices.sort().values


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of the projection rows belonging to ``heads``."""
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def _kept_heads(score: torch.Tensor, base: Base, kv: int, hq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept KV heads, kept query heads) of one layer: whole groups first, then per group."""
    q0, q = base.heads // base.kv, hq // kv
    groups = score.reshape(base.kv, q0)  # query heads of a KV group are contiguous
    kv_keep = _top(groups.sum(1), kv)
    q_keep = [g * q0 + _top(groups[g], q) for g in kv_keep.tolist()]
    return kv_keep, torch.cat(q_keep)


def _prune_layer(layer: nn.Module, i: int, sc: dict[str, torch.Tensor], base: Base,
                 ffn: int, kv: int, hq: int) -> dict[str, list[int]]:
    """Shrink one decoder layer's heads and neurons; returns what it kept."""
    attn, mlp, kept = layer.self_attn, layer.mlp, {}
    if ffn < base.ffn:
        idx = _top(sc[f"ffn.{i}"], ffn)
        _slice_linear(mlp.gate_proj, out_idx=idx)
        _slice_linear(mlp.up_proj, out_idx=idx)
        _slice_linear(mlp.down_proj, in_idx=idx)
        mlp.intermediate_size = ffn
        kept["neurons"] = idx.tolist()
    if hq < base.heads:
        kv_keep, q_keep = _kept_heads(sc[f"heads.{i}"], base, kv, hq)
        q_rows, kv_rows = _head_rows(q_keep, base.head_dim), _head_rows(kv_keep, base.head_dim)
        _slice_linear(attn.q_proj, out_idx=q_rows)
        _slice_linear(attn.k_proj, out_idx=kv_rows)
        _slice_linear(attn.v_proj, out_idx=kv_rows)
        _slice_linear(attn.o_proj, in_idx=q_rows)
        attn.num_key_value_groups = hq // kv
        kept["heads"], kept["kv_heads"] = q_keep.tolist(), kv_keep.tolist()
    return kept


def _prune_hidden(model: nn.Module, idx: torch.Tensor) -> None:
    """Keep hidden channels ``idx`` everywhere: embeddings, norms, every projection, LM head."""
    emb = model.model.embed_tokens
    emb.weight = nn.Parameter(emb.weight.data.index_select(1, idx).contiguous())
    emb.embedding_dim = len(idx)
    for layer in common.decoder_layers(model):
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight = nn.Parameter(norm.weight.data[idx].contiguous())
        for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                    layer.mlp.gate_proj, layer.mlp.up_proj):
            _slice_linear(lin, in_idx=idx)
        _slice_linear(layer.self_attn.o_proj, out_idx=idx)
        _slice_linear(layer.mlp.down_proj, out_idx=idx)
        layer.hidden_size = len(idx)
        layer.mlp.hidden_size = len(idx)
    model.model.norm.weight = nn.Parameter(model.model.norm.weight.data[idx].contiguous())
    if model.config.tie_word_embeddings:
        model.lm_head.weight = emb.weight  # sliced once, re-tied
        model.lm_head.in_features = len(idx)
    else:
        _slice_linear(model.lm_head, in_idx=idx)


def _update_config(model: nn.Module, base: Base, d: int, f: int, kv: int, hq: int) -> None:
    cfg = model.config
    cfg.hidden_size, cfg.intermediate_size = d, f
    cfg.num_attention_heads, cfg.num_key_value_heads = hq, kv
    cfg.head_dim = base.head_dim  # no longer hidden // heads: must be explicit


def prune(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
          args: dict[str, Any] | None = None) -> PruneReport:
    """Shrink MLP neurons, attention heads and hidden channels to approach ``ratio``.

    Args:
        model: Llama / Qwen2 causal LM, pruned in place (parameters sliced, never copied whole).
        ratio: target fraction of parameters to remove (0 changes nothing).
        calib: LongTensor [n, seq_len] of calibration ids.
        args: :class:`WidthArgs` fields (``axes``, ``heads``, ``kv_heads``, ``ffn``, ``hidden``,
            ``multiple``, ``batch_size``).

    Raises:
        BadInput: missing calibration, unreachable ratio, GQA-breaking head counts, bad options.
    """
    ratio = common.check_ratio(ratio)
    a = WidthArgs.from_dict(args)
    base = Base.of(model)
    before = common.start(model)
    d, f, kv, hq, achieved = choose_shape(base, ratio, a)
    choices: dict[str, Any] = {"layers": []}
    if (d, f, kv, hq) != (base.hidden, base.ffn, base.kv, base.heads):
        sc = _scores(model, common.check_calib(calib, "width"), base, a.batch_size)
        for i, layer in enumerate(common.decoder_layers(model)):
            choices["layers"].append(_prune_layer(layer, i, sc, base, f, kv, hq))
        if d < base.hidden:
            hid = sum(v for k, v in sc.items() if k.startswith("hidden."))
            idx = _top(hid, d)
            _prune_hidden(model, idx)
            choices["hidden_channels"] = idx.tolist()
        _update_config(model, base, d, f, kv, hq)
    choices["shape"] = {"hidden": d, "ffn": f, "heads": hq, "kv_heads": kv, "head_dim": base.head_dim,
                        "layers": base.layers}
    choices["shape_before"] = {"hidden": base.hidden, "ffn": base.ffn, "heads": base.heads, "kv_heads": base.kv}
    if abs(achieved - ratio) > a.tolerance:
        notes_fixed = [f"all searched axes were fixed by the caller: target ratio {ratio} not used"]
    else:
        notes_fixed = []
    notes = notes_fixed + [f"shape hidden {base.hidden}->{d}, ffn {base.ffn}->{f}, heads {base.heads}->{hq}, "
             f"kv {base.kv}->{kv}; predicted ratio {achieved:.4f}"]
    return common.finish("width", ratio, model, before, choices, notes)
