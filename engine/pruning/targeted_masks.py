"""Hard-concrete (L0) masks for targeted pruning, applied to transformers' own modules by hooks.

Louizos et al. 2018 hard concrete, as in Sheared-LLaMA (Xia et al. 2023): each prunable unit
has a ``log_alpha``; a training forward samples ``z = clamp(sigmoid((logit(u) + log_alpha) /
beta) * (r - l) + l, 0, 1)`` with ``u ~ U(0, 1)``, ``beta = 2/3``, ``(l, r) = (-0.1, 1.1)``;
the probability that a unit is kept is ``sigmoid(log_alpha - beta * log(-l / r))``.

Mask groups (only the axes the target shrinks get one):

- ``layers`` [L]: scales both residual branches of a decoder layer (0 = the layer is identity);
- ``kv_heads`` [L, kv]: whole KV groups (a dropped group takes its query heads with it);
- ``heads`` [L, kv, q]: query heads inside each group (the hard mask keeps the same number per
  group, so GQA holds);
- ``ffn`` [L, ffn]: MLP neurons (the input of ``down_proj``);
- ``hidden`` [d]: residual-stream channels (embedding output and both branch outputs). RMSNorm
  averages over all d channels, so each norm's input is scaled by ``sqrt(d / d_kept)`` and its
  output by the inverse: with a hard mask the norm then equals the cut model's norm over the
  kept channels exactly (Sheared-LLaMA does the same by compressing the norm's input).

Hooks read the masks sampled once per forward from :class:`MaskSet`, so the model class stays
``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` and nothing is copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from engine.pruning import common
from engine.pruning.targeted_shape import Shape

BETA = 2.0 / 3.0
LIMIT_L, LIMIT_R = -0.1, 1.1
EPS = 1e-6
LOG_ALPHA_INIT = 4.0
"""Start near 'keep everything' (P(keep) ~ 0.99): pruning starts from the parent's function."""
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))
"""Sheared-LLaMA clamps log_alpha here after every step so that no unit is stuck."""
GROUPS = ("layers", "kv_heads", "heads", "ffn", "hidden")


def keep_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(z != 0) of each unit (the expected 'score' of Sheared-LLaMA's L0 module)."""
    return torch.sigmoid(log_alpha - BETA * math.log(-LIMIT_L / LIMIT_R))


def sample(log_alpha: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One hard-concrete draw (same shape as ``log_alpha``), differentiable in log_alpha."""
    u = torch.rand(log_alpha.shape, generator=generator, device="cpu").to(log_alpha.device, log_alpha.dtype)
    u = u.clamp(EPS, 1 - EPS)
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / BETA)
    return (s * (LIMIT_R - LIMIT_L) + LIMIT_L).clamp(0.0, 1.0)


def _top_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 mask keeping the ``k`` largest entries along the last dimension."""
    idx = scores.topk(k, dim=-1).indices
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


class MaskSet(nn.Module):
    """The learned masks and Lagrange multipliers of one parent -> target pruning.

    Calling it samples (training) or builds the exact hard masks (eval) and stores them in
    ``self.z`` for the hooks: ``layers`` [L], ``heads`` [L, H] (kv x per-group query), ``ffn``
    [L, F], ``hidden`` [D]; a missing key means that axis is not pruned.
    """

    def __init__(self, parent: Shape, target: Shape) -> None:
        super().__init__()
        self.parent, self.target = parent, target
        q0 = parent.heads // parent.kv_heads
        shapes = {"layers": (parent.layers,), "kv_heads": (parent.layers, parent.kv_heads),
                  "heads": (parent.layers, parent.kv_heads, q0), "ffn": (parent.layers, parent.ffn),
                  "hidden": (parent.hidden,)}
        self.log_alpha = nn.ParameterDict({
            g: nn.Parameter(torch.full(shapes[g], LOG_ALPHA_INIT)) for g in GROUPS if self.keep(g) < self.full(g)})
        # lambda_1 (linear) and lambda_2 (quadratic) per group; trained by gradient ASCENT (their
        # gradients are negated by a hook), so the constraint wins unless the target is met.
        # 1-d, not 0-d: DeepSpeed's initial parameter broadcast cannot view a 0-d tensor as bytes.
        self.lambdas = nn.ParameterDict({f"{k}_{g}": nn.Parameter(torch.zeros(1)) for g in self.log_alpha
                                         for k in ("lambda_1", "lambda_2")})
        for p in self.lambdas.values():
            p.register_hook(lambda grad: -grad)
        self.z: dict[str, torch.Tensor] = {}
        self.generator: torch.Generator | None = None

    def full(self, group: str) -> int:
        """Units per row of ``group`` in the parent."""
        p = self.parent
        return {"layers": p.layers, "kv_heads": p.kv_heads, "heads": p.heads // p.kv_heads, "ffn": p.ffn,
                "hidden": p.hidden}[group]

    def keep(self, group: str) -> int:
        """Units per row of ``group`` the target keeps."""
        t = self.target
        return {"layers": t.layers, "kv_heads": t.kv_heads, "heads": t.heads // t.kv_heads, "ffn": t.ffn,
                "hidden": t.hidden}[group]

    def forward(self) -> dict[str, torch.Tensor]:
        """Sample (training) or harden (eval) every mask into ``self.z``; returns it."""
        raw = {g: (sample(a, self.generator) if self.training else self.hard(g)) for g, a in self.log_alpha.items()}
        L = self.parent.layers
        z: dict[str, torch.Tensor] = {}
        if "layers" in raw:
            z["layers"] = raw["layers"]
        if "heads" in raw or "kv_heads" in raw:
            q = raw["heads"] if "heads" in raw else self._ones(L, self.parent.kv_heads, self.full("heads"))
            kv = raw["kv_heads"] if "kv_heads" in raw else self._ones(L, self.parent.kv_heads)
            z["heads"] = (kv[:, :, None] * q).reshape(L, -1)  # [L, H]: query heads of a group are contiguous
        for g in ("ffn", "hidden"):
            if g in raw:
                z[g] = raw[g]
        self.z = z
        return z

    def _ones(self, *shape: int) -> torch.Tensor:
        like = next(iter(self.log_alpha.values()))
        return torch.ones(shape, device=like.device, dtype=like.dtype)

    @torch.no_grad()
    def hard(self, group: str) -> torch.Tensor:
        """Exact 0/1 mask of ``group``: the target's count of largest ``log_alpha`` per row."""
        return _top_mask(self.log_alpha[group].detach(), self.keep(group))

    def constrain(self) -> None:
        """Clamp log_alpha after an optimizer step (Sheared-LLaMA's ``constrain_parameters``)."""
        with torch.no_grad():
            for a in self.log_alpha.values():
                a.clamp_(*LOG_ALPHA_RANGE)

    # -- the constrained objective --------------------------------------------------------------
    def expected(self) -> dict[str, torch.Tensor]:
        """Expected kept units per row of every group (P(keep) summed over the last axis)."""
        return {g: keep_probability(a).sum(-1) for g, a in self.log_alpha.items()}

    def lagrangian(self, progress: float) -> torch.Tensor:
        """Sum over groups of ``mean_rows(l1 * (s - t) + l2 * (s - t)^2)``.

        ``s`` is a row's expected sparsity, ``t`` the target sparsity ramped linearly from 0
        over the warm-up (``progress`` in [0, 1]), as in Sheared-LLaMA.
        """
        total = torch.zeros(1, device=next(iter(self.lambdas.values())).device)
        for g, kept in self.expected().items():
            s = 1.0 - kept / self.full(g)
            t = (1.0 - self.keep(g) / self.full(g)) * min(1.0, progress)
            gap = s - t
            total = total + (self.lambdas[f"lambda_1_{g}"] * gap + self.lambdas[f"lambda_2_{g}"] * gap ** 2).mean()
        return total.sum()  # a scalar (the multipliers are 1-d)

    @torch.no_grad()
    def expected_shape(self) -> dict[str, float]:
        """Expected layers / heads / kv_heads / ffn (per layer) / hidden, for the trajectory."""
        p, exp = self.parent, self.expected()
        out = {"layers": float(exp["layers"]) if "layers" in exp else float(p.layers)}
        kv = exp["kv_heads"].mean() if "kv_heads" in exp else torch.tensor(float(p.kv_heads))
        q = exp["heads"].mean() if "heads" in exp else torch.tensor(float(self.full("heads")))
        out["kv_heads"], out["heads"] = float(kv), float(kv * q)
        out["ffn"] = float(exp["ffn"].mean()) if "ffn" in exp else float(p.ffn)
        out["hidden"] = float(exp["hidden"]) if "hidden" in exp else float(p.hidden)
        return out

    def multipliers(self) -> dict[str, float]:
        return {k: round(float(v.detach()), 6) for k, v in self.lambdas.items()}


# -- hooks -------------------------------------------------------------------------------------

def attach(model: nn.Module, masks: MaskSet, head_dim: int) -> list[Any]:
    """Register the mask hooks on ``model``'s modules; returns the handles (``h.remove()``)."""
    # Hooks read masks.z at call time: MaskSet.forward rebinds it once per model forward.
    handles: list[Any] = []
    d_full = masks.parent.hidden

    def get(name: str) -> torch.Tensor | None:
        return masks.z.get(name)

    def scale_out(fn: Callable[[], torch.Tensor | None]) -> Callable:
        def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor | None:
            s = fn()
            return None if s is None else out * s.to(out.dtype)
        return hook

    def scale_in(fn: Callable[[], torch.Tensor | None]) -> Callable:
        def hook(_m: nn.Module, args: tuple) -> tuple | None:
            s = fn()
            return None if s is None else (args[0] * s.to(args[0].dtype), *args[1:])
        return hook

    def norm_factor() -> torch.Tensor | None:
        hid = get("hidden")
        if hid is None:
            return None
        kept = (hid != 0).sum().clamp(min=1)  # d_kept: the cut model's hidden size
        return torch.sqrt(d_full / kept.to(hid.dtype))

    def inverse_norm_factor() -> torch.Tensor | None:
        f = norm_factor()
        return None if f is None else 1.0 / f

    def branch(i: int) -> Callable[[], torch.Tensor | None]:
        def fn() -> torch.Tensor | None:
            lay, hid = get("layers"), get("hidden")
            if lay is None and hid is None:
                return None
            if hid is None:
                return lay[i]
            return hid if lay is None else lay[i] * hid
        return fn

    def head(i: int) -> Callable[[], torch.Tensor | None]:
        def fn() -> torch.Tensor | None:
            h = get("heads")
            return None if h is None else h[i].repeat_interleave(head_dim)  # [H * head_dim]
        return fn

    def neuron(i: int) -> Callable[[], torch.Tensor | None]:
        def fn() -> torch.Tensor | None:
            f = get("ffn")
            return None if f is None else f[i]
        return fn

    def norms(norm: nn.Module) -> None:
        handles.append(norm.register_forward_pre_hook(scale_in(norm_factor)))
        handles.append(norm.register_forward_hook(scale_out(inverse_norm_factor)))

    handles.append(model.model.embed_tokens.register_forward_hook(scale_out(lambda: get("hidden"))))
    for i, layer in enumerate(common.decoder_layers(model)):
        attn, mlp = layer.self_attn, layer.mlp
        handles.append(attn.o_proj.register_forward_pre_hook(scale_in(head(i))))
        handles.append(attn.o_proj.register_forward_hook(scale_out(branch(i))))
        handles.append(mlp.down_proj.register_forward_pre_hook(scale_in(neuron(i))))
        handles.append(mlp.down_proj.register_forward_hook(scale_out(branch(i))))
        norms(layer.input_layernorm)
        norms(layer.post_attention_layernorm)
    norms(model.model.norm)
    return handles


def detach(handles: list[Any]) -> None:
    for h in handles:
        h.remove()
