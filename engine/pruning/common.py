"""Shared pruning helpers: parameter counting, activation capture, eval loss, layer surgery.

Counting follows docs/design-contract.md: every parameter once (tied input/output embeddings once);
``nonembed`` drops ``embed_tokens`` and ``lm_head``. Activation capture runs the calibration
batches through the real transformers forward with hooks that reduce each activation to a
small per-feature statistic on the fly, so memory stays at one batch of activations.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from data.cli import BadInput
from engine.pruning.report import PruneReport

_EMBED_NAMES = ("embed_tokens", "lm_head")


class ParamCounts(NamedTuple):
    """Parameter counts of a model (docs/design-contract.md convention)."""

    total: int
    """All parameters, tied embeddings once."""
    nonembed: int
    """Without the input embedding and the LM head."""
    nonzero: int
    """Non-zero entries among ``total``."""


def _unique_params(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    # named_parameters() already yields a tied tensor once (under its first name), which is
    # exactly the "tied embeddings counted once" convention.
    yield from model.named_parameters()


def _is_embed(name: str) -> bool:
    return any(part in _EMBED_NAMES for part in name.split("."))


def count_params(model: nn.Module) -> ParamCounts:
    """``(total, nonembed, nonzero)`` of ``model``, tied embeddings counted once."""
    total = nonembed = nonzero = 0
    for name, p in _unique_params(model):
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
        if not _is_embed(name):
            nonembed += p.numel()
    return ParamCounts(total, nonembed, nonzero)


def count_nonzero_nonembed(model: nn.Module) -> int:
    """Non-zero parameters outside the embeddings and LM head (``nonembed_after``)."""
    return sum(int(torch.count_nonzero(p.detach())) for n, p in _unique_params(model) if not _is_embed(n))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``ModuleList`` of decoder layers of a Llama / Qwen2 causal LM."""
    return model.model.layers


def check_ratio(ratio: float) -> float:
    """Library-level ratio check: ``0 <= ratio < 1`` (0 is a no-op, useful for tests)."""
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or not 0.0 <= ratio < 1.0:
        raise BadInput(f"ratio {ratio!r} is outside [0, 1): give the fraction of parameters to remove")
    return float(ratio)


def check_calib(calib: torch.Tensor | None, method: str) -> torch.Tensor:
    """The calibration ids as a LongTensor [n, seq_len], or BadInput when missing/malformed."""
    if calib is None:
        raise BadInput(f"method {method!r} needs calibration data (--calib SHARDS_DIR|TEXT_FILE)")
    if calib.dim() != 2 or calib.dtype != torch.long or calib.numel() == 0:
        raise BadInput(f"calibration ids must be a non-empty LongTensor [n, seq_len], got "
                       f"{tuple(calib.shape)} {calib.dtype}")
    return calib


def iter_batches(ids: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Row batches of ``ids`` [n, seq_len] -> [b, seq_len]."""
    for start in range(0, ids.shape[0], batch_size):
        yield ids[start:start + batch_size]


@torch.no_grad()
def eval_loss(model: nn.Module, ids: torch.Tensor, batch_size: int = 4) -> float:
    """Mean next-token cross-entropy (nats) over all predicted tokens of ``ids`` [n, seq_len]."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in iter_batches(ids, batch_size):
        logits = model(input_ids=batch, use_cache=False).logits  # [b, T, V]
        # One row at a time: logits[i, :-1] is a contiguous view, so the only extra memory is
        # one row's log-softmax, not two more copies of the [b, T, V] logits (V = 49k-152k).
        for i in range(batch.shape[0]):
            total += float(nn.functional.cross_entropy(logits[i, :-1].float(), batch[i, 1:], reduction="sum"))
        count += batch[:, 1:].numel()
        del logits
    model.train(was_training)
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------
# Precision of the forward passes: bf16 where the machine runs it faster, statistics in fp32.

FORWARD_DTYPES: tuple[str, ...] = ("auto", "fp32", "bf16")


def choose_forward_dtype(requested: str, model: nn.Module, seq_len: int | None,
                         batch_size: int) -> tuple[str, str]:
    """(``fp32`` | ``bf16``, why) for the calibration forwards of pruning ``model`` on batches of
    ``batch_size`` x ``seq_len`` tokens (None: a method that runs no forward).

    ``auto``: bf16 on a GPU that computes it natively; on a CPU the machine probe times both
    at this model's shape, sequence length and batch (``engine.probe``, cached per machine).
    """
    from engine.probe import Workload, resolve_precision

    device_type = next(model.parameters()).device.type
    workload = Workload.of(model.config, seq_len, batch_size, "forward") if seq_len else None
    return resolve_precision(requested, device_type, None, workload)


@contextlib.contextmanager
def forward_precision(dtype: str, device_type: str) -> Iterator[None]:
    """Model forwards inside run in ``dtype`` under autocast: the weights (and whatever pruning
    writes into them) stay fp32; statistics and solvers opt out with :func:`fp32_math`."""
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        yield


@contextlib.contextmanager
def fp32_math() -> Iterator[None]:
    """Autocast off, on whichever device it is on: Hessians, importance sums, norms and the
    SparseGPT solve stay fp32 inside a bf16 :func:`forward_precision` (bf16 sums of thousands of
    tokens lose digits; a bf16 Cholesky fails on ill-conditioned Hessians)."""
    with contextlib.ExitStack() as stack:
        for device in ("cpu", "cuda"):
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        yield


def _first_tensor(args: tuple, kwargs: dict, key: str = "hidden_states") -> torch.Tensor:
    return args[0] if args else kwargs[key]


def _out_tensor(output: Any) -> torch.Tensor:
    # Decoder layers return a tensor in transformers 5, a tuple in 4.x.
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def capture_inputs(model: nn.Module, calib: torch.Tensor, modules: dict[str, nn.Module],
                   reduce: Callable[[str, torch.Tensor], torch.Tensor], *, output: bool = False,
                   batch_size: int = 4) -> dict[str, torch.Tensor]:
    """Sum of ``reduce(name, activation)`` over calibration batches, per module.

    Args:
        model: the causal LM to run.
        calib: LongTensor [n, seq_len].
        modules: name -> module whose input (or output, when ``output``) is observed.
        reduce: maps (name, activation [b, T, features]) to a small tensor (e.g. [features])
            summed over tokens; the sums are accumulated, so divide by tokens for a mean.
        output: observe the module's output instead of its first input.
        batch_size: rows per forward pass.

    Returns:
        name -> accumulated float32 statistic (on CPU).
    """
    stats: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Callable:
        def hook(_mod: nn.Module, args: tuple, kwargs: dict, out: Any = None) -> None:
            act = _out_tensor(out) if output else _first_tensor(args, kwargs)
            with fp32_math():
                val = reduce(name, act.detach().float()).cpu()
            stats[name] = stats[name] + val if name in stats else val
        return hook

    handles = []
    for name, mod in modules.items():
        if output:
            handles.append(mod.register_forward_hook(make_hook(name), with_kwargs=True))
        else:
            handles.append(mod.register_forward_pre_hook(
                lambda m, a, k, _h=make_hook(name): _h(m, a, k), with_kwargs=True))
    try:
        _run(model, calib, batch_size)
    finally:
        for h in handles:
            h.remove()
    return stats


def _run(model: nn.Module, calib: torch.Tensor, batch_size: int) -> None:
    from engine.pruning.progress import bar

    was_training = model.training
    model.eval()
    batches = -(-calib.shape[0] // batch_size)
    for batch in bar(iter_batches(calib, batch_size), "calibration pass", total=batches, unit="batch"):
        model(input_ids=batch, use_cache=False)
    model.train(was_training)


@torch.no_grad()
def block_influence(model: nn.Module, calib: torch.Tensor, batch_size: int = 4) -> list[float]:
    """ShortGPT block influence per layer: mean over tokens of ``1 - cos(x_in, x_out)``."""
    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    tokens = 0

    def make_hook(i: int) -> Callable:
        def hook(_mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            x_in = _first_tensor(args, kwargs).float()  # [b, T, d]
            x_out = _out_tensor(out).float()
            with fp32_math():
                cos = nn.functional.cosine_similarity(x_in, x_out, dim=-1)  # [b, T]
                sums[i] += float((1.0 - cos).sum())
        return hook

    handles = [layer.register_forward_hook(make_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        _run(model, calib, batch_size)
        tokens = calib.numel()
    finally:
        for h in handles:
            h.remove()
    return [s / tokens for s in sums]


# ---------------------------------------------------------------------------------------------
# Depth: ratio -> layer count, and the surgery that drops layers.


def per_layer_params(model: nn.Module) -> int:
    """Parameters of one decoder layer (all layers of these architectures have equal size)."""
    return sum(p.numel() for p in decoder_layers(model)[0].parameters())


def layers_to_drop(model: nn.Module, ratio: float, method: str) -> int:
    """Nearest layer count whose removal approaches ``ratio`` of the total parameters
    (:func:`engine.pruning.reach.depth_layers`, which ``engine grid plan`` runs on configs).

    Raises:
        BadInput: when the nearest count is 0 (for ratio > 0) or every layer; the message
            lists the ratios depth pruning can reach on this model.
    """
    from engine.pruning.reach import depth_layers

    return depth_layers(count_params(model).total, per_layer_params(model), len(decoder_layers(model)), ratio,
                        method)


def drop_layers(model: nn.Module, drop: list[int]) -> list[int]:
    """Remove decoder layers ``drop`` in place; returns the kept original indices.

    Re-indexes ``self_attn.layer_idx`` (the KV cache is addressed by it), slices per-layer
    config lists (Qwen2 ``layer_types``) and sets ``num_hidden_layers`` so that
    ``save_pretrained`` writes a config that rebuilds the same model.
    """
    layers = decoder_layers(model)
    drop_set = set(drop)
    if len(drop_set) >= len(layers):
        raise BadInput(f"cannot remove every layer ({len(layers)} of {len(layers)})")
    keep = [i for i in range(len(layers)) if i not in drop_set]
    model.model.layers = nn.ModuleList([layers[i] for i in keep])
    for new_idx, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_idx
        if hasattr(layer, "layer_idx"):
            layer.layer_idx = new_idx
    cfg = model.config
    for key in ("layer_types",):
        values = getattr(cfg, key, None)
        if isinstance(values, list) and len(values) == len(layers):
            setattr(cfg, key, [values[i] for i in keep])
    cfg.num_hidden_layers = len(keep)
    if hasattr(cfg, "max_window_layers") and cfg.max_window_layers > len(keep):
        cfg.max_window_layers = len(keep)
    return keep


# ---------------------------------------------------------------------------------------------
# Reports.


class Before(NamedTuple):
    """Counts of the parent taken before surgery, and the start time."""

    counts: ParamCounts
    t0: float


def start(model: nn.Module) -> Before:
    """Measure the parent before pruning (counts + clock)."""
    return Before(count_params(model), time.perf_counter())


def finish(method: str, ratio_target: float, model: nn.Module, before: Before,
           choices: dict[str, Any], notes: list[str] | None = None,
           masks: dict[str, torch.Tensor] | None = None) -> PruneReport:
    """Build the :class:`PruneReport` from the pruned model and the parent's counts.

    ``params_after`` counts the parameters the method kept: every stored entry minus the
    entries a sparse mask removed. Entries that happen to be zero without being pruned (Qwen
    biases at initialisation, dequantised weights) therefore do not inflate the ratio; the
    literal count of non-zero entries is ``nonzero_after``.
    """
    seconds = time.perf_counter() - before.t0
    after = count_params(model)
    masked = {name: int((~m).sum()) for name, m in (masks or {}).items()}
    removed_embed = sum(v for name, v in masked.items() if _is_embed(name))
    kept = after.total - sum(masked.values())
    n0 = before.counts.total
    return PruneReport(
        method=method, ratio_target=float(ratio_target), ratio=1.0 - kept / n0,
        params_before=n0, params_after=kept, nonembed_before=before.counts.nonembed,
        nonembed_after=after.nonembed - (sum(masked.values()) - removed_embed),
        nonzero_after=after.nonzero, total_after=after.total, choices=choices, seconds=seconds,
        notes=list(notes or []), masks=masks, model=model)


def depth_choices(model: nn.Module, keep: list[int], n_before: int, scores: list[float] | None) -> dict:
    """The ``choices`` dict of a depth method: kept/dropped layers, scores, resulting shape."""
    dropped = [i for i in range(n_before) if i not in set(keep)]
    out: dict[str, Any] = {"kept_layers": keep, "dropped_layers": dropped,
                           "shape": {"layers": len(keep), "hidden": model.config.hidden_size}}
    if scores is not None:
        out["scores"] = [round(float(s), 6) for s in scores]
    return out


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) per token at temperature T, scaled by T^2 (Hinton et al.).

    Args:
        student_logits: [B, T, V].
        teacher_logits: [B, T, V], no grad.
    """
    vocab = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, dim=-1)  # [B*T, V]
    t = F.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature ** 2
