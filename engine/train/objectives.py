"""Training objectives: ``lm`` (next-token CE), ``kd`` (logit KL from the parent), ``recon``.

Each objective is a callable ``loss(model, ids) -> scalar tensor`` built once per job by
:func:`make_objective`; the recipe's loop does not know which one it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from data.cli import BadInput
from engine.train.config import JobConfig, KDConfig

Objective = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (transformers shifts the labels itself). ids: [B, T]."""
    return model(input_ids=ids, labels=ids, use_cache=False).loss.float()


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


def make_kd(teacher: nn.Module, cfg: KDConfig) -> Objective:
    """Minitron-style distillation: the unpruned parent, frozen in eval mode, is the teacher."""
    teacher.eval().requires_grad_(False)

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
    one by one, at the cost of one pass.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, mapping: list[int]) -> None:
        if teacher.config.hidden_size != student.config.hidden_size:
            raise BadInput(f"objective recon needs the parent's hidden size "
                           f"({teacher.config.hidden_size}), the pruned model has {student.config.hidden_size}; "
                           "use lm or kd for methods that shrink the hidden dimension")
        self.teacher = teacher.eval().requires_grad_(False)
        self.mapping = mapping
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
            self.inputs[j] = _hidden(args, kwargs).detach()
        return hook

    def _save_target(self, j: int) -> Callable:
        def hook(_m: nn.Module, _a: tuple, out: Any) -> None:
            self.targets[j] = _output(out).detach()
        return hook

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
    """The loss callable of ``job.objective`` (``teacher`` is the unpruned parent for kd/recon)."""
    if job.objective == "lm":
        return lm_loss
    assert teacher is not None, "kd and recon need the parent as teacher"
    if job.objective == "kd":
        return make_kd(teacher, job.kd)
    mapping = layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers, choices)
    return BlockRecon(teacher, student, mapping)
