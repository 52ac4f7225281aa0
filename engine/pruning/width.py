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

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from data.cli import BadInput
from engine.pruning import common
from engine.pruning.report import PruneReport

AXES = ("ffn", "heads", "hidden", "kv")
TOLERANCE = 0.02
"""Largest |achieved - target| accepted before the target counts as unreachable."""


@dataclass(frozen=True)
class WidthArgs:
    """Knobs of width pruning (``args`` dict keys)."""

    axes: tuple[str, ...] = ("ffn", "heads", "hidden")
    """Axes the search may shrink; ``kv`` also lets it drop whole KV groups."""
    heads: int | None = None
    """Fix the number of query heads (a multiple of the kept KV heads)."""
    kv_heads: int | None = None
    """Fix the number of KV heads (whole groups dropped, query heads per group kept)."""
    ffn: int | None = None
    """Fix the MLP intermediate size."""
    hidden: int | None = None
    """Fix the hidden (embedding) size."""
    multiple: int = 8
    """Granularity of searched hidden/FFN sizes (hardware-friendly shapes)."""
    batch_size: int = 4
    """Calibration rows per forward pass."""
    tolerance: float = TOLERANCE
    """Largest accepted gap between the target and the achieved ratio; small parents (hidden 16,
    FFN 40) move in ~7% steps, so a grid over them needs more than the default."""

    def __post_init__(self) -> None:
        bad = [a for a in self.axes if a not in AXES]
        if bad or not self.axes:
            raise BadInput(f"width axes {list(self.axes)} invalid; allowed: {', '.join(AXES)}")
        if self.multiple < 1 or self.batch_size < 1:
            raise BadInput(f"width multiple={self.multiple} and batch_size={self.batch_size} must be >= 1")
        if not 0 < self.tolerance < 0.5:
            raise BadInput(f"width tolerance={self.tolerance} invalid: allowed 0 < tolerance < 0.5")

    @classmethod
    def from_dict(cls, args: dict[str, Any] | None) -> "WidthArgs":
        """Build from the registry's ``args`` dict; unknown keys are a BadInput."""
        args = dict(args or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise BadInput(f"unknown width option(s) {unknown}; allowed: {sorted(known)}")
        if isinstance(args.get("axes"), str):
            args["axes"] = tuple(a.strip() for a in args["axes"].split(",") if a.strip())
        elif "axes" in args:
            args["axes"] = tuple(args["axes"])
        return cls(**args)


@dataclass(frozen=True)
class Base:
    """The parent's shape and the constants of its parameter count."""

    hidden: int
    heads: int
    kv: int
    head_dim: int
    ffn: int
    layers: int
    vocab: int
    tied: bool
    qkv_bias: bool

    @classmethod
    def of(cls, model: nn.Module) -> "Base":
        cfg, attn = model.config, common.decoder_layers(model)[0].self_attn
        return cls(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim,
                   cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size,
                   bool(cfg.tie_word_embeddings), attn.q_proj.bias is not None)

    def params(self, d: Any, f: Any, kv: Any, hq: Any) -> Any:
        """Total parameters (tied once) for hidden ``d``, FFN ``f``, ``kv`` / ``hq`` heads.

        Works elementwise on numpy arrays (broadcasting), like ``data.models.ModelSpec``.
        """
        hd = self.head_dim
        attn = d * hd * (hq + 2 * kv) + hq * hd * d + (hd * (hq + 2 * kv) if self.qkv_bias else 0)
        layer = attn + 3 * d * f + 2 * d
        return self.vocab * d * (1 if self.tied else 2) + self.layers * layer + d


def _size_options(full: int, fixed: int | None, free: bool, multiple: int, name: str) -> np.ndarray:
    if fixed is not None:
        if not 1 <= fixed <= full:
            raise BadInput(f"width {name}={fixed} invalid: allowed 1..{full} (the parent has {full})")
        return np.array([fixed])
    if not free:
        return np.array([full])
    opts = list(range(multiple, full, multiple)) + [full]
    step = max(1, len(opts) // 256)  # bound the search grid for 70B-class shapes
    return np.array(sorted(set(opts[::step]) | {full}))


def _head_options(base: Base, a: WidthArgs) -> list[tuple[int, int]]:
    """(kv_heads, query heads) pairs the search may use; validates fixed head counts."""
    q0 = base.heads // base.kv
    if a.kv_heads is not None and not 1 <= a.kv_heads <= base.kv:
        raise BadInput(f"width kv_heads={a.kv_heads} invalid: allowed 1..{base.kv}")
    kvs = [a.kv_heads] if a.kv_heads else (list(range(1, base.kv + 1)) if "kv" in a.axes else [base.kv])
    if a.heads is not None:
        valid = sorted({k * q for k in kvs for q in range(1, q0 + 1)})
        if a.heads not in valid:
            near = sorted(valid, key=lambda v: (abs(v - a.heads), v))[:2]
            raise BadInput(f"width heads={a.heads} breaks GQA with kv_heads={'/'.join(map(str, kvs))} "
                           f"(same query heads per KV group, at most {q0}); nearest valid: "
                           f"{', '.join(map(str, sorted(near)))}")
        return [(k, a.heads) for k in kvs if a.heads % k == 0 and a.heads // k <= q0]
    qs = range(1, q0 + 1) if "heads" in a.axes else [q0]
    return [(k, k * q) for k in kvs for q in qs]


def choose_shape(base: Base, ratio: float, a: WidthArgs) -> tuple[int, int, int, int, float]:
    """``(hidden, ffn, kv_heads, heads, achieved ratio)`` by the module's allocation rule.

    Raises:
        BadInput: when no shape on the allowed axes comes within ``TOLERANCE`` of ``ratio``.
    """
    d = _size_options(base.hidden, a.hidden, "hidden" in a.axes, a.multiple, "hidden")
    f = _size_options(base.ffn, a.ffn, "ffn" in a.axes, a.multiple, "ffn")
    kv, hq = (np.array(v) for v in zip(*_head_options(base, a)))
    D, F, H = d[:, None, None], f[None, :, None], np.arange(len(kv))[None, None, :]
    p0 = base.params(base.hidden, base.ffn, base.kv, base.heads)
    ach = 1.0 - base.params(D, F, kv[H], hq[H]) / p0  # [nd, nf, nh]
    logs = [np.log(D / base.hidden) + 0 * ach, np.log(F / base.ffn) + 0 * ach, np.log(hq[H] / base.heads) + 0 * ach]
    free = [i for i, n in enumerate(("hidden", "ffn", "heads")) if n in a.axes or (n == "heads" and "kv" in a.axes)]
    spread = (np.max([logs[i] for i in free], 0) - np.min([logs[i] for i in free], 0)) if free else 0 * ach
    # transformers' LlamaConfig refuses hidden % heads != 0 at save time (even with an
    # explicit head_dim), so such shapes are not offered.
    valid = (D % hq[H]) == 0
    if not valid.any():
        raise BadInput(f"width: no hidden size among the allowed ones is a multiple of the query "
                       f"head count {sorted(set(hq.tolist()))} (transformers requires it)")
    score = np.where(valid, np.abs(ach - ratio) + 0.01 * spread, np.inf)
    i, j, k = np.unravel_index(int(np.argmin(score)), score.shape)
    best = float(ach[i, j, k])
    fixed = {"hidden": a.hidden, "ffn": a.ffn, "heads": a.heads, "kv": a.kv_heads}
    # When every searched axis is pinned by the caller, the shape decides the ratio.
    if abs(best - ratio) > a.tolerance and not all(fixed[ax] is not None for ax in a.axes):
        reachable = ach[np.broadcast_to(valid, ach.shape)]
        raise BadInput(f"width on axes {','.join(a.axes)} cannot reach ratio {ratio} within tolerance "
                       f"{a.tolerance}: nearest achievable is {best:.4f}; reachable range "
                       f"{float(reachable.min()):.4f}..{float(reachable.max()):.4f}")
    return int(d[i]), int(f[j]), int(kv[k]), int(hq[k]), best


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
