"""The post-training recipe: parent -> prune -> (re-init) -> DeepSpeed training -> eval curve.

``setup`` builds things in an order that matters:

1. rank 0 reads the run store and decides skip / resume / fresh; every rank follows it;
2. data, then the parent (the tokenizer's vocabulary sizes a preset parent);
3. L0 on the unpruned parent;
4. pruning (calibration from the train split) of the parent in place, then ``init: random``
   re-initialises the pruned shape (the from-scratch control at matched tokens) keeping any
   sparsity mask;
5. ``deepspeed.initialize`` with a torch AdamW (nothing JIT-compiles); then, when the
   objective needs a teacher, the parent is loaded a second time from its source, frozen, in
   the training precision (:func:`load_teacher`); then either the checkpoint is loaded
   (resume) or the step-0 row is evaluated and written (fresh).

No process ever holds two full copies of the parent: the one loaded first becomes the student
(pruning works in place), and the teacher is read back from disk only once the student's
fp32 copy has been cast and sharded by ``deepspeed.initialize`` (docs/distributed.md).

Only rank 0 writes the run store. Every rank runs every collective in the same order.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from data.cli import BadInput
from data.runs import CORRUPT, Failure, failure_kind
from engine.pruning import NEEDS_CALIB
from engine.pruning.common import forward_precision
from engine.train import checkpoint, loop
from engine.train import monitor
from engine.train import stop as online_stop
from engine.train.config import NO_PRUNING, RUN_PREFIX, ZERO_AUTO, JobConfig, parent_label
from engine.train.dsconfig import (
    build_ds_config, optimizer_steps, resolve_zero_stage, tokens_per_step, warmup_steps,
)
from engine.train.evaluate import evaluate
from engine.train.protocols import Engine
from engine.train.objectives import (RECON_START, TEACHER_OBJECTIVES, Objective, make_objective,
                                     reconstruct_start, recon_source, teacher_dtype)
from engine.train.runlog import RunLog
from engine.train.runtime import Dist, broadcast, mean_across_ranks
from engine.train.schedule import eval_steps
from engine.train.sources import Stream, TokenData, check_budget, check_parent, check_seq_len, open_shards, resolve_parent

if TYPE_CHECKING:
    from engine.models import ResolvedModel


PRUNE_STAGE = "prune_stage"
"""Run-dir folder of a trained pruning stage (``engine.pruning.TRAINED``): its checkpoints and
finished model, so a killed job resumes the stage and a resumed job does not redo it."""


class Diverged(Exception):
    """Training produced NaN/inf or blew up; the run ends as failed with this reason."""


@dataclass
class Prepared:
    """Everything built before DeepSpeed wraps the model."""

    model: nn.Module
    parent_source: ResolvedModel
    """Where the parent was loaded from (``engine.models.ResolvedModel``): the teacher is
    read from there again (:func:`load_teacher`)."""
    masks: dict[str, torch.Tensor]
    meta: dict[str, Any]
    choices: dict[str, Any]
    parent_losses: dict[str, float]
    """The unpruned parent's per-domain eval losses (dynamic loading's references)."""
    recon: dict[str, Any] | None = None
    """Objectives ``recon+*``: what the reconstruction after pruning did (engine.pruning.recon)."""


@dataclass
class State:
    """The loop's position; saved as the checkpoint's client state."""

    step: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0
    start_loss: float = math.nan
    """eval_loss at step 0 (right after pruning): the divergence reference."""
    loss_sum: float = 0.0
    loss_count: int = 0
    moved: bool = False
    """An optimizer step with a non-zero learning rate has happened (DeepSpeed's warm-up
    schedulers run the first step at lr 0: an eval there would repeat the step-0 loss)."""
    stream: dict[str, Any] = field(default_factory=dict)


# -- setup -------------------------------------------------------------------------------------

def decide(job: JobConfig, log: RunLog, dist: Dist) -> str:
    """``skip`` (done), ``resume`` (a checkpoint exists) or ``fresh``; rank 0 decides for all."""
    choice = None
    if dist.is_main:
        status = log.status()
        if status == CORRUPT:  # torn run.json/curve (set aside by the log): run it again from scratch
            checkpoint.remove(job.run_dir)
        if status == "done":
            choice = "skip"
        elif log.exists() and checkpoint.has_checkpoint(job.run_dir):
            choice = "resume"
        else:
            choice = "fresh"
    return broadcast(choice, dist)


def load_parent(job: JobConfig, data: TokenData) -> tuple[nn.Module, ResolvedModel]:
    """The parent model and where it came from (``engine.models.ResolvedModel``: its
    ``record()`` is run.json's ``meta.source``, a hub model's commit); a preset parent is built
    at the corpus vocabulary (pretraining)."""
    from engine.models import load_model, resolve_model

    check_parent(job)
    resolved = resolve_model(resolve_parent(job.parent, job.runs_dir))
    model = load_model(resolved, vocab=data.vocab_size, seed=job.seed)
    if model.config.vocab_size < data.vocab_size:
        raise BadInput(f"parent {job.parent!r} has vocab {model.config.vocab_size} but the shards use "
                       f"{data.vocab_size} token ids: tokenizer mismatch")
    return model, resolved


def load_teacher(job: JobConfig, prep: Prepared, data: TokenData, dist: Dist, dtype: torch.dtype) -> nn.Module:
    """The unpruned parent again, read from where :func:`load_parent` read it, directly in
    ``dtype``, frozen in eval mode on the device: the same weights as the parent (a preset is
    rebuilt from the job's seed), without a copy of the full fp32 parent ever sharing memory
    with the one pruning worked on. The global RNG is left as it was."""
    from engine.models import load_model

    with torch.random.fork_rng(devices=[]):
        teacher = load_model(prep.parent_source, dtype=dtype, vocab=data.vocab_size, seed=job.seed)
    return teacher.to(dist.device).eval().requires_grad_(False)


def _counts_meta(model: nn.Module) -> dict[str, Any]:
    from engine.pruning.common import count_nonzero_nonembed, count_params

    counts = count_params(model)
    return {"ratio_target": 0.0, "ratio": 0.0, "params_before": counts.total, "params_after": counts.nonzero,
            "nonembed_before": counts.nonembed, "nonembed_after": count_nonzero_nonembed(model)}


def prune(job: JobConfig, parent: nn.Module, data: TokenData,
          reference: dict[str, float] | None = None) -> tuple[nn.Module, dict, dict, dict]:
    """(pruned model, masks, count metadata, choices); ``method: none`` passes through.

    ``reference``: the parent's per-domain losses (dynamic loading of a trained method's stream).
    """
    if job.method == NO_PRUNING:
        return parent, {}, _counts_meta(parent), {}
    from engine.pruning import NEEDS_CALIB, TRAINED, get_method

    calib = data.calibration(job.calib_sequences, job.seed) if job.method in NEEDS_CALIB else None
    if calib is not None:
        calib = calib.to(next(parent.parameters()).device)
    torch.manual_seed(job.seed)
    args = dict(job.prune_args)
    if job.method in TRAINED:  # trains on the job's own mixture stream; its stage resumes from the run dir
        from engine.train.stage import StageTrainer

        args.update(stream_factory=lambda rows, seed: data.train_batches(rows, seed, reference),
                    seq_len=data.seq_len, state_dir=str(job.run_dir / PRUNE_STAGE), trainer=StageTrainer())
        args.setdefault("seed", job.seed)  # a grid's seeds must vary the pruning stage too
    report = get_method(job.method)(parent, job.ratio, calib, args=args or None)
    meta = {k: getattr(report, k) for k in ("ratio_target", "ratio", "params_before", "params_after",
                                            "nonembed_before", "nonembed_after")}
    # Tokens a trained pruning stage consumed: the curve's token axis starts there (true cost).
    meta["prune_tokens"] = int(report.choices.get("prune_tokens", 0))
    return report.model if report.model is not None else parent, dict(report.masks or {}), meta, report.choices


def reinit(model: nn.Module, seed: int, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Fresh weights of the same (pruned) shape: the from-scratch control."""
    torch.manual_seed(seed)
    like = next(model.parameters())
    fresh = type(model)(copy.deepcopy(model.config)).to(device=like.device, dtype=like.dtype)
    _mask_inplace(fresh, masks)
    return fresh


def _mask_inplace(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))


def _family(job: JobConfig, log: RunLog) -> tuple[str, str]:
    """(family, parent label) for the metadata; a run:<id> parent inherits its run's."""
    parent_run = log.other(job.parent[len(RUN_PREFIX):]) if job.parent.startswith(RUN_PREFIX) else None
    if parent_run is not None:
        meta = parent_run.get("meta", {})
        return job.family or meta.get("family", ""), meta.get("parent") or parent_label(job.parent)
    from data.hub import parse_model_source

    known = parse_model_source(job.parent).preset if not job.parent.startswith(RUN_PREFIX) else None
    family = job.family or (known.family if known is not None else "")
    return family, parent_label(job.parent)


def _pruning_dtype(job: JobConfig, parent: nn.Module, seq_len: int, dist: Dist,
                   earlier: dict[str, Any] | None) -> tuple[str, str]:
    """The dtype of the pruning forwards (engine.pruning.common), decided on rank 0 for all; a
    resumed run re-prunes in the dtype it recorded, so that its masks match its checkpoint."""
    from engine.pruning.common import choose_forward_dtype

    if earlier is not None:
        stored = earlier.get("pruning", {}).get("choices", {}).get("forward")
        return (stored["dtype"], stored["why"]) if stored else ("fp32", "fp32: recorded before the dtype was chosen")
    batch = int(job.prune_args.get("batch_size", 4))
    return broadcast(choose_forward_dtype("auto", parent, seq_len, batch) if dist.is_main else None, dist)


def prepare(job: JobConfig, data: TokenData, dist: Dist, log: RunLog, earlier: dict[str, Any] | None) -> Prepared:
    """Steps 2-4 of the module docstring (every rank builds the same model: same seeds).

    ``earlier``: run.json of the attempt a resume continues (None: a fresh run)."""
    fresh = earlier is None
    parent, resolved = load_parent(job, data)
    source = resolved.record()
    parent = parent.to(dist.device)  # scoring and L0 run on the device
    if source["kind"] == "hub":
        log.say(f"parent {source['hub_id']} at commit {source['commit']}")
    elif source["kind"] == "random":
        log.say(f"parent is a random init of {source['preset']} (no pretrained weights)")
    family, label = _family(job, log)
    meta: dict[str, Any] = {"family": family, "parent": label, "init": job.init, "source": source,
                            "objective": job.objective, "seed": job.seed, "method": job.method}
    if fresh:
        losses = _evaluate(parent, job, data, dist)
        meta["loss_before"] = losses.pop("eval_loss")
        parent_losses = {k.split(".", 1)[1]: v for k, v in losses.items()}
    else:
        meta["loss_before"] = earlier.get("meta", {}).get("loss_before")
        parent_losses = earlier.get("loss_before_domains", {})
    # A reconstructed start needs the parent's layers after pruning: saved now, read back one
    # at a time (on resume the checkpoint already holds the reconstructed weights).
    folder = job.run_dir / f"recon-start.rank{dist.rank}"
    source = recon_source(parent, folder) if fresh and job.objective in RECON_START else None
    forward = _pruning_dtype(job, parent, data.seq_len, dist, earlier) if job.method in NEEDS_CALIB else ("fp32", "")
    with forward_precision(forward[0], dist.device.type):
        model, masks, counts, choices = prune(job, parent, data, parent_losses)
    del parent  # a method that built a new model leaves the full parent unreferenced here
    choices = {**choices, "forward": {"dtype": forward[0], "why": forward[1]}} if forward[1] else choices
    meta.update(counts)
    if job.init == "random":
        model = reinit(model, job.seed + 1, masks)
    recon = None
    if source is not None:
        calib = data.calibration(job.recon.calib_sequences, job.seed).to(dist.device)
        with forward_precision(forward[0], dist.device.type):
            recon = reconstruct_start(job, model, source, calib, masks, choices, folder)
    return Prepared(model, resolved, masks, meta, choices, parent_losses, recon)


def _evaluate(model: nn.Module, job: JobConfig, data: TokenData, dist: Dist, shard: bool = True) -> dict[str, float]:
    """Per-domain held-out losses over the eval split; ``eval_loss`` averages the train domains."""
    return evaluate(model, data.eval_domains,
                    lambda domain: data.eval_batches(domain, job.eval.batch_size, job.eval.max_sequences),
                    shard=shard, device=dist.device, mean_over=data.domains)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on norms and biases (1-D tensors): decaying RMSNorm gains towards 0 hurts.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _checkpoint_activations(model: nn.Module) -> None:
    """transformers' activation checkpointing, non-reentrant (it needs no input that requires
    grad and recomputes under ZeRO-3's parameter hooks); newer transformers renamed the method."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_engine(job: JobConfig, model: nn.Module, dist: Dist, seq_len: int) -> tuple[Engine, dict]:
    """``deepspeed.initialize`` with a torch AdamW; returns (engine, the DeepSpeed JSON)."""
    import deepspeed

    ds_json = build_ds_config(job, dist.world, seq_len)
    if job.deepspeed.activation_checkpointing:  # before initialize: ZeRO-3 hooks wrap the layers as they are
        _checkpoint_activations(model)
    opt = job.optim
    optimizer = torch.optim.AdamW(_param_groups(model, opt.weight_decay), lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                  fused=True)  # one kernel per tensor: the per-op default dominated a CPU step at 135M
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_json)
    return engine, ds_json


# -- the loop ----------------------------------------------------------------------------------

def apply_masks(engine: Engine, masks: dict[str, torch.Tensor], zero_stage: int) -> None:
    """Re-impose sparsity: an optimizer step moves pruned weights off zero."""
    if not masks:
        return
    if zero_stage < 3:
        _mask_inplace(engine.module, masks)
        return
    import deepspeed

    params = dict(engine.module.named_parameters())
    targets = [params[name] for name in masks]
    with deepspeed.zero.GatheredParameters(targets, modifier_rank=0):
        if engine.global_rank == 0:  # rank 0's edit is re-partitioned to every rank on exit
            _mask_inplace(engine.module, masks)


def _train_step(engine: Engine, stream: Stream, objective: Objective, job: JobConfig, dist: Dist) -> float:
    """One optimizer step over grad_accum micro-batches; returns the mean loss over all ranks."""
    mb = job.deepspeed.micro_batch
    total = 0.0
    for _ in range(job.deepspeed.grad_accum):
        rows = next(stream)  # [mb * world, T]: the global micro-batch, identical on every rank
        ids = rows[dist.rank * mb:(dist.rank + 1) * mb].to(dist.device)
        loss = objective(engine, ids)
        engine.backward(loss)
        engine.step()  # DeepSpeed steps the optimizer only at the accumulation boundary
        total += float(loss.detach())
    return mean_across_ranks(total / job.deepspeed.grad_accum, dist)


def _eval_row(engine: Engine, job: JobConfig, data: TokenData, state: State, dist: Dist) -> dict[str, Any]:
    losses = _evaluate(engine, job, data, dist, shard=job.deepspeed.zero_stage < 3)
    train_loss = state.loss_sum / state.loss_count if state.loss_count else math.nan
    state.loss_sum, state.loss_count = 0.0, 0
    return {"step": state.step, "tokens": state.tokens, **losses, "train_loss": train_loss,
            "lr": float(engine.get_lr()[0]), "elapsed_s": round(state.elapsed_s, 3)}


def _check_divergence(row: dict[str, Any], state: State, factor: float) -> None:
    loss = row["eval_loss"]
    if not math.isfinite(loss):
        raise Diverged(f"eval_loss is {loss} at step {row['step']}")
    if state.step > 0 and loss > factor * state.start_loss:
        raise Diverged(f"eval_loss {loss:.4g} at step {row['step']} exceeds {factor:g} x the "
                       f"post-pruning loss {state.start_loss:.4g}")


def train(engine: Engine, job: JobConfig, data: TokenData, objective: Objective, masks: dict,
          state: State, dist: Dist, stream: Stream, log: RunLog) -> State:
    """Train to the token budget, evaluating, logging and checkpointing on the schedule
    (eval points, and the wall clock's ``checkpoint_every_s``) through :func:`loop.run`.

    Raises:
        Diverged: NaN/inf train loss, or an eval loss beyond the divergence factor.
    """
    total = optimizer_steps(job, dist.world, data.seq_len)
    per_step = tokens_per_step(job, dist.world, data.seq_len)
    # the first log-spaced point is the first step taken at the peak rate
    at = set(eval_steps(total, job.eval.points, start=warmup_steps(job.optim, total) + 1))

    def step() -> None:
        t0 = time.perf_counter()
        lr = float(engine.get_lr()[0])  # the lr this step uses
        state.moved = state.moved or lr > 0.0
        loss = _train_step(engine, stream, objective, job, dist)
        apply_masks(engine, masks, job.deepspeed.zero_stage)
        state.step += 1
        state.tokens += per_step
        state.elapsed_s += time.perf_counter() - t0
        if not math.isfinite(loss):
            raise Diverged(f"train loss is {loss} at step {state.step}")
        state.loss_sum += loss
        state.loss_count += 1
        monitor.write_step(engine, state.tokens, loss, lr)

    def after(step: int) -> loop.Mark:
        if getattr(stream, "update_due", False):  # dynamic loading: same decision on every rank
            losses = _evaluate(engine, job, data, dist, shard=job.deepspeed.zero_stage < 3)
            stream.update_domain_losses({d: losses[f"eval_loss.{d}"] for d in data.domains})
        if step not in at:  # no checkpoint before the weights move: it could not carry a deferred point
            return loop.Mark.PLAIN if state.moved else loop.Mark.HOLD
        if not state.moved and step < total:
            at.add(step + 1)  # no fake flat point: evaluate once the weights have moved
            return loop.Mark.HOLD
        row = _eval_row(engine, job, data, state, dist)
        log.append(row)  # the row first, then its checkpoint
        monitor.write_eval(engine, row)
        _check_divergence(row, state, job.eval.divergence_factor)
        if job.stop is not None and broadcast(online_stop.should_stop(job, log, state.step, state.tokens), dist):
            return loop.Mark.STOP  # the online budget is reached: the run ends done, at this row
        return loop.Mark.POINT

    def save(step: int) -> None:
        state.stream = stream.state_dict()
        checkpoint.save(engine, job.run_dir, step, {"state": vars(state)}, dist.is_main)

    loop.run(engine, total, lambda: state.step, step, after, save if job.checkpoint else None,
             loop.SaveClock(job.checkpoint_every_s, dist))
    return state


def with_resolved_zero_stage(job: JobConfig, dist: Dist, earlier: dict[str, Any] | None) -> tuple[JobConfig, str]:
    """(the job with ``zero_stage: auto`` replaced by the stage this device trains with, why).

    A resumed run keeps the stage its first attempt recorded (its checkpoint's optimizer state
    is partitioned that way); a run recorded before ``auto`` existed has 0 there, what its
    unset stage meant then. Every rank decides alike: the device type and the store agree.
    ``earlier``: run.json of the attempt a resume continues (None: a fresh run)."""
    ds = job.deepspeed
    if ds.zero_stage == ZERO_AUTO and earlier is not None:
        kept = int(earlier["config"]["deepspeed"]["zero_stage"])
        stage, why = kept, f"auto: {kept}, as this run's first attempt chose (its checkpoint is in it)"
    else:
        stage, why = resolve_zero_stage(ds, dist.device.type)
    return dataclasses.replace(job, deepspeed=dataclasses.replace(ds, zero_stage=stage)), why


def with_resolved_precision(job: JobConfig, model: nn.Module, seq_len: int, dist: Dist,
                            earlier: dict[str, Any] | None) -> tuple[JobConfig, str]:
    """(the job with ``precision: auto`` replaced by what this device trains ``model`` in, why).

    Rank 0 decides (on a CPU by timing both dtypes at the model's shape) and every rank
    follows: ranks that measured apart could disagree. A resumed run keeps the precision its
    first attempt recorded: its checkpoint's optimizer state is in that layout."""
    from engine.probe import Workload, resolve_precision

    ds = job.deepspeed
    if ds.precision == "auto" and earlier is not None:
        kept = earlier["config"]["deepspeed"]["precision"]
        choice = (kept, f"auto: {kept}, as this run's first attempt chose (its checkpoint is in it)")
    else:
        choice = resolve_precision(ds.precision, dist.device.type, ds.zero_stage,
                                   Workload.of(model.config, seq_len, ds.micro_batch, "train")) if dist.is_main else None
    precision, why = broadcast(choice, dist)
    return dataclasses.replace(job, deepspeed=dataclasses.replace(ds, precision=precision)), why


# -- one job -----------------------------------------------------------------------------------

def _start_fresh(engine: Engine, job: JobConfig, data: TokenData, prep: Prepared, ds_json: dict,
                 dist: Dist, log: RunLog) -> State:
    """Write run.json (status running) and the step-0 row: the loss right after pruning."""
    log.start({"status": "running", "reason": None, "meta": {"run_id": job.run_id, **prep.meta},
               "config": job.to_dict(), "deepspeed_json": ds_json,
               "pruning": {"choices": prep.choices, **({"recon": prep.recon} if prep.recon else {})},
               "world_size": dist.world, "loss_before_domains": prep.parent_losses})
    state = State(tokens=int(prep.meta.get("prune_tokens", 0)))
    row = _eval_row(engine, job, data, state, dist)
    state.start_loss = row["eval_loss"]
    log.append(row)
    monitor.write_eval(engine, row)
    if not math.isfinite(state.start_loss):
        raise Diverged(f"eval_loss is {state.start_loss} right after pruning")
    return state


def _resume(engine: Engine, job: JobConfig, stream: Stream, dist: Dist, log: RunLog) -> State:
    client = checkpoint.load(engine, job.run_dir)
    state = State(**client["state"])
    stream.load_state_dict(state.stream)
    log.resume(state.step)
    if dist.is_main:
        monitor.rewind_csv(engine, state.tokens)
    return state


def _save_final(engine: Engine, job: JobConfig, dist: Dist) -> None:
    """``save_pretrained`` of the trained model into ``<run dir>/model`` (grid parents).

    Built aside and swapped in (``data.runs.atomic_dir``): a kill mid-save leaves no half
    model for a child job to load, and the directory is readable as the umask allows.
    """
    from data.runs import atomic_dir
    from engine.models import resolve_model, save_model

    tokenizer_from = resolve_model(resolve_parent(job.parent, job.runs_dir)).path  # a hub parent: its snapshot

    def save() -> None:
        with atomic_dir(job.run_dir / "model") as tmp:
            save_model(engine.module, tmp, tokenizer_from=tokenizer_from)

    if job.deepspeed.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            if dist.is_main:
                save()
    elif dist.is_main:
        save()


def run_job(job: JobConfig, dist: Dist, data: TokenData | None = None) -> str:
    """Run one job to completion; returns its final status (``done``, ``failed``, ``skipped``).

    The run's one :class:`RunLog` records a failure here, once; the exception goes on up
    (a diverged run ends ``failed`` without one)."""
    log = RunLog(job.runs_dir, job.run_id, dist.is_main)
    try:
        return _run(job, dist, data, log)
    except Diverged as exc:
        log.fail(f"diverged: {exc}", Failure.DIVERGED.value, job.to_dict())
        return "failed"
    except BaseException as exc:
        if isinstance(exc, Exception) or log.exists():  # an interrupt before run.json leaves none
            log.fail(f"{type(exc).__name__}: {exc}", failure_kind(exc).value, job.to_dict())
        raise


def _run(job: JobConfig, dist: Dist, data: TokenData | None, log: RunLog) -> str:
    mode = decide(job, log, dist)
    if mode == "skip":
        return "skipped"
    data = data if data is not None else open_shards(job.data)
    check_seq_len(job, data.seq_len)
    check_budget(job, dist.world, data.seq_len)
    earlier = log.earlier() if mode == "resume" else None  # every rank keeps its first attempt's choices
    auto_stage = job.deepspeed.zero_stage == ZERO_AUTO
    job, zero_reason = with_resolved_zero_stage(job, dist, earlier)
    if auto_stage:
        log.say(f"ZeRO stage {zero_reason}")
    prep = prepare(job, data, dist, log, earlier)
    prep.meta["zero_stage_reason"] = zero_reason
    job, prep.meta["precision_reason"] = with_resolved_precision(job, prep.model, data.seq_len, dist, earlier)
    log.say(f"precision {prep.meta['precision_reason']}")
    gc.collect()  # the parent's pieces a pruning method left in reference cycles go before the engine
    engine, ds_json = build_engine(job, prep.model, dist, data.seq_len)
    teacher = objective = None
    try:
        monitor.announce(job, dist.is_main)
        if job.objective in TEACHER_OBJECTIVES:  # after initialize: the student's fp32 copy is gone by now
            teacher = load_teacher(job, prep, data, dist, teacher_dtype(job, engine.module))
        objective = make_objective(job, teacher, engine.module, prep.choices)
        stream = data.train_batches(job.deepspeed.micro_batch * dist.world, job.seed, prep.parent_losses)
        if mode == "resume":
            state = _resume(engine, job, stream, dist, log)
        else:
            state = _start_fresh(engine, job, data, prep, ds_json, dist, log)
        train(engine, job, data, objective, prep.masks, state, dist, stream, log)
        if job.save_model:
            _save_final(engine, job, dist)
        log.done()
        if dist.is_main:
            checkpoint.remove(job.run_dir)
            shutil.rmtree(job.run_dir / PRUNE_STAGE, ignore_errors=True)  # a trained pruning stage's resume point
        return "done"
    finally:
        monitor.close(engine)
        engine.destroy() if hasattr(engine, "destroy") else None
        del engine, prep, teacher, objective
        gc.collect()
