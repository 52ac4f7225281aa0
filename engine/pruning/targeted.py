"""Targeted structured pruning with learned masks (Sheared-LLaMA, Xia et al. 2023).

Hard-concrete masks (``engine.pruning.targeted_masks``) on layers, KV groups, query heads,
FFN neurons and hidden channels are trained jointly with the model's weights on the LM loss
plus a Lagrangian that drives each mask group's expected sparsity to the target shape's
(multipliers by gradient ascent, target ramped in over a warm-up). Training runs through
``deepspeed.initialize`` on the job's token stream (the mixture loader of ``data.loader``;
the calibration rows cycled when only those are given) for ``tokens`` pruning tokens; it
checkpoints every ``checkpoint_every`` steps into ``state_dir`` and resumes from there.
At the end each mask is made hard (exactly the target's count of largest ``log_alpha`` per
row) and the model is cut to a dense model of exactly the target shape with the slicing
helpers of ``engine.pruning.width`` / ``common`` (qkv biases sliced, tied embeddings re-tied,
layer indices and head_dim consistent), which reloads with ``from_pretrained``.

Without a ``target`` the shape is the one ``width`` would choose for ``ratio`` (same
allocation rule), so the two methods can be compared at equal shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from data.cli import BadInput
from engine.pruning import common, width
from engine.pruning.report import PruneReport
from engine.pruning.stage import Trainer, need_trainer
from engine.pruning.targeted_masks import MaskSet, attach, detach
from engine.pruning.targeted_shape import Parent, Shape, TargetedArgs, parse_target

DONE_DIR = "model"
"""Under ``state_dir``: the cut model of a finished pruning stage (a resumed job reuses it)."""


def resolve_target(model: nn.Module, ratio: float | None, a: TargetedArgs) -> Shape:
    """The validated target: ``a.target``, or width's allocation for ``ratio``."""
    parent = Parent.of(model)
    if a.target is not None:
        return parse_target(a.target, parent)
    if not ratio:
        raise BadInput("targeted pruning needs --target SHAPE (a preset or layers=..,heads=..,kv_heads=..,"
                       "ffn=..,hidden=..) or a ratio in (0, 1)")
    d, f, kv, hq, _ = width.choose_shape(width.Base.of(model), ratio, width.WidthArgs(axes=tuple(a.axes)))
    return parse_target({"hidden": d, "ffn": f, "kv_heads": kv, "heads": hq}, parent)


def check_target(model: str, target: str) -> Shape:
    """Validate ``target`` against a model directory's config.json or a preset, without weights."""
    from engine.models import config_for

    path = Path(model)
    if (path / "config.json").is_file():
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(path))
    else:
        from data.models import MODELS

        if model.strip().lower() not in MODELS:
            raise BadInput(f"model {model!r} is neither a directory nor a known preset")
        cfg = config_for(MODELS[model.strip().lower()])
    return parse_target(target, Parent.of_config(cfg))


def shape_params(model: nn.Module, shape: Shape | dict[str, float]) -> float:
    """Parameter count (docs/design-contract.md convention) of ``model``'s architecture at ``shape``."""
    s = shape.to_dict() if isinstance(shape, Shape) else shape
    base = dataclasses.replace(width.Base.of(model), layers=s["layers"])
    return base.params(s["hidden"], s["ffn"], s["kv_heads"], s["heads"])


# -- the training harness ----------------------------------------------------------------------

@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """DeepSpeed logs and prints on stdout; ``engine prune --json`` keeps stdout for its document."""
    import logging

    handlers = [h for h in logging.getLogger("DeepSpeed").handlers
                if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout]
    for h in handlers:
        h.setStream(sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h in handlers:
            h.setStream(sys.stdout)


class _Harness(nn.Module):
    """The model and its masks as one module for ``deepspeed.initialize`` (the model itself stays
    transformers' class; hooks apply the masks). ``forward`` returns LM loss + Lagrangian."""

    def __init__(self, lm: nn.Module, masks: MaskSet) -> None:
        super().__init__()
        self.lm, self.masks = lm, masks
        self.last: tuple[float, float] = (math.nan, math.nan)

    def forward(self, ids: torch.Tensor, progress: float) -> torch.Tensor:
        self.masks()  # sample this step's z into masks.z, read by the hooks
        lm_loss = self.lm(input_ids=ids, labels=ids, use_cache=False).loss.float()
        lag = self.masks.lagrangian(progress)
        self.last = (float(lm_loss.detach()), float(lag.detach()))
        return lm_loss + lag


def _param_groups(h: _Harness, a: TargetedArgs) -> list[dict[str, Any]]:
    decay = [p for p in h.lm.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in h.lm.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": a.weight_decay, "lr": a.lr}, {"params": rest, "weight_decay": 0.0, "lr": a.lr},
            {"params": list(h.masks.log_alpha.values()), "weight_decay": 0.0, "lr": a.mask_lr},
            {"params": list(h.masks.lambdas.values()), "weight_decay": 0.0, "lr": a.mask_lr}]


class CalibStream:
    """Calibration rows cycled as an endless, checkpointable stream (text-file calibration)."""

    def __init__(self, ids: torch.Tensor, rows: int, seed: int) -> None:
        self.ids, self.rows, self.pos = ids, rows, 0
        self.order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))

    def __iter__(self) -> "CalibStream":
        return self

    def __next__(self) -> torch.Tensor:
        idx = [int(self.order[(self.pos + i) % len(self.ids)]) for i in range(self.rows)]
        self.pos += self.rows
        return self.ids[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


def training_stream(a: Any, calib: torch.Tensor | None, rows: int, trainer: Trainer) -> tuple[Any, int]:
    """(global batch stream, seq_len): the recipe's loader, a shard mixture, or cycled calibration."""
    if a.stream_factory is not None:
        if a.seq_len is None:
            raise BadInput("targeted: stream_factory needs seq_len")
        return a.stream_factory(rows, a.seed + 1), int(a.seq_len)
    if a.shards is not None:
        return trainer.shard_stream(a.shards, a.seq_len, rows, a.seed + 1)
    ids = common.check_calib(calib, "targeted")
    return CalibStream(ids, rows, a.seed + 1), int(ids.shape[1])


@dataclass
class _Progress:
    step: int = 0
    trajectory: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _record(h: _Harness, model: nn.Module, step: int, tokens: int, progress: float) -> dict[str, Any]:
    shape = h.masks.expected_shape()
    lm_loss, lag = h.last
    return {"step": step, "tokens": tokens, "expected": {k: round(v, 4) for k, v in shape.items()},
            "expected_params": int(round(shape_params(model, shape))), "target_ramp": round(min(1.0, progress), 4),
            "multipliers": h.masks.multipliers(), "lm_loss": round(lm_loss, 6), "lagrangian": round(lag, 6)}


def train_masks(model: nn.Module, masks: MaskSet, a: TargetedArgs, calib: torch.Tensor | None) -> dict[str, Any]:
    """Train weights + masks under DeepSpeed for the pruning tokens; returns the run's summary.

    Resumes from ``a.state_dir`` when it holds a checkpoint (model, masks, multipliers,
    optimizer, scheduler, stream position and trajectory so far).
    """
    with stdout_to_stderr():
        return _train_masks(model, masks, a, calib)


def _train_masks(model: nn.Module, masks: MaskSet, a: TargetedArgs, calib: torch.Tensor | None) -> dict[str, Any]:
    from engine.pruning.progress import counter

    trainer = need_trainer(a.trainer, "targeted")
    dist = trainer.dist
    harness = _Harness(model, masks.to(next(model.parameters()).device))
    stream, seq_len = training_stream(a, calib, a.micro_batch * dist.world, trainer)
    per_step = a.micro_batch * dist.world * seq_len
    steps = a.tokens // per_step
    if steps < 1:
        raise BadInput(f"targeted tokens={a.tokens} is below one step ({per_step} tokens = micro_batch "
                       f"{a.micro_batch} x {dist.world} process(es) x seq_len {seq_len})")
    if a.state_dir:  # written once the inputs are known good: a bad input leaves nothing behind
        Path(a.state_dir).mkdir(parents=True, exist_ok=True)
        (Path(a.state_dir) / "target.json").write_text(json.dumps(masks.target.to_dict()))
    engine = trainer.initialize(harness, _param_groups(harness, a), a, steps)
    handles = attach(model, masks, Parent.of(model).head_dim)
    state, root = _Progress(), Path(a.state_dir) if a.state_dir else None
    client = trainer.resume(engine, root) if root is not None else None
    if client is not None:
        state = _Progress(int(client["step"]), list(client["trajectory"]))
        stream.load_state_dict(client["stream"])
    warm = max(1, round(a.warmup_frac * steps))
    log_at = {round(steps * (k + 1) / a.log_points) for k in range(a.log_points)} | {steps}
    bar = counter(steps, "targeted pruning", unit="step")
    bar.update(state.step)

    def step() -> None:
        rows = next(stream)[:, :seq_len]
        ids = rows[dist.rank * a.micro_batch:(dist.rank + 1) * a.micro_batch].to(dist.device)
        masks.generator = torch.Generator().manual_seed(a.seed * 1_000_003 + state.step)
        loss = engine(ids, state.step / warm)
        engine.backward(loss)
        engine.step()
        masks.constrain()
        state.step += 1
        bar.update(1)
        if not math.isfinite(float(loss.detach())):
            raise RuntimeError(f"targeted pruning: loss is {float(loss)} at step {state.step}")

    def after(step: int) -> None:
        if step in log_at:
            state.trajectory.append(_record(harness, model, step, step * per_step, (step - 1) / warm))

    try:
        trainer.run(engine, steps, lambda: state.step, step, after=after,
                    save_at=lambda step: step % a.checkpoint_every == 0, state_dir=root,
                    state=lambda: {"step": state.step, "trajectory": state.trajectory, "stream": stream.state_dict()})
    finally:
        bar.close()
        detach(handles)
        engine.destroy() if hasattr(engine, "destroy") else None
    masks.eval()
    return {"steps": steps, "tokens": steps * per_step, "seq_len": seq_len, "micro_batch": a.micro_batch,
            "lr": a.lr, "mask_lr": a.mask_lr, "warmup_frac": a.warmup_frac,
            "world_size": dist.world, "trajectory": state.trajectory}


# -- hard masks -> dense model -----------------------------------------------------------------

@torch.no_grad()
def cut(model: nn.Module, masks: MaskSet) -> dict[str, Any]:
    """Cut ``model`` in place to ``masks.target`` by the hard masks; returns what was kept.

    The hard masks become binary scores, so width's slicing helpers (which keep the top
    scores) keep exactly the units the hard-masked model uses.
    """
    base, t, p = width.Base.of(model), masks.target, masks.parent
    hard = {g: masks.hard(g).cpu() for g in masks.log_alpha}
    L, q0 = p.layers, p.heads // p.kv_heads
    kv = hard.get("kv_heads", torch.ones(L, p.kv_heads))
    q = hard.get("heads", torch.ones(L, p.kv_heads, q0))
    head_scores = (kv[:, :, None] * q).reshape(L, -1)  # [L, H] binary
    ffn_scores = hard.get("ffn", torch.ones(L, p.ffn))
    kept_layers = list(range(L))
    if "layers" in hard:
        drop = [i for i in range(L) if hard["layers"][i] == 0]
        kept_layers = common.drop_layers(model, drop)
    choices: dict[str, Any] = {"kept_layers": kept_layers, "layers": []}
    for new, old in enumerate(kept_layers):
        sc = {f"ffn.{new}": ffn_scores[old], f"heads.{new}": head_scores[old]}
        choices["layers"].append(width._prune_layer(common.decoder_layers(model)[new], new, sc, base,
                                                    t.ffn, t.kv_heads, t.heads))
    if "hidden" in hard:
        idx = hard["hidden"].nonzero().flatten()
        width._prune_hidden(model, idx.to(next(model.parameters()).device))
        choices["hidden_channels"] = idx.tolist()
    width._update_config(model, base, t.hidden, t.ffn, t.kv_heads, t.heads)
    choices["shape"] = {**t.to_dict(), "head_dim": base.head_dim}
    return choices


# -- the method --------------------------------------------------------------------------------

def _reuse(state_dir: str | None, target: Shape) -> tuple[nn.Module, dict[str, Any]] | None:
    """The cut model and choices of a pruning stage that already finished in ``state_dir``.

    State left by a run towards another target is the method's own stale output: removed.
    """
    if not state_dir:
        return None
    root = Path(state_dir)
    stamp = root / "target.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != target.to_dict():
        shutil.rmtree(root)
    if not (root / DONE_DIR / "targeted.json").is_file():
        return None
    from engine.models import load_model

    done = root / DONE_DIR
    return load_model(done), json.loads((done / "targeted.json").read_text())


def _finish_stage(model: nn.Module, state_dir: str | None, choices: dict[str, Any], trainer: Trainer) -> None:
    if not state_dir:
        return
    from engine.models import save_model

    save_model(model, Path(state_dir) / DONE_DIR, {"targeted.json": choices})
    trainer.discard(Path(state_dir))  # the stage is done: its optimizer state is dead weight


def prune(model: nn.Module, ratio: float | None, calib: torch.Tensor | None, *,
          args: dict[str, Any] | None = None) -> PruneReport:
    """Learn masks to the target shape under DeepSpeed, then cut to a dense model of that shape.

    Args:
        model: Llama / Qwen2 causal LM; its weights are trained and then sliced in place.
        ratio: used only without ``args['target']`` (width's shape for this ratio); recorded
            as ``ratio_target`` (the target shape's own ratio when None).
        calib: LongTensor [n, seq_len] cycled as training data when no stream/shards are given.
        args: :class:`TargetedArgs` fields.

    Raises:
        BadInput: bad target (field and allowed values named), options, or too few tokens.
    """
    a = TargetedArgs.from_dict(args)
    target = resolve_target(model, ratio, a)
    before = common.start(model)
    ratio_target = ratio if ratio else 1.0 - shape_params(model, target) / before.counts.total
    reused = _reuse(a.state_dir, target)
    if reused is not None:  # the stage finished before a kill: its cut model, where the parent was
        model, choices = reused[0].to(next(model.parameters()).device), reused[1]
    else:
        masks = MaskSet(Parent.of(model).shape, target)
        run = train_masks(model, masks, a, calib)
        hard = {g: masks.hard(g).sum(-1).tolist() for g in masks.log_alpha}
        choices = {**cut(model, masks), "targeted": {**run, "target": target.to_dict(), "hard_kept": hard,
                                                     "final_log_alpha_mean": {g: round(float(v.detach().mean()), 4)
                                                                              for g, v in masks.log_alpha.items()}}}
        choices["prune_tokens"] = run["tokens"]
        _finish_stage(model, a.state_dir, choices, a.trainer)
    notes = [f"learned masks over {choices['targeted']['steps']} steps ({choices['prune_tokens']} tokens) "
             f"to shape {target.to_dict()}"]
    return common.finish("targeted", ratio_target, model, before, choices, notes)
