"""Local reconstruction after pruning: fit one small pruned submodel at a time to the parent.

Each submodel of the pruned model (one linear, one decoder block, or ``K`` consecutive
blocks: the *granularity*) is trained with Adam to reproduce the unpruned parent's
activations at the same place, on a small calibration set. What "the same place" means
depends on what pruning did, and is read from the pruning report's ``choices``:

- sparse (unstructured, 2:4): same shapes; the keep-masks stay fixed during the fit (gradients
  and weights are masked at every step), so the model is exactly as sparse after it;
- width: the parent's block output is matched on the *kept hidden channels* only, through the
  recorded index map ``hidden_channels`` (a shrunk hidden size); per-linear targets are the
  parent linear's output on the kept rows (kept heads, KV heads, neurons, hidden channels);
- depth: pruned block ``j`` stands at parent index ``kept_layers[j]``; its target is the
  parent's output there, so the block right *after* a removed span learns to stand in for
  the span (a removed block itself has nothing left to fit).

Memory: the pruned model is the only model in memory. The parent is read one decoder layer at
a time from a safetensors file (the source directory's own weights, or a file written before
pruning), so the full model never has two copies. Activations: the pruned path's hidden states
and the parent's, for all calibration sequences, at the current submodel only.

Inputs of a submodel come from the pruned path (the outputs of the already reconstructed
submodels before it), as in SparseGPT's layer-by-layer driver: later submodels learn to
correct the errors of earlier ones.

Resumable: with a ``state_dir``, each finished submodel's weights and error statistics are
written there (atomically) and a rerun with the same inputs skips them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from data.cli import BadInput
from engine.pruning.progress import counter
from engine.pruning.recon_args import GRANULARITIES, ReconArgs, parse_granularity  # noqa: F401 (re-exported)
from engine.memory import mmap_large_allocations, release_free_heap
from engine.pruning.masks import PackedMasks
from engine.pruning.sparse_common import LINEAR_GROUPS, _named_layers, _Stop, capture_first_inputs


@dataclass
class ReconReport:
    """What one reconstruction did (JSON-ready via :meth:`to_dict`)."""

    granularity: str
    calib_sequences: int
    calib_seq_len: int
    steps: int
    """Adam steps per submodel."""
    lr: float
    seconds: float = 0.0
    units: list[dict[str, Any]] = field(default_factory=list)
    """Per submodel: blocks (pruned indices), parent_blocks, linear (layer granularity),
    err_before / err_after (relative squared error ``sum (y - t)^2 / sum t^2`` on the
    calibration set), seconds."""
    resumed_units: int = 0
    """Submodels loaded from an earlier, interrupted run instead of being fitted again."""

    @property
    def calib_tokens(self) -> int:
        return self.calib_sequences * self.calib_seq_len

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "calib_tokens": self.calib_tokens}


# ---------------------------------------------------------------------------------------------
# The parent, one decoder layer at a time.


class ParentLayers:
    """The unpruned parent's embedding and decoder layers, read lazily from safetensors.

    ``files`` hold HF parameter names (``model.layers.3.mlp.up_proj.weight``): a
    ``save_pretrained`` directory's own weights (sharded or not), or a file written by
    :meth:`save` before pruning an in-memory model.
    """

    def __init__(self, files: list[Path], config: Any, layer_cls: type, dtype: torch.dtype) -> None:
        from safetensors import safe_open

        self.config, self.layer_cls, self.dtype = config, layer_cls, dtype
        self._where: dict[str, Path] = {}
        for path in files:
            with safe_open(str(path), framework="pt") as f:
                self._where.update({k: path for k in f.keys()})
        if "model.embed_tokens.weight" not in self._where:
            raise BadInput(f"parent weights {', '.join(map(str, files))} hold no model.embed_tokens.weight")

    @classmethod
    def save(cls, model: nn.Module, path: Path) -> ParentLayers:
        """Write ``model``'s embedding and decoder layers to ``path`` (call before pruning)."""
        import copy

        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                   if k.startswith(("model.layers.", "model.embed_tokens."))}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)
        return cls([path], copy.deepcopy(model.config), type(model.model.layers[0]),
                   next(model.parameters()).dtype)

    @classmethod
    def from_dir(cls, folder: Path, like: nn.Module, config: Any = None) -> ParentLayers | None:
        """The parent read from its own HF directory (None when it holds no safetensors).

        Layers are rebuilt with ``like``'s decoder-layer class and dtype (a bf16 checkpoint read
        for an fp32 model is upcast exactly as ``from_pretrained(dtype=float32)`` does) and
        ``config`` (default: ``like``'s, i.e. ``like`` is the parent loaded from ``folder``).
        """
        import copy

        files = [f for f in sorted(Path(folder).glob("*.safetensors")) if f.name != "masks.safetensors"]
        if not files:
            return None
        config = copy.deepcopy(config if config is not None else like.config)
        if getattr(config, "_attn_implementation", None) is None:
            config._attn_implementation = like.config._attn_implementation
        return cls(files, config, type(like.model.layers[0]), next(like.parameters()).dtype)

    def _tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        out: dict[str, torch.Tensor] = {}
        for path in sorted({p for k, p in self._where.items() if k.startswith(prefix)}):
            with safe_open(str(path), framework="pt") as f:
                out.update({k[len(prefix):]: f.get_tensor(k).to(self.dtype) for k in f.keys()
                            if k.startswith(prefix)})
        return out

    def embed(self, ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        """Parent input embeddings [b, T, d0] of ``ids`` [n, T], in batches of ``batch_size``."""
        weight = self._tensors("model.embed_tokens.")["weight"].to(ids.device)
        return [F.embedding(ids[i:i + batch_size], weight) for i in range(0, ids.shape[0], batch_size)]

    def layer(self, index: int, device: torch.device) -> nn.Module:
        """Parent decoder layer ``index``, rebuilt from the config and loaded (eval mode)."""
        state = self._tensors(f"model.layers.{index}.")
        if not state:
            raise BadInput(f"parent weights have no decoder layer {index}")
        with torch.device("meta"):
            layer = self.layer_cls(self.config, layer_idx=index)
        layer.load_state_dict(state, strict=True, assign=True)
        return layer.to(device).eval().requires_grad_(False)


class ModuleParent:
    """The parent when it is in memory anyway (a trainer's KD teacher): :class:`ParentLayers`'s
    interface over a loaded causal LM, without any copy."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.config = model, model.config

    @torch.no_grad()
    def embed(self, ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        emb = self.model.model.embed_tokens
        return [emb(ids[i:i + batch_size]) for i in range(0, ids.shape[0], batch_size)]

    def layer(self, index: int, device: torch.device) -> nn.Module:
        return self.model.model.layers[index]


# ---------------------------------------------------------------------------------------------
# Where each pruned block and linear stands in the parent.


@dataclass(frozen=True)
class Mapping:
    """Pruned block ``j`` sits at parent layer ``parent_of[j]``; ``hidden`` indexes the kept
    hidden channels (None: all kept); ``rows[j][linear]`` the kept output rows of a linear."""

    parent_of: list[int]
    hidden: torch.Tensor | None
    rows: list[dict[str, torch.Tensor | None]]


def _head_rows(heads: list[int], head_dim: int) -> torch.Tensor:
    h = torch.tensor(heads, dtype=torch.long)
    return (h[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def _rows_of(entry: dict[str, Any], head_dim: int, hidden: torch.Tensor | None) -> dict[str, torch.Tensor | None]:
    q = _head_rows(entry["heads"], head_dim) if "heads" in entry else None
    kv = _head_rows(entry["kv_heads"], head_dim) if "kv_heads" in entry else None
    ffn = torch.tensor(entry["neurons"], dtype=torch.long) if "neurons" in entry else None
    return {"self_attn.q_proj": q, "self_attn.k_proj": kv, "self_attn.v_proj": kv, "self_attn.o_proj": hidden,
            "mlp.gate_proj": ffn, "mlp.up_proj": ffn, "mlp.down_proj": hidden}


def plan_mapping(model: nn.Module, parent_config: Any, choices: dict[str, Any],
                 masks: dict[str, torch.Tensor] | None) -> Mapping:
    """Read the index map of a pruned ``model`` from its pruning ``choices``.

    Raises:
        BadInput: the shapes differ from the parent's and the report does not say how (no
            ``kept_layers`` / ``hidden_channels``), or nothing says what was pruned at all.
    """
    cfg = model.config
    n_s, n_p = cfg.num_hidden_layers, parent_config.num_hidden_layers
    kept = choices.get("kept_layers")
    if n_s != n_p and (kept is None or len(kept) != n_s):
        raise BadInput(f"reconstruction: the pruned model has {n_s} layers, the parent {n_p}, and the "
                       "pruning report names no kept_layers (index map) to match them")
    parent_of = [int(i) for i in kept] if n_s != n_p else list(range(n_s))
    hidden = None
    if cfg.hidden_size != parent_config.hidden_size:
        idx = choices.get("hidden_channels")
        if idx is None or len(idx) != cfg.hidden_size:
            raise BadInput(f"reconstruction: hidden size {parent_config.hidden_size} -> {cfg.hidden_size} "
                           "but the pruning report has no hidden_channels index map")
        hidden = torch.tensor(idx, dtype=torch.long)
    per_layer = choices.get("layers") or []
    if not masks and n_s == n_p and hidden is None and not any(per_layer):
        raise BadInput("reconstruction: the model has no sparsity masks and its pruning report no index "
                       "map (kept_layers, hidden_channels, heads/neurons): nothing says what was pruned")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rows = [_rows_of(per_layer[j] if j < len(per_layer) else {}, head_dim, hidden) for j in range(n_s)]
    return Mapping(parent_of, hidden, rows)


# ---------------------------------------------------------------------------------------------
# Resumable progress.


class Progress:
    """Per-submodel results on disk: ``progress.json`` + ``unit_<u>.safetensors`` (weights)."""

    def __init__(self, folder: Path | None, fingerprint: str) -> None:
        self.folder, self.fingerprint = folder, fingerprint
        self.records: dict[int, dict[str, Any]] = {}
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        doc_path = folder / "progress.json"
        if doc_path.is_file():
            doc = json.loads(doc_path.read_text())
            if doc.get("fingerprint") == fingerprint:
                self.records = {int(k): v for k, v in doc["units"].items()}

    def done(self, unit: int) -> dict[str, Any] | None:
        return self.records.get(unit)

    def load(self, unit: int, modules: dict[str, nn.Module]) -> None:
        from safetensors.torch import load_file

        state = load_file(str(self.folder / f"unit_{unit:04d}.safetensors"))
        with torch.no_grad():
            for key, mod in modules.items():
                own = {k[len(key) + 1:]: v for k, v in state.items() if k.startswith(key + ".")}
                for name, p in mod.named_parameters():
                    p.copy_(own[name].to(p.device, p.dtype))

    def save(self, unit: int, modules: dict[str, nn.Module], record: dict[str, Any]) -> None:
        self.records[unit] = record
        if self.folder is None:
            return
        from safetensors.torch import save_file

        weights = self.folder / f"unit_{unit:04d}.safetensors"
        tmp = weights.with_name(weights.name + ".tmp")
        save_file({f"{key}.{n}": p.detach().cpu().contiguous() for key, mod in modules.items()
                   for n, p in mod.named_parameters()}, str(tmp))
        tmp.replace(weights)  # weights first, then the record that says they are complete
        doc = {"fingerprint": self.fingerprint, "units": {str(k): v for k, v in self.records.items()}}
        tmp_doc = self.folder / "progress.json.tmp"
        tmp_doc.write_text(json.dumps(doc, indent=1))
        tmp_doc.replace(self.folder / "progress.json")


def fingerprint(args: ReconArgs, calib: torch.Tensor, model: nn.Module, masks: dict[str, torch.Tensor] | None) -> str:
    """Hash of everything that decides the result: a changed input never resumes stale work."""
    h = hashlib.sha1(json.dumps(asdict(args), sort_keys=True).encode())
    h.update(calib.detach().cpu().numpy().tobytes())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    packed = PackedMasks.of(masks)
    for name in sorted(packed):
        h.update(name.encode())
        h.update(packed.packed(name))
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Fitting one submodel.


def _out(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _rel_error(forward: Callable[[int], torch.Tensor], target: Callable[[int], torch.Tensor], n: int) -> float:
    num = den = 0.0
    with torch.no_grad():
        for i in range(n):
            y, t = forward(i).float(), target(i).float()
            num += float(((y - t) ** 2).sum())
            den += float((t ** 2).sum())
    return num / max(den, 1e-30)


def fit(forward: Callable[[int], torch.Tensor], params: list[tuple[nn.Parameter, torch.Tensor | None]],
        target: Callable[[int], torch.Tensor], n: int, args: ReconArgs, seed: int) -> tuple[float, float]:
    """Adam on ``mean (forward(i) - target(i))^2``; masked entries stay exactly zero.

    A fit that ends with a larger calibration error than it started with (too large a
    learning rate for too few steps) is undone: reconstruction never makes a submodel worse
    on the data it sees. The saved copy is one submodel's parameters.

    Args:
        forward: batch index -> the submodel's output [b, T, features] (with grad).
        params: (parameter, bool keep-mask or None) pairs the fit may change.
        target: batch index -> the parent's activation at the same place [b, T, features].
        n: calibration batches.

    Returns:
        (relative error before, after) on all calibration batches.
    """
    release_free_heap()
    before = _rel_error(forward, target, n)
    saved = [p.detach().clone() for p, _ in params]
    flags = [p.requires_grad for p, _ in params]
    for p, _ in params:
        p.requires_grad_(True)
    # foreach=False: the multi-tensor step allocates temporaries the size of all parameters at
    # once (about one more copy of the submodel); per-parameter it needs one tensor's worth.
    opt = torch.optim.Adam([p for p, _ in params], lr=args.lr, foreach=False)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    with torch.enable_grad():
        for _ in range(args.steps):
            if not order:
                order = torch.randperm(n, generator=gen).tolist()
            i = order.pop()
            loss = F.mse_loss(forward(i).float(), target(i).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p, mask in params:
                if mask is not None:
                    p.grad.mul_(mask)  # Adam's moments never see the pruned entries
            opt.step()
            with torch.no_grad():
                for p, mask in params:
                    if mask is not None:
                        p.mul_(mask)  # exact zeros: Adam's eps can move a zero-gradient entry
            release_free_heap()  # the step's freed activations (engine.memory)
    del opt
    for (p, _), flag in zip(params, flags):
        p.requires_grad_(flag)  # a later trainer picks parameters by this flag
        p.grad = None
    after = _rel_error(forward, target, n)
    if not after < before:
        with torch.no_grad():
            for (p, _), old in zip(params, saved):
                p.copy_(old)
        after = before
    return before, after


# ---------------------------------------------------------------------------------------------
# The driver.


@dataclass
class _Paths:
    """Activations of the current position, one entry per calibration batch."""

    student: list[torch.Tensor]
    """Hidden states entering the next pruned block [b, T, d]."""
    parent: list[torch.Tensor]
    """The parent's hidden states at the matching place [b, T, d0]."""
    kwargs: list[dict[str, Any]]
    """The model's per-batch layer keyword arguments (causal mask, rotary embeddings)."""
    parent_done: int = -1
    """Last parent layer applied to ``parent``."""


@torch.no_grad()
def _advance_parent(paths: _Paths, parent: ParentLayers | ModuleParent, upto: int, device: torch.device) -> None:
    """Run parent layers ``parent_done + 1 .. upto`` on the parent path, one layer in memory."""
    for index in range(paths.parent_done + 1, upto + 1):
        layer = parent.layer(index, device)
        for i, (h, kw) in enumerate(zip(paths.parent, paths.kwargs)):
            paths.parent[i] = _out(layer(h, **kw))
        del layer
    paths.parent_done = max(paths.parent_done, upto)


@torch.no_grad()
def _run_blocks(states: list[torch.Tensor], kwargs: list[dict[str, Any]], blocks: list[nn.Module]) -> None:
    """Replace each batch of hidden ``states`` by the output of ``blocks`` (in place)."""
    for i, kw in enumerate(kwargs):
        h = states[i]
        for block in blocks:
            h = _out(block(h, **kw))
        states[i] = h


def _select(t: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    return t if idx is None else t.index_select(-1, idx.to(t.device))


def _masked_params(module: nn.Module, prefix: str, masks: dict[str, torch.Tensor]) -> list[tuple[nn.Parameter, Any]]:
    out = []
    for name, p in module.named_parameters():
        mask = masks.get(f"{prefix}.{name}")
        # bool, not the parameter's dtype: a float copy of the masks is one more submodel
        out.append((p, None if mask is None else mask.to(p.device, torch.bool)))
    return out


def _fit_blocks(model: nn.Module, unit: list[int], paths: _Paths, mapping: Mapping,
                masks: dict[str, torch.Tensor], args: ReconArgs, seed: int) -> dict[str, Any]:
    named = _named_layers(model)
    blocks = [named[j][1] for j in unit]

    def target(i: int) -> torch.Tensor:
        return _select(paths.parent[i], mapping.hidden)

    def forward(i: int) -> torch.Tensor:
        h = paths.student[i]
        for block in blocks:
            h = _through(block, h, paths.kwargs[i], checkpoint=len(blocks) > 1)
        return h

    params = [pm for j in unit for pm in _masked_params(named[j][1], named[j][0], masks)]
    before, after = fit(forward, params, target, len(paths.parent), args, seed)
    return {"blocks": unit, "parent_blocks": [mapping.parent_of[j] for j in unit],
            "err_before": before, "err_after": after}


def _through(block: nn.Module, h: torch.Tensor, kwargs: dict[str, Any], *, checkpoint: bool) -> torch.Tensor:
    """``block``'s output; with ``checkpoint`` only its input is kept for the backward pass.

    A submodel of K blocks would otherwise hold K blocks' autograd activations (about 84 MiB
    per SmolLM2 block at 8 x 256 tokens): recomputing each block's forward in the backward
    pass (one more forward per step) keeps the activation memory of ``blocks:K`` near that
    of one block. Eval mode has no dropout, so the recomputation is exact.
    """
    if not checkpoint or not torch.is_grad_enabled():
        return _out(block(h, **kwargs))
    from torch.utils.checkpoint import checkpoint as recompute

    return _out(recompute(block, h, use_reentrant=False, **kwargs))


def _linear_inputs(block: nn.Module, name: str, hidden: list[torch.Tensor],
                   kwargs: list[dict[str, Any]]) -> list[torch.Tensor]:
    """Per batch, the input of linear ``name`` while ``block`` runs on ``hidden``.

    The block stops right after that linear's input is seen: the layers after it are not
    needed, and their activations are never allocated.
    """
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, a: tuple) -> None:
        got.append(a[0].detach())
        raise _Stop

    handle = block.get_submodule(name).register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for h, kw in zip(hidden, kwargs):
                try:
                    block(h, **kw)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return got


def _fit_linears(model: nn.Module, j: int, paths: _Paths, parent_block: nn.Module, mapping: Mapping,
                 masks: dict[str, torch.Tensor], args: ReconArgs, seed: int) -> dict[str, Any]:
    """``layer`` granularity: fit the linears of block ``j`` group by group, in data-flow order."""
    prefix, block = _named_layers(model)[j]
    errors: dict[str, list[float]] = {}
    for g, names in enumerate(LINEAR_GROUPS):
        inputs = _linear_inputs(block, names[0], paths.student, paths.kwargs)
        targets = _group_targets(parent_block, names, _linear_inputs(parent_block, names[0], paths.parent, paths.kwargs),
                                 mapping.rows[j])
        for k, name in enumerate(names):
            lin = block.get_submodule(name)
            params = _masked_params(lin, f"{prefix}.{name}", masks)
            before, after = fit(lambda i, _l=lin: _l(inputs[i]), params, targets[name], len(inputs), args,
                                seed * 31 + g * 7 + k)
            errors[name] = [before, after]
        del inputs, targets
    return {"blocks": [j], "parent_blocks": [mapping.parent_of[j]], "linears": errors,
            "err_before": sum(e[0] for e in errors.values()) / len(errors),
            "err_after": sum(e[1] for e in errors.values()) / len(errors)}


def _group_targets(parent_block: nn.Module, names: tuple[str, ...], parent_inputs: list[torch.Tensor],
                   rows: dict[str, torch.Tensor | None]) -> dict[str, Callable[[int], torch.Tensor]]:
    """Per linear of a group: batch index -> the parent linear's output on its kept rows.

    Whichever is narrower is held for every calibration batch: the group's input, with each
    target computed from it when asked (q/k/v and gate/up: their outputs are wider than their
    one input), or the outputs themselves (down_proj: 576 outputs of a 1536-wide input).
    """
    lins = {name: parent_block.get_submodule(name) for name in names}
    width_out = sum(lin.out_features if rows[name] is None else len(rows[name]) for name, lin in lins.items())
    if width_out < parent_inputs[0].shape[-1]:
        with torch.no_grad():
            held = {name: [_select(lin(x), rows[name]) for x in parent_inputs] for name, lin in lins.items()}
        parent_inputs.clear()
        return {name: (lambda i, _h=h: _h[i]) for name, h in held.items()}

    def computed(lin: nn.Module, kept: torch.Tensor | None) -> Callable[[int], torch.Tensor]:
        @torch.no_grad()
        def target(i: int) -> torch.Tensor:
            return _select(lin(parent_inputs[i]), kept)
        return target

    return {name: computed(lin, rows[name]) for name, lin in lins.items()}


def _units(n_blocks: int, per_unit: int | None) -> list[list[int]]:
    step = per_unit or 1
    return [list(range(s, min(s + step, n_blocks))) for s in range(0, n_blocks, step)]


def reconstruct(model: nn.Module, parent: ParentLayers | ModuleParent, calib: torch.Tensor, choices: dict[str, Any],
                masks: dict[str, torch.Tensor] | None = None, args: ReconArgs | dict | None = None, *,
                state_dir: Path | None = None) -> ReconReport:
    """Reconstruct the pruned ``model`` in place, one submodel at a time (module docstring).

    Args:
        model: the pruned Llama / Qwen2 causal LM.
        parent: the unpruned parent's layers (:class:`ParentLayers`, read lazily, or
            :class:`ModuleParent` when it is in memory anyway).
        calib: LongTensor [n, seq_len] of calibration ids (n >= 1).
        choices: the pruning report's ``choices`` (the index map).
        masks: sparse keep-masks (full parameter name -> bool), kept exact.
        args: :class:`ReconArgs` or its dict.
        state_dir: where per-submodel progress is kept so that a killed run resumes.

    Raises:
        BadInput: empty calibration, bad options, or a model whose pruning cannot be mapped.
    """
    args = args if isinstance(args, ReconArgs) else ReconArgs.from_dict(args)
    if calib is None or calib.dim() != 2 or calib.numel() == 0:
        shape = None if calib is None else tuple(calib.shape)
        raise BadInput(f"reconstruction needs calibration sequences (n >= 1 x seq_len >= 1); got {shape}")
    masks = masks or {}
    mapping = plan_mapping(model, parent.config, choices, masks)
    per_unit = parse_granularity(args.granularity)
    with mmap_large_allocations():  # freed activations go back to the system (engine.memory)
        return _reconstruct_units(model, parent, calib, mapping, masks, per_unit, args, state_dir)


def _reconstruct_units(model: nn.Module, parent: ParentLayers | ModuleParent, calib: torch.Tensor,
                       mapping: Mapping, masks: dict[str, torch.Tensor], per_unit: int | None,
                       args: ReconArgs, state_dir: Path | None) -> ReconReport:
    """The submodels in order (:func:`reconstruct`, after its checks)."""
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    hidden, kwargs = capture_first_inputs(model, calib.to(device), args.batch_size)
    if mapping.hidden is None:
        start = [h.clone() for h in hidden]  # same embeddings: no need to read the parent's
    else:
        start = parent.embed(calib.to(device), args.batch_size)
    paths = _Paths(hidden, start, kwargs)
    progress = Progress(state_dir, fingerprint(args, calib, model, masks))
    report = ReconReport(args.granularity, int(calib.shape[0]), int(calib.shape[1]), args.steps, args.lr)
    named = _named_layers(model)
    units = _units(len(named), per_unit)
    bar = counter(len(units), f"reconstruct ({args.granularity})", unit="submodel")
    try:
        for u, unit in enumerate(units):
            modules = {str(j): named[j][1] for j in unit}
            record = progress.done(u)
            resumed = record is not None
            t_unit = time.perf_counter()
            if resumed:
                progress.load(u, modules)
                report.resumed_units += 1
                _advance_parent(paths, parent, mapping.parent_of[unit[-1]], device)
            elif per_unit is None:
                (j,) = unit
                _advance_parent(paths, parent, mapping.parent_of[j] - 1, device)
                parent_block = parent.layer(mapping.parent_of[j], device)
                record = _fit_linears(model, j, paths, parent_block, mapping, masks, args, args.seed + u)
                _run_blocks(paths.parent, paths.kwargs, [parent_block])  # the loaded layer, not a re-read
                paths.parent_done = mapping.parent_of[j]
                del parent_block
            else:
                _advance_parent(paths, parent, mapping.parent_of[unit[-1]], device)
                record = _fit_blocks(model, unit, paths, mapping, masks, args, args.seed + u)
            if not resumed:
                record["seconds"] = round(time.perf_counter() - t_unit, 3)
                progress.save(u, modules, record)
            report.units.append(record)
            _run_blocks(paths.student, paths.kwargs, list(modules.values()))
            bar.update(1)
            bar.set_postfix_str(f"err {record['err_before']:.3g}->{record['err_after']:.3g}", refresh=False)
    finally:
        bar.close()
        model.train(was_training)
    report.seconds = time.perf_counter() - t0
    return report
