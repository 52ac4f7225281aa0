"""Minitron architecture search (Muralidharan et al. 2024): K same-size shapes, short KD, best kept.

Candidates are shapes of the same parameter count as ``ratio`` (within ``width.TOLERANCE``)
that mix depth and width differently: for each layer count from the parent's down to half of
it, and for several sets of shrinkable width axes, ``width.choose_shape`` allocates the rest.
``candidates`` of them are picked farthest-first in log-shape space, starting from the shape
``width`` alone would choose (so the search always ranks width's own answer). Each candidate is
cut from the parent (layers with the lowest block influence dropped, then width importance),
retrained by ``tokens`` of logit distillation from the parent under DeepSpeed, and scored by
its LM loss on held-out calibration rows; the best is returned, the ranking is in the report.

With ``state_dir`` the search resumes candidate by candidate: each ranked row is saved
there (``ranking.json``), with the best model so far (``best/``), so a killed search redoes
at most the candidate it was in (each candidate's cut, seed and KD stream are its own, so a
resumed search ranks exactly what an uninterrupted one would).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data.cli import BadInput
from data.runs import replace_dir, write_json_atomic
from engine.pruning import common, width
from engine.pruning.args import SearchArgs
from engine.pruning.report import PruneReport
from engine.pruning.common import kd_loss
from engine.pruning.stage import need_trainer
from engine.pruning.targeted import stdout_to_stderr

MIXES: tuple[tuple[str, ...], ...] = (
    ("ffn", "heads", "hidden"), ("ffn",), ("ffn", "hidden"), ("ffn", "heads"), ("hidden",), ("heads", "hidden"),
)
"""Width axes a candidate may shrink (with a layer count fixed)."""


def _log_shape(base: width.Base, c: dict[str, int]) -> np.ndarray:
    return np.log([c["layers"] / base.layers, c["hidden"] / base.hidden, c["ffn"] / base.ffn, c["heads"] / base.heads])


def candidate_shapes(base: width.Base, ratio: float, k: int, multiple: int = 8) -> list[dict[str, Any]]:
    """Up to ``k`` distinct shapes within ``width.TOLERANCE`` of ``ratio`` (see module docstring).

    Raises:
        BadInput: when fewer than two shapes reach ``ratio``.
    """
    p0 = base.params(base.hidden, base.ffn, base.kv, base.heads)
    pool: dict[tuple, dict[str, Any]] = {}
    for layers in range(base.layers, max(1, base.layers // 2) - 1, -1):
        b = dataclasses.replace(base, layers=layers)
        ratio_l = 1.0 - (1.0 - ratio) * p0 / b.params(base.hidden, base.ffn, base.kv, base.heads)
        for axes in MIXES:
            try:
                d, f, kv, hq, _ = width.choose_shape(b, max(ratio_l, 0.0), width.WidthArgs(axes=axes, multiple=multiple))
            except BadInput:
                continue
            achieved = 1.0 - b.params(d, f, kv, hq) / p0
            if abs(achieved - ratio) <= width.TOLERANCE:
                key = (layers, d, f, kv, hq)
                pool.setdefault(key, {"layers": layers, "hidden": d, "ffn": f, "kv_heads": kv, "heads": hq,
                                      "ratio": round(float(achieved), 4), "axes": list(axes)})
    shapes = list(pool.values())
    if len(shapes) < 2:
        raise BadInput(f"width-search: only {len(shapes)} shape(s) reach ratio {ratio} on this parent; "
                       "use --method width, or a ratio that leaves room for several depth/width mixes")
    chosen = [shapes[0]]  # layers == parent, all axes: width's own answer
    while len(chosen) < min(k, len(shapes)):
        dist = [min(np.abs(_log_shape(base, s) - _log_shape(base, c)).sum() for c in chosen) for s in shapes]
        chosen.append(shapes[int(np.argmax(dist))])
    return chosen


def _cut(parent: nn.Module, shape: dict[str, Any], influence: list[float] | None, calib: torch.Tensor,
         a: SearchArgs) -> tuple[nn.Module, dict[str, Any]]:
    """A pruned copy of ``parent`` at ``shape``: depth by block influence, then width importance."""
    model = copy.deepcopy(parent)
    n = len(common.decoder_layers(model))
    drop: list[int] = []
    if shape["layers"] < n:
        drop = sorted(int(i) for i in torch.tensor(influence).argsort()[: n - shape["layers"]])
        common.drop_layers(model, drop)
    fixed = {"axes": ("ffn", "heads", "hidden", "kv"), "hidden": shape["hidden"], "ffn": shape["ffn"],
             "heads": shape["heads"], "kv_heads": shape["kv_heads"], "batch_size": a.batch_size}
    report = width.prune(model, 0.0 if shape["ratio"] <= 0 else min(shape["ratio"], 0.99), calib, args=fixed)
    return report.model, {"dropped_layers": drop, **report.choices}


def _kd(student: nn.Module, teacher: nn.Module, a: SearchArgs, calib: torch.Tensor) -> dict[str, Any]:
    """``a.tokens`` of logit distillation from ``teacher`` into ``student`` under DeepSpeed."""
    from engine.pruning.targeted import training_stream

    trainer = need_trainer(a.trainer, "width-search")
    dist = trainer.dist
    stream, seq_len = training_stream(a, calib, a.micro_batch * dist.world, trainer)
    steps = max(1, a.tokens // (a.micro_batch * dist.world * seq_len))
    engine = trainer.initialize(student, [{"params": list(student.parameters()), "weight_decay": 0.0}], a, steps)
    teacher.eval()  # not requires_grad_(False): the teacher is the parent every later candidate is cut from
    losses: list[float] = []

    def step() -> None:
        ids = next(stream)[:, :seq_len][dist.rank * a.micro_batch:(dist.rank + 1) * a.micro_batch].to(dist.device)
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, use_cache=False).logits  # [B, T, V]
        loss = kd_loss(engine(input_ids=ids, use_cache=False).logits, t_logits, a.temperature)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))

    try:
        trainer.run(engine, steps, lambda: len(losses), step)
    finally:
        engine.destroy() if hasattr(engine, "destroy") else None
    student.eval()
    return {"steps": steps, "tokens": steps * a.micro_batch * dist.world * seq_len,
            "kd_loss_last": losses[-1] if losses else math.nan}


def _stamp_args(a: SearchArgs) -> dict[str, Any]:
    """What decides a search's result: a state dir left by other settings is stale."""
    skip = {"stream_factory", "state_dir", "trainer"}
    return {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name not in skip}


class _Resume:
    """The search's progress in ``state_dir`` (a no-op without one)."""

    def __init__(self, state_dir: str | None, stamp: dict[str, Any]) -> None:
        self.root = Path(state_dir) if state_dir else None
        if self.root is None:
            return
        stamp = json.loads(json.dumps(stamp, default=str))
        file = self.root / "search.json"
        if file.is_file() and json.loads(file.read_text()) != stamp:
            shutil.rmtree(self.root)  # the method's own stale output: another ratio or settings
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(file, stamp)

    def rows(self) -> list[dict[str, Any]]:
        file = self.root / "ranking.json" if self.root else None
        return json.loads(file.read_text()) if file is not None and file.is_file() else []

    def best(self) -> tuple[nn.Module | None, dict[str, Any]]:
        done = self.root / "best" if self.root else None
        if done is None or not (done / "kept.json").is_file():
            return None, {}
        from engine.models import load_model

        return load_model(done), json.loads((done / "kept.json").read_text())

    def save_best(self, model: nn.Module, kept: dict[str, Any]) -> None:
        if self.root is None:
            return
        from engine.models import save_model

        tmp = self.root / ".best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(model, tmp, {"kept.json": kept})
        replace_dir(tmp, self.root / "best")

    def save_rows(self, rows: list[dict[str, Any]]) -> None:
        if self.root is not None:
            write_json_atomic(self.root / "ranking.json", rows)


def prune(model: nn.Module, ratio: float, calib: torch.Tensor | None, *,
          args: dict[str, Any] | None = None) -> PruneReport:
    """Rank ``candidates`` same-size shapes by their loss after a short KD; return the best.

    Args:
        model: the parent (left unchanged: candidates are copies; it is the KD teacher).
        ratio: target fraction of parameters to remove.
        calib: LongTensor [n, seq_len]: scoring, held-out ranking rows, KD data without a stream.
        args: :class:`SearchArgs` fields.

    Raises:
        BadInput: missing calibration, fewer than two reachable shapes, bad options.
    """
    ratio = common.check_ratio(ratio)
    a = SearchArgs.from_dict(args)
    calib = common.check_calib(calib, "width-search")
    n_hold = max(1, int(round(a.holdout * len(calib))))
    if len(calib) - n_hold < 1:
        raise BadInput(f"width-search needs >= 2 calibration sequences (got {len(calib)}): some are held out")
    train_rows, held = calib[:-n_hold], calib[-n_hold:]
    before = common.start(model)
    shapes = candidate_shapes(width.Base.of(model), ratio, a.candidates, a.multiple)
    n_layers = len(common.decoder_layers(model))
    influence = (common.block_influence(model, train_rows, a.batch_size)
                 if any(s["layers"] < n_layers for s in shapes) else None)
    progress = _Resume(a.state_dir, {"shapes": shapes, "ratio": ratio, **_stamp_args(a)})
    ranking, (best, best_kept) = progress.rows(), progress.best()
    best_loss = min((r["loss_after_kd"] for r in ranking), default=math.inf)
    best = model if best is None else best.to(next(model.parameters()).device)
    for i, shape in enumerate(shapes):
        if any(r["candidate"] == i for r in ranking):
            continue  # ranked before a kill
        torch.manual_seed(a.seed)
        student, kept = _cut(model, shape, influence, train_rows, a)
        loss_pruned = common.eval_loss(student, held, a.batch_size)
        with stdout_to_stderr():
            kd = _kd(student, model, a, train_rows)
        loss = round(common.eval_loss(student, held, a.batch_size), 6)  # as saved: a resumed search compares the same
        ranking.append({"candidate": i, "shape": {k: shape[k] for k in ("layers", "hidden", "ffn", "heads", "kv_heads")},
                        "ratio": shape["ratio"], "axes": shape["axes"], "loss_pruned": round(loss_pruned, 6),
                        "loss_after_kd": loss, "kd_steps": kd["steps"], "kd_tokens": kd["tokens"]})
        if loss < best_loss:
            best, best_loss, best_kept = student, loss, kept
            progress.save_best(student, kept)
        else:
            del student
        progress.save_rows(ranking)  # after the best: a row on disk means its model is there too
    spent = sum(r["kd_tokens"] for r in ranking)
    ranking.sort(key=lambda r: r["loss_after_kd"])
    for rank, row in enumerate(ranking, 1):
        row["rank"] = rank
    choices = {**best_kept, "search": {"ranking": ranking, "kd_tokens_each": a.tokens, "held_out_rows": n_hold},
               "prune_tokens": spent}
    win = ranking[0]
    notes = [f"searched {len(shapes)} shapes at ratio ~{ratio}; best {win['shape']} (loss {win['loss_after_kd']:.4f} "
             f"after {win['kd_steps']} KD steps); {spent} KD tokens in all"]
    return common.finish("width-search", ratio, best, before, choices, notes)

