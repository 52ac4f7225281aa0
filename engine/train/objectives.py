"""Training objectives: ``lm`` (next-token CE), ``kd`` (logit KL from the parent), ``recon``.

Each objective is a callable ``loss(model, ids) -> scalar tensor`` built once per job by
:func:`make_objective`; the recipe's loop does not know which one it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from data.cli import BadInput
from engine.pruning.common import kd_loss
from engine.train.config import JobConfig, KDConfig

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]

TEACHER_OBJECTIVES = ("kd", "recon", "recon+kd")
"""Objectives that train against the unpruned parent (the teacher)."""
KD_OBJECTIVES = ("kd", "recon+kd")


def teacher_dtype(job: JobConfig, student: nn.Module) -> torch.dtype:
    """The dtype the teacher is loaded in: the student's training precision for KD (see
    :func:`make_kd`), fp32 for ``recon``, whose block targets are regression labels."""
    return next(student.parameters()).dtype if job.objective in KD_OBJECTIVES else torch.float32


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (transformers shifts the labels itself). ids: [B, T]."""
    return model(input_ids=ids, labels=ids, use_cache=False).loss.float()


def make_kd(teacher: nn.Module, cfg: KDConfig, dtype: torch.dtype = torch.float32) -> Objective:
    """Minitron-style distillation: the unpruned parent, frozen in eval mode, is the teacher.

    The teacher is held in the student's training precision (``dtype``; the recipe loads it
    in that dtype already, so the cast is a no-op there): a bf16 student was chosen because bf16 is faster on this device, an fp32 teacher forward
    would cost as much as the step saves, and on a GPU the fp32 copy of an 8B parent alone
    (32 GB per rank) is what does not fit (the grid estimate counts the teacher in this dtype).
    """
    teacher.eval().requires_grad_(False).to(dtype)

    def loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, use_cache=False).logits  # [B, T, V]
        out = model(input_ids=ids, labels=ids if cfg.lm_weight else None, use_cache=False)
        kl = kd_loss(out.logits, t_logits, cfg.temperature)
        return kl if not cfg.lm_weight else (1 - cfg.lm_weight) * kl + cfg.lm_weight * out.loss.float()

    return loss


def layer_map(n_student: int, n_parent: int, choices: dict[str, Any]) -> list[int]:
    """Parent layer index of each student layer (depth pruning keeps a subset, in order)."""
    kept = choices.get("kept_layers")
    if kept is not None and len(kept) == n_student:
        return [int(i) for i in kept]
    if n_student == n_parent:
        return list(range(n_student))
    raise BadInput(f"objective recon cannot map {n_student} pruned layers onto {n_parent} parent "
                   "layers (the pruning report names no kept_layers)")


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out  # tuple in transformers 4.x


class BlockRecon:
    """Local reconstruction: student block i, fed the parent's input of its parent block j,
    should reproduce that parent block's output (MSE, summed over blocks).

    Hooks replace each student block's input by the parent's, so every block gets its own
    local gradient in a single forward pass: mathematically the same as fitting the blocks
    one by one, at the cost of one pass. When width pruning shrank the hidden size, inputs and
    targets are the parent's activations on the kept channels (``hidden``, the index map).
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, mapping: list[int],
                 hidden: list[int] | None = None) -> None:
        if teacher.config.hidden_size != student.config.hidden_size and (
                hidden is None or len(hidden) != student.config.hidden_size):
            raise BadInput(f"objective recon: hidden size {teacher.config.hidden_size} -> "
                           f"{student.config.hidden_size} but the pruning report has no hidden_channels "
                           "index map; use lm or kd")
        self.teacher = teacher.eval().requires_grad_(False)
        self.mapping = mapping
        self.hidden = None if teacher.config.hidden_size == student.config.hidden_size else torch.tensor(hidden)
        self.inputs: dict[int, torch.Tensor] = {}
        self.targets: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        for j, block in enumerate(teacher.model.layers):
            block.register_forward_pre_hook(self._save_input(j), with_kwargs=True)
            block.register_forward_hook(self._save_target(j))
        for i, block in enumerate(student.model.layers):
            block.register_forward_pre_hook(self._feed_parent_input(i), with_kwargs=True)
            block.register_forward_hook(self._save_output(i))

    def _save_input(self, j: int) -> Callable:
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            self.inputs[j] = self._kept(_hidden(args, kwargs).detach())
        return hook

    def _save_target(self, j: int) -> Callable:
        def hook(_m: nn.Module, _a: tuple, out: Any) -> None:
            self.targets[j] = self._kept(_output(out).detach())
        return hook

    def _kept(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.hidden is None else x.index_select(-1, self.hidden.to(x.device))

    def _feed_parent_input(self, i: int) -> Callable:
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if not self.inputs:  # plain forward (evaluation): leave the input alone
                return None
            parent_in = self.inputs[self.mapping[i]].to(_hidden(args, kwargs).dtype)
            if args:
                return (parent_in, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": parent_in}
        return hook

    def _save_output(self, i: int) -> Callable:
        def hook(_m: nn.Module, _a: tuple, out: Any) -> None:
            if self.inputs:
                self.outputs[i] = _output(out)
        return hook

    def __call__(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.teacher.model(input_ids=ids, use_cache=False)  # fills inputs/targets
        try:
            model(input_ids=ids, use_cache=False)  # hooks feed parent inputs, keep outputs
            losses = [F.mse_loss(self.outputs[i].float(), self.targets[j].float())
                      for i, j in enumerate(self.mapping)]
        finally:
            self.inputs.clear()
            self.targets.clear()
        self.outputs.clear()
        return torch.stack(losses).sum()


def make_objective(job: JobConfig, teacher: nn.Module | None, student: nn.Module,
                   choices: dict[str, Any]) -> Objective:
    """The loss callable of ``job.objective`` (``teacher`` is the unpruned parent for kd/recon).

    ``recon+lm`` / ``recon+kd`` train with ``lm`` / ``kd``: their reconstruction happened
    before (:func:`reconstruct_start`).
    """
    if job.objective in ("lm", "recon+lm"):
        return lm_loss
    assert teacher is not None, "kd and recon need the parent as teacher"
    if job.objective in KD_OBJECTIVES:
        return make_kd(teacher, job.kd, next(student.parameters()).dtype)
    mapping = layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers, choices)
    return BlockRecon(teacher, student, mapping, choices.get("hidden_channels"))


# -- reconstructed starts (objectives recon+lm, recon+kd) ---------------------------------------

RECON_START = ("recon+lm", "recon+kd")
"""Objectives that reconstruct the pruned model locally before post-training."""


def recon_source(parent: nn.Module, folder: Path) -> Any:
    """The parent's layers for a reconstructed start; call BEFORE pruning ``parent`` in place.

    The layers go to a safetensors file in ``folder`` and are read back one at a time, so the
    job never holds a second model (``recon+kd`` too: its teacher is loaded only once the
    student is built and wrapped, see ``engine.train.recipe``).
    """
    from engine.pruning.recon import ParentLayers

    folder.mkdir(parents=True, exist_ok=True)
    return ParentLayers.save(parent, folder / "parent.safetensors")


def reconstruct_start(job: JobConfig, model: nn.Module, source: Any, calib: torch.Tensor,
                      masks: dict[str, torch.Tensor], choices: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Reconstruct the pruned ``model`` in place with ``job.recon``'s options (resumable through
    ``folder``, removed once done); returns the JSON-ready report for run.json."""
    import shutil

    from engine.pruning.recon import ReconArgs, reconstruct

    r = job.recon
    args = ReconArgs(granularity=r.granularity, steps=r.steps, lr=r.lr, batch_size=r.batch_size, seed=job.seed)
    report = reconstruct(model, source, calib, choices, masks, args, state_dir=folder / "progress")
    shutil.rmtree(folder, ignore_errors=True)
    return report.to_dict()
