"""Width pruning's shape arithmetic: which (hidden, FFN, heads) a target ratio maps to (torch-free).

Split from :mod:`engine.pruning.width` so that ``engine grid plan`` can check, from a parent's
config alone, that every width ratio of a grid is reachable before any parent pretrains. The
allocation rule is described in :mod:`engine.pruning.width`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from data.cli import BadInput
from engine.pruning.args import options

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
        return options(cls, args, "width")


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
    def of(cls, model: Any) -> "Base":
        # model.model.layers, as engine.pruning.common.decoder_layers reads it: not imported, so
        # this torch-free module stays below the torch code that imports it
        cfg, attn = model.config, model.model.layers[0].self_attn
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
