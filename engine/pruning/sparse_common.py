"""Shared machinery of the sparse methods (2:4 and unstructured): scores, solver, masks.

What is pruned: the seven linear weights inside every decoder layer (q, k, v, o, gate, up,
down). Embeddings, the LM head, norms and biases stay dense, as in Wanda (Sun et al. 2023) and
SparseGPT (Frantar & Alistarh 2023): they are a small or sensitive share of the parameters.

Three scorers share one layer-by-layer driver (:func:`prune_layerwise`):

- ``magnitude``: ``|W|``; needs no calibration data.
- ``wanda``: ``|W_ij| * ||X_j||_2``, the weight times the L2 norm of its input feature over
  all calibration tokens.
- ``sparsegpt``: OBS-style column-wise pruning with reconstruction, using the Hessian
  ``H = X X^T`` of the layer's inputs (1% dampening, lazy updates in blocks of 128 columns).

The driver keeps memory bounded: it holds the hidden states entering ONE decoder layer for
all calibration sequences, prunes that layer's linears, and passes the PRUNED layer's outputs
on as the next layer's inputs (both papers do this: later layers see the errors of earlier
ones). Within a Llama / Qwen2 layer the linears are pruned group by group in one forward pass
(:func:`prune_layer_staged`). There is never a second copy of the model.

Masks are ``{parameter name: bool tensor}`` with True = keep; the trainer re-applies them
after every optimizer step with :func:`apply_masks`, because an optimizer step refills zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data.cli import BadInput
from engine.pruning.common import fp32_math
from engine.pruning.masks import PackedMasks
from engine.pruning.sparse_args import SCORERS, SparseArgs

TARGETS: tuple[str, ...] = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
"""Linear modules pruned inside each decoder layer (paths relative to the layer)."""

SHARED_INPUT: dict[str, str] = {
    "self_attn.k_proj": "self_attn.q_proj",
    "self_attn.v_proj": "self_attn.q_proj",
    "mlp.up_proj": "mlp.gate_proj",
}
"""Linears that read the very same input tensor as another one (Llama / Qwen2 blocks): their
input statistics are collected once, under the owner's name, which saves 3 of 7 Hessians."""

LINEAR_GROUPS: tuple[tuple[str, ...], ...] = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)
"""The targeted linears of a block in data-flow order, grouped by the input they share: the
staged driver prunes a group once the groups before it are pruned (and local reconstruction at
``layer`` granularity fits them in this order)."""

STAGED_LAYERS: tuple[str, ...] = ("LlamaDecoderLayer", "Qwen2DecoderLayer")
"""Decoder-layer classes whose forward is exactly ``h + attn(norm1(h))``, then ``h + mlp(norm2(h))``:
:func:`prune_layer_staged` replays it sub-module by sub-module (a test checks the equality);
other classes take the two-pass driver."""

GRAM_BLOCK = 128
"""Rows per block of the Hessian's upper triangle (:func:`add_gram`)."""


@dataclass(frozen=True)
class Pattern:
    """Which entries a method removes from one weight matrix."""

    kind: str
    """``n:m`` or ``unstructured``."""
    sparsity: float = 0.5
    """Unstructured: fraction of each targeted matrix removed (uniform over layers)."""
    n: int = 2
    m: int = 4
    group: str = "row"
    layers: tuple[int, ...] | None = None
    """Decoder layers to sparsify (None: all). N:M reaches ratios below its full-coverage one
    only by covering fewer layers."""

    def covers(self, index: int) -> bool:
        return self.layers is None or index in self.layers

    def n_prune(self, numel: int) -> int:
        """Entries removed from a matrix of ``numel`` entries (exact integer)."""
        if self.kind == "n:m":
            return numel // self.m * (self.m - self.n)
        return int(round(self.sparsity * numel))


# ---------------------------------------------------------------------------------------------
# Targets and counting.


def target_linears(layer: nn.Module) -> dict[str, nn.Linear]:
    """The prunable linears of one decoder layer, by path relative to the layer."""
    return {name: layer.get_submodule(name) for name in TARGETS}


def target_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full parameter name -> weight of every targeted linear in the model (in layer order)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, layer in _named_layers(model):
        for name, lin in target_linears(layer).items():
            out[f"{prefix}.{name}.weight"] = lin.weight
    return out


def _named_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # Full module names (e.g. "model.layers.3") so masks key on named_parameters() names.
    names = {id(mod): name for name, mod in model.named_modules()}
    return [(names[id(layer)], layer) for layer in model.model.layers]


def removable_count(model: nn.Module, pattern: Pattern) -> int:
    """Exact number of parameters ``pattern`` removes from ``model`` (targeted weights only)."""
    return sum(pattern.n_prune(w.numel()) for w in target_weights(model).values())


def total_params(model: nn.Module) -> int:
    """All parameters, tied embeddings once (docs/design-contract.md ``params_before``), without counting
    non-zeros (cheap: the ratio mapping needs only sizes)."""
    return sum(p.numel() for p in model.parameters())


def check_ratio_open(ratio: float) -> float:
    """``0 < ratio < 1`` or BadInput: a sparse method asked to remove nothing is a mistake."""
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or not 0.0 < ratio < 1.0:
        raise BadInput(f"ratio {ratio!r} is outside (0, 1): give the fraction of parameters to remove")
    return float(ratio)


# ---------------------------------------------------------------------------------------------
# Scores and masks (pure tensor functions; True = keep).


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """``|W|`` [out, in] in float32."""
    return weight.detach().float().abs()


def wanda_scores(weight: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """Wanda importance ``|W_ij| * ||X_j||_2`` [out, in].

    Args:
        weight: [out, in].
        sq_norms: [in], sum over calibration tokens of ``x_j ** 2``.
    """
    return weight.detach().float().abs() * sq_norms.float().sqrt().unsqueeze(0)


def unstructured_mask(scores: torch.Tensor, n_prune: int, group: str = "row") -> torch.Tensor:
    """Keep-mask removing exactly ``n_prune`` lowest-scoring entries of ``scores`` [out, in].

    ``layer`` compares all entries at once; ``row`` removes the same number from every output
    row (Wanda's per-output comparison), the remainder spread one each over the first rows so
    that the count stays exact. Ties are broken by position, so counts are always exact.
    (A k-th value threshold was measured slower than these on CPU.)
    """
    rows, cols = scores.shape
    if group == "layer":
        keep = torch.ones(rows * cols, dtype=torch.bool, device=scores.device)
        keep[torch.topk(scores.flatten(), n_prune, largest=False).indices] = False
        return keep.view(rows, cols)
    base, extra = divmod(n_prune, rows)
    per_row = torch.full((rows, 1), base, device=scores.device)  # [out, 1]
    per_row[:extra] += 1
    order = scores.argsort(dim=1)  # [out, in], lowest score first
    keep_sorted = torch.arange(cols, device=scores.device).unsqueeze(0) >= per_row  # [out, in]
    return torch.empty_like(keep_sorted).scatter_(1, order, keep_sorted)


def n_m_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Keep-mask with the ``n`` highest scores of every ``m`` consecutive inputs [out, in]."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // m, m)  # [out, in/m, m]
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return keep.view(rows, cols)


def check_n_m(mask: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive entries along the input (last) dimension
    keeps exactly ``n`` (works on a bool mask or on a weight: non-zeros count as kept)."""
    if mask.dim() != 2 or mask.shape[1] % m:
        return False
    kept = (mask != 0).reshape(mask.shape[0], -1, m).sum(dim=2)  # [out, in/m]
    return bool((kept == n).all())


# ---------------------------------------------------------------------------------------------
# SparseGPT solver (one weight matrix).


def inverse_hessian_chol(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1`` [in, in].

    Dead inputs (never non-zero on the calibration data) get a unit diagonal so H stays
    invertible; their weights then carry no reconstruction error. Dampening is raised tenfold
    (at most 3 times) when the factorisation still fails, e.g. with very few tokens.
    """
    H = hessian.float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    diag_mean = float(torch.diag(H).mean())
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for attempt in range(4):
        chol, info = torch.linalg.cholesky_ex(H + damp * 10 ** attempt * diag_mean * eye)
        if int(info) == 0:
            inv = torch.cholesky_inverse(chol)
            chol_inv, info = torch.linalg.cholesky_ex(inv, upper=True)
            if int(info) == 0:
                return chol_inv
    raise RuntimeError("SparseGPT: the calibration Hessian is not positive definite even with "
                       "1000x dampening; give more calibration tokens")


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, pattern: Pattern, *,
                    blocksize: int = 128, damp: float = 0.01,
                    hinv: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune one weight matrix with SparseGPT and reconstruct the kept weights.

    Columns are processed left to right; pruning column ``i`` leaves an error that the
    not-yet-processed columns absorb through the inverse Hessian (OBS update). Within a block
    the update is applied column by column (vectorised over all rows), across blocks lazily
    in one matmul. Unstructured masks are chosen per block from ``w^2 / [H^-1]_ii^2`` with an
    exact per-block count; N:M masks per group of ``m`` columns when the loop reaches it.

    Args:
        weight: [out, in], any float dtype (the solve runs in float32).
        hessian: [in, in], ``sum x x^T`` over calibration tokens (its scale does not matter).
        pattern: unstructured (``sparsity``) or ``n:m``.
        hinv: :func:`inverse_hessian_chol` of ``hessian`` when the caller already has it
            (linears that share an input share it).

    Returns:
        (new weight [out, in] in float32, keep-mask [out, in]).
    """
    # Work on W^T [in, out]: a column of W is a contiguous row here, so the per-column rank-1
    # updates run on contiguous memory (3-4x faster than on W's strided columns, measured on
    # SmolLM2's shapes); the arithmetic is the reference algorithm's.
    WT = weight.detach().float().t().contiguous()
    cols, rows = WT.shape
    Hinv = inverse_hessian_chol(hessian, damp) if hinv is None else hinv  # [in, in] upper
    total_prune = pattern.n_prune(WT.numel())
    prune = torch.zeros_like(WT, dtype=torch.bool)  # True = pruned (as in the reference code)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = WT[i1:i2], Hinv[i1:i2, i1:i2]  # W1: a contiguous view, updated in place
        d = torch.diag(Hinv1)  # [b]
        if pattern.kind == "unstructured":
            # Exact integer share of the layer's budget for this block's columns.
            k = total_prune * i2 * rows // WT.numel() - total_prune * i1 * rows // WT.numel()
            saliency = (W1 ** 2 / d.unsqueeze(1) ** 2).flatten()  # [b * out]
            block = torch.zeros_like(saliency, dtype=torch.bool)
            block[torch.topk(saliency, k, largest=False).indices] = True
            prune[i1:i2] = block.view(i2 - i1, rows)
        Err1 = _sparsegpt_block(W1, Hinv1, prune[i1:i2], pattern)
        WT[i2:] -= Hinv[i1:i2, i2:].T @ Err1  # lazy update of the columns to the right
    keep = ~prune
    return (WT * keep).t().contiguous(), keep.t().contiguous()


def _sparsegpt_block(W1: torch.Tensor, Hinv1: torch.Tensor, prune1: torch.Tensor,
                     pattern: Pattern) -> torch.Tensor:
    """Process one block in place, transposed: W1 [b, out] (row i = column i of the weight)
    becomes the pruned+updated block, ``prune1`` [b, out] gets the N:M choices; returns the
    scaled errors Err1 [b, out] for the lazy update."""
    Err1 = torch.empty_like(W1)
    d = torch.diag(Hinv1)
    m = pattern.m
    for i in range(W1.shape[0]):
        if pattern.kind == "n:m" and i % m == 0:
            saliency = W1[i:i + m] ** 2 / d[i:i + m].unsqueeze(1) ** 2  # [m, out]
            drop = torch.topk(saliency, m - pattern.n, dim=0, largest=False).indices
            prune1[i:i + m].scatter_(0, drop, True)
        w = W1[i]
        q = w.masked_fill(prune1[i], 0.0)
        err = (w - q) / d[i]  # [out]
        W1[i:].addr_(Hinv1[i, i:], err, alpha=-1.0)  # rank-1 update in place, contiguous rows
        W1[i] = q
        Err1[i] = err
    return Err1


# ---------------------------------------------------------------------------------------------
# Layer-by-layer driver.


class _Stop(Exception):
    """Raised by the capture hook to stop the forward pass after layer 0's inputs."""


@torch.no_grad()
def capture_first_inputs(model: nn.Module, calib: torch.Tensor,
                         batch_size: int) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Hidden states entering decoder layer 0, and the keyword arguments the model passes to
    its layers (causal mask, rotary position embeddings), one entry per calibration batch.

    Reusing the model's own kwargs keeps the exact attention semantics of its transformers
    version instead of rebuilding masks here.
    """
    layer_types = getattr(model.config, "layer_types", None) or []
    if len(set(layer_types)) > 1:
        # Layer 0's mask would be wrong for sliding-window layers (Qwen2 with
        # use_sliding_window); Qwen2.5 / Llama-3 checkpoints use full attention throughout.
        raise BadInput(f"sparse pruning needs one attention type in all layers; got {sorted(set(layer_types))}")
    inputs: list[torch.Tensor] = []
    kwargs_list: list[dict[str, Any]] = []

    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        inputs.append(hidden.detach())
        kwargs_list.append({k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache")})
        raise _Stop

    handle = model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, calib.shape[0], batch_size):
            try:
                model(input_ids=calib[start:start + batch_size], use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return inputs, kwargs_list


@torch.no_grad()
def collect_stats(layer: nn.Module, inputs: list[torch.Tensor], kwargs_list: list[dict[str, Any]],
                  hessian: bool) -> dict[str, torch.Tensor]:
    """Input statistics of the layer's linears over all calibration tokens.

    Returns owner name -> ``sum x^2`` [in] (Wanda) or ``sum x x^T`` [in, in] (SparseGPT),
    float32; linears sharing an input (``SHARED_INPUT``) read their owner's entry.
    """
    stats: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable:
        def hook(_mod: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()  # [tokens, in]
            if name not in stats:
                width = x.shape[1]
                stats[name] = x.new_zeros((width, width) if hessian else (width,))
            with fp32_math():
                add_stat(stats[name], x, hessian)
        return hook

    owners = [n for n in TARGETS if n not in SHARED_INPUT]
    handles = [layer.get_submodule(n).register_forward_pre_hook(make_hook(n)) for n in owners]
    try:
        for hidden, kwargs in zip(inputs, kwargs_list):
            layer(hidden, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return {name: symmetric(stat) if hessian else stat for name, stat in stats.items()}


def add_stat(stat: torch.Tensor, x: torch.Tensor, hessian: bool) -> None:
    """Accumulate one batch of inputs x [tokens, in] into ``stat``: ``sum x^2`` [in] or the
    upper block triangle of ``sum x x^T`` [in, in] (finish it with :func:`symmetric`)."""
    if hessian:
        add_gram(stat, x)
    else:
        stat.add_((x * x).sum(dim=0))


def add_gram(H: torch.Tensor, x: torch.Tensor, block: int = GRAM_BLOCK) -> None:
    """``H += x^T x`` on block rows ``i`` and columns ``>= i`` only: H is symmetric, so about half
    the flops of a full ``addmm`` (the Hessian of down_proj costs more than its forward). In
    place, one matmul per block row, no [in, in] temporary."""
    for i in range(0, x.shape[1], block):
        H[i:i + block, i:].addmm_(x[:, i:i + block].T, x[:, i:])


def symmetric(H: torch.Tensor) -> torch.Tensor:
    """The full matrix from the upper triangle that :func:`add_gram` filled."""
    upper = torch.triu(H)
    return upper + torch.triu(H, diagonal=1).T


@torch.no_grad()
def run_layer(layer: nn.Module, inputs: list[torch.Tensor], kwargs_list: list[dict[str, Any]]) -> None:
    """Replace each batch in ``inputs`` by the layer's output (in place: bounded memory)."""
    for i, (hidden, kwargs) in enumerate(zip(inputs, kwargs_list)):
        out = layer(hidden, **kwargs)
        inputs[i] = out[0] if isinstance(out, (tuple, list)) else out


def _input_of(module: nn.Module, sub: str, call: Callable[[], Any]) -> torch.Tensor:
    """The input of ``module.<sub>`` during ``call()``, which stops right there (nothing after
    ``sub`` runs: it is the last op of the attention / MLP)."""
    got: list[torch.Tensor] = []

    def hook(_mod: nn.Module, args: tuple) -> None:
        got.append(args[0].detach())
        raise _Stop

    handle = module.get_submodule(sub).register_forward_pre_hook(hook)
    try:
        call()
    except _Stop:
        pass
    finally:
        handle.remove()
    return got[0]


def _prune_group(layer: nn.Module, prefix: str, names: tuple[str, ...], xs: list[torch.Tensor], scorer: str,
                 pattern: Pattern, args: SparseArgs, masks: dict[str, torch.Tensor]) -> None:
    """Input statistics of ``xs`` (per batch [b, T, in]), then prune every linear reading them."""
    hessian = scorer == "sparsegpt"
    width = xs[0].shape[-1]
    stat = xs[0].new_zeros((width, width) if hessian else (width,), dtype=torch.float32)
    with fp32_math():
        for x in xs:
            add_stat(stat, x.reshape(-1, width).float(), hessian)
        stat = symmetric(stat) if hessian else stat
        hinv = inverse_hessian_chol(stat, args.damp) if hessian else None  # one factorisation per shared input
    for name in names:
        masks[f"{prefix}.{name}.weight"] = prune_linear(layer.get_submodule(name), scorer, pattern, stat, args, hinv)


@torch.no_grad()
def prune_layer_staged(layer: nn.Module, prefix: str, inputs: list[torch.Tensor], kwargs_list: list[dict[str, Any]],
                       scorer: str, pattern: Pattern, args: SparseArgs, masks: dict[str, torch.Tensor]) -> None:
    """Prune one decoder layer group by group (:data:`LINEAR_GROUPS`) in ONE forward pass, and
    leave the pruned layer's outputs in ``inputs``.

    Each group's statistics are read on the outputs of the groups before it, already pruned
    (SparseGPT's "true sequential" order), and every matmul of the layer runs once, on pruned
    weights: the two-pass driver runs the layer dense for statistics, then pruned again.
    Memory: besides the residual stream, one group's inputs (the MLP's are ffn wide).
    """
    qkv, o, gate_up, down = LINEAR_GROUPS
    attn, mlp = layer.self_attn, layer.mlp
    _prune_group(layer, prefix, qkv, [layer.input_layernorm(h) for h in inputs], scorer, pattern, args, masks)
    mixed = [_input_of(attn, "o_proj", lambda h=h, kw=kw: attn(hidden_states=layer.input_layernorm(h), **kw))
             for h, kw in zip(inputs, kwargs_list)]  # [b, T, heads * head_dim]
    _prune_group(layer, prefix, o, mixed, scorer, pattern, args, masks)
    for i in range(len(inputs)):
        inputs[i] = inputs[i] + attn.o_proj(mixed[i])
        mixed[i] = None  # free as we go
    _prune_group(layer, prefix, gate_up, [layer.post_attention_layernorm(h) for h in inputs], scorer, pattern,
                 args, masks)
    acts = [_input_of(mlp, "down_proj", lambda h=h: mlp(layer.post_attention_layernorm(h))) for h in inputs]
    _prune_group(layer, prefix, down, acts, scorer, pattern, args, masks)
    for i in range(len(inputs)):
        inputs[i] = inputs[i] + mlp.down_proj(acts[i])
        acts[i] = None


@torch.no_grad()
def prune_linear(lin: nn.Linear, scorer: str, pattern: Pattern, stat: torch.Tensor | None,
                 args: SparseArgs, hinv: torch.Tensor | None = None) -> torch.Tensor:
    """Prune one linear's weight in place with ``scorer``; returns its keep-mask [out, in]."""
    with fp32_math():
        return _prune_linear_fp32(lin, scorer, pattern, stat, args, hinv)


def _prune_linear_fp32(lin: nn.Linear, scorer: str, pattern: Pattern, stat: torch.Tensor | None,
                       args: SparseArgs, hinv: torch.Tensor | None) -> torch.Tensor:
    W = lin.weight
    if scorer == "sparsegpt":
        new, keep = sparsegpt_prune(W, stat, pattern, blocksize=args.blocksize, damp=args.damp, hinv=hinv)
        W.copy_(new.to(W.dtype))
    else:
        scores = magnitude_scores(W) if scorer == "magnitude" else wanda_scores(W, stat)
        if pattern.kind == "n:m":
            keep = n_m_mask(scores, pattern.n, pattern.m)
        else:
            keep = unstructured_mask(scores, pattern.n_prune(W.numel()), pattern.group)
    W.masked_fill_(~keep.to(W.device), 0.0)  # exact zeros even where a dtype cast could leave dust
    return keep.cpu()


@torch.no_grad()
def prune_layerwise(model: nn.Module, calib: torch.Tensor | None, scorer: str, pattern: Pattern,
                    args: SparseArgs) -> dict[str, torch.Tensor]:
    """Prune every targeted linear of ``model`` in place, one decoder layer at a time.

    Magnitude needs no data and skips the forward passes. Wanda and SparseGPT prune Llama /
    Qwen2 layers in stages (:func:`prune_layer_staged`, one forward per layer); other layer
    classes collect all input statistics, prune the seven linears, then run the pruned layer
    to make the next layer's inputs (two forwards).

    Returns:
        full parameter name -> keep-mask (bool, CPU; held bit-packed, engine.pruning.masks).
    """
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; allowed: {', '.join(SCORERS)}")
    was_training = model.training
    model.eval()
    masks = PackedMasks()
    needs_data = scorer != "magnitude"
    if needs_data:
        device = next(model.parameters()).device
        inputs, kwargs_list = capture_first_inputs(model, calib.to(device), args.batch_size)
    from engine.pruning.progress import bar

    named = _named_layers(model)
    for index, (prefix, layer) in enumerate(bar(named, f"prune ({scorer})", total=len(named))):
        if not pattern.covers(index):
            if needs_data:
                run_layer(layer, inputs, kwargs_list)
            continue
        if needs_data and type(layer).__name__ in STAGED_LAYERS:
            prune_layer_staged(layer, prefix, inputs, kwargs_list, scorer, pattern, args, masks)
            continue
        stats = collect_stats(layer, inputs, kwargs_list, scorer == "sparsegpt") if needs_data else {}
        with fp32_math():
            hinvs = {owner: inverse_hessian_chol(stat, args.damp) for owner, stat in stats.items()} \
                if scorer == "sparsegpt" else {}  # one factorisation per shared input, as in the staged path
        for name, lin in target_linears(layer).items():
            owner = SHARED_INPUT.get(name, name)
            masks[f"{prefix}.{name}.weight"] = prune_linear(lin, scorer, pattern, stats.get(owner), args,
                                                            hinvs.get(owner))
        del stats, hinvs  # free the Hessians before the next forward
        if needs_data:
            run_layer(layer, inputs, kwargs_list)
    model.train(was_training)
    return masks


# ---------------------------------------------------------------------------------------------
# Masks: apply, save, load, rebuild.


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned entries of ``model`` in place (call after every optimizer step).

    Names may carry a wrapper prefix on either side (DeepSpeed's ``module.``). Masks are moved
    to the parameter's device on first use and cached there by the caller if it keeps the
    returned dict; a mask naming no parameter is an error, never silently skipped.
    """
    params = {_strip(name): p for name, p in model.named_parameters()}
    for name, mask in masks.items():
        p = params.get(_strip(name))
        if p is None:
            raise KeyError(f"mask {name!r} matches no parameter of the model")
        if mask.device != p.device:
            mask = mask.to(p.device)
            masks[name] = mask  # keep the moved copy: next call costs no transfer
        p.mul_(mask)


def _strip(name: str) -> str:
    return name[len("module."):] if name.startswith("module.") else name


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write masks as a safetensors file (bool, True = keep), atomically; files of uint8 (1 = keep) load too."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu", torch.bool).contiguous() for k, v in masks.items()}, str(tmp),
              metadata={"format": "prunelaw-masks", "keep": "1"})
    tmp.replace(path)


def load_masks(path: str | Path) -> PackedMasks:
    """Read masks written by :func:`save_masks` back (bool tensors, held bit-packed).

    One tensor at a time: the whole file as bytes is 8x the packed masks.
    """
    from safetensors import safe_open

    masks = PackedMasks()
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            masks[name] = f.get_tensor(name).bool()
    return masks


def masks_from_model(model: nn.Module) -> dict[str, torch.Tensor]:
    """Rebuild keep-masks (``weight != 0``) of the targeted weights that contain zeros, e.g.
    after reloading a sparse model saved with ``save_pretrained``. A dense model gives {}."""
    out: dict[str, torch.Tensor] = {}
    for name, w in target_weights(model).items():
        keep = w.detach() != 0
        if not bool(keep.all()):
            out[name] = keep.cpu()
    return out


def sparsity_of(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Parameter name -> fraction pruned, rounded for reports."""
    return {name: round(1.0 - float(m.float().mean()), 6) for name, m in masks.items()}


# ---------------------------------------------------------------------------------------------
# The common tail of every sparse ``prune``: data check, pruning, report.


DENSE_NOTE = ("embeddings, lm_head, norms and biases stay dense; only the q/k/v/o/gate/up/down "
              "weights inside decoder layers are sparsified (standard practice: Wanda, SparseGPT)")


def run_sparse(model: nn.Module, method: str, ratio: float, calib: torch.Tensor | None, scorer: str,
               pattern: Pattern, cfg: SparseArgs, notes: list[str]) -> Any:
    """Prune ``model`` in place and return its :class:`~engine.pruning.report.PruneReport`.

    ``ratio`` has been validated and mapped to ``pattern`` by the caller; this checks the
    calibration data (not needed by magnitude), prunes, and records per-matrix sparsity.
    """
    from engine.pruning.common import check_calib, finish, start

    if scorer != "magnitude":
        calib = check_calib(calib, method)
    before = start(model)
    masks = prune_layerwise(model, calib, scorer, pattern, cfg)
    targeted = sum(m.numel() for m in masks.values())
    removed = sum(int((~m).sum()) for m in masks.values())
    choices = {
        "scorer": scorer,
        "pattern": f"{pattern.n}:{pattern.m}" if pattern.kind == "n:m" else "unstructured",
        "group": pattern.group if pattern.kind == "unstructured" and scorer != "sparsegpt" else None,
        "targets": list(TARGETS),
        "targeted_params": targeted,
        "targeted_fraction": round(targeted / before.counts.total, 6),
        "sparsity_targeted": round(removed / targeted, 6),
        "calib_tokens": 0 if calib is None or scorer == "magnitude" else int(calib.numel()),
        "sparsity_per_matrix": sparsity_of(masks),
    }
    return finish(method, ratio, model, before, choices, [DENSE_NOTE, *notes], masks)


def ratio_for_sparsity(model: nn.Module, method: str, sparsity: float) -> float:
    """The whole-model ``ratio`` at which ``method`` removes ``sparsity`` of every targeted linear.

    What Wanda / SparseGPT / llm-compressor users call sparsity (``0.5``: half of each linear)
    differs from ``ratio`` (a fraction of all parameters, embeddings included). N:M methods
    remove exactly ``1 - n/m`` of every covered linear, so only that sparsity is reachable.

    Raises:
        BadInput: a sparsity outside (0, 1), a structured method, or an N:M sparsity other
            than ``1 - n/m``.
    """
    if not isinstance(sparsity, (int, float)) or not 0.0 < sparsity < 1.0:
        raise BadInput(f"--sparsity {sparsity!r} is outside (0, 1): give the fraction of each linear to remove")
    targeted = sum(w.numel() for w in target_weights(model).values())
    if method.startswith("unstructured"):
        return sparsity * targeted / total_params(model)
    if method.startswith("2:4"):
        if abs(sparsity - 0.5) > 1e-9:
            raise BadInput(f"--sparsity {sparsity} is not reachable by {method}: 2:4 removes exactly 0.5 "
                           "of each covered linear; use --sparsity 0.5 or an unstructured method")
        return removable_count(model, Pattern("n:m")) / total_params(model)
    raise BadInput(f"--sparsity applies to the unstructured and 2:4 methods, not {method!r}; use --ratio")
