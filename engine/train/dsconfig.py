"""The ONE function that turns a job's dataclasses into DeepSpeed's JSON config.

Nothing else writes DeepSpeed JSON: the job YAML is the single source of truth, and the dict
built here is stored next to the run (``run.json`` -> ``deepspeed_json``) for provenance.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from engine.train.config import ZERO_AUTO, DeepSpeedConfig, JobConfig, OptimConfig

MONITOR_DIR = "monitor"
"""Run-dir folder of DeepSpeed's monitor outputs when ``monitor.dir`` is empty."""


def optimizer_steps(job: JobConfig, world_size: int, seq_len: int) -> int:
    """Optimizer steps that fit in the token budget (floor: never train past it)."""
    return job.tokens // tokens_per_step(job, world_size, seq_len)


def tokens_per_step(job: JobConfig, world_size: int, seq_len: int) -> int:
    """Tokens of one optimizer step over all ranks (packed shards hold no padding)."""
    ds = job.deepspeed
    return ds.micro_batch * ds.grad_accum * world_size * seq_len


def warmup_steps(opt: OptimConfig, total_steps: int) -> int:
    """Optimizer steps of the learning-rate warm-up (at least one)."""
    return max(1, round(opt.warmup_frac * total_steps))


def _scheduler(opt: OptimConfig, total_steps: int) -> dict[str, Any]:
    """DeepSpeed's own warm-up schedulers: their state rides in the checkpoint for free."""
    warmup = warmup_steps(opt, total_steps)
    # DeepSpeed's warm-up starts AT its minimum: a minimum of 0 would make step 1 a no-op
    start = 1.0 / (warmup + 1)
    if opt.schedule == "cosine":
        return {"type": "WarmupCosineLR",
                "params": {"total_num_steps": max(total_steps, warmup), "warmup_num_steps": warmup,
                           "warmup_min_ratio": start, "cos_min_ratio": opt.min_lr_ratio,
                           "warmup_type": "linear"}}
    if opt.schedule == "linear":
        return {"type": "WarmupDecayLR",
                "params": {"total_num_steps": max(total_steps, warmup + 1), "warmup_num_steps": warmup,
                           "warmup_min_lr": start * opt.lr, "warmup_max_lr": opt.lr, "warmup_type": "linear"}}
    return {"type": "WarmupLR",
            "params": {"warmup_num_steps": warmup, "warmup_min_lr": start * opt.lr, "warmup_max_lr": opt.lr,
                       "warmup_type": "linear"}}


def resolve_zero_stage(ds: DeepSpeedConfig, device_type: str) -> tuple[int, str]:
    """(ZeRO stage, why) that ``ds`` trains with on a ``device_type`` (``cuda``, ``cpu``, ...).

    ``auto`` takes stage 1 wherever bf16 may be chosen: on an accelerator (``precision: auto``
    takes native bf16 there) and with ``precision: bf16``; stage 0 accumulates bf16 gradients
    and drifts. Stage 1 shards only the optimizer state, so one process trains as at stage 0.
    On a CPU it keeps stage 0, where ``auto`` precision is fp32 (as before ``auto`` existed).
    """
    if ds.zero_stage != ZERO_AUTO:
        return int(ds.zero_stage), f"{ds.zero_stage} as requested"
    if ds.precision == "bf16":
        return 1, "auto: 1 (precision bf16 needs ZeRO stage >= 1)"
    if device_type != "cpu":
        return 1, f"auto: 1 on {device_type} (bf16 under precision auto needs ZeRO stage >= 1)"
    return 0, "auto: 0 on CPU (precision auto trains fp32 there)"


def _zero(stage: int) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": stage}
    if stage == 3:
        # Default thresholds keep every parameter of a small model unpartitioned ("persistent"),
        # which silently turns ZeRO-3 into ZeRO-2; 0 partitions everything.
        zero["stage3_param_persistence_threshold"] = 0
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return zero


def wandb_installed() -> bool:
    return importlib.util.find_spec("wandb") is not None


def monitor_dir(job: JobConfig) -> Path:
    """Where the monitor's files land: ``<run dir>/monitor`` or ``<monitor.dir>/<run_id>``."""
    return Path(job.monitor.dir) / job.run_id if job.monitor.dir else job.run_dir / MONITOR_DIR


def _monitor(job: JobConfig) -> dict[str, Any]:
    """DeepSpeed's ``tensorboard`` / ``csv_monitor`` / ``wandb`` sections (only those asked for).

    DeepSpeed writes into ``output_path/job_name``; splitting ``monitor_dir`` that way keeps
    every run's files in one folder of its own. W&B is left out where ``wandb`` is missing
    (the recipe says so) rather than failing a job half way through a grid.
    """
    mon = job.monitor
    where = monitor_dir(job)
    target = {"output_path": str(where.parent), "job_name": where.name}
    sections: dict[str, Any] = {}
    if mon.tensorboard:
        sections["tensorboard"] = {"enabled": True, **target}
    if mon.csv:
        sections["csv_monitor"] = {"enabled": True, **target}
    if mon.wandb and wandb_installed():
        sections["wandb"] = {"enabled": True, "project": mon.wandb_project, "group": job.family or None}
    return sections


def build_ds_config(job: JobConfig, world_size: int, seq_len: int, device_type: str = "cpu") -> dict[str, Any]:
    """DeepSpeed config for ``job`` on ``world_size`` ranks: :func:`ds_config` of its settings,
    its step count and its monitor sections.

    A ``zero_stage: auto`` still in ``job`` is resolved for ``device_type``
    (:func:`resolve_zero_stage`); the recipe passes a job whose stage is already resolved.
    """
    return ds_config(job.deepspeed, job.optim, optimizer_steps(job, world_size, seq_len), world_size,
                     device_type, _monitor(job))


def ds_config(ds: DeepSpeedConfig, opt: OptimConfig, total_steps: int, world_size: int,
              device_type: str = "cpu", monitor: dict[str, Any] | None = None) -> dict[str, Any]:
    """DeepSpeed JSON of a training stage from its DeepSpeed and optimiser settings alone:
    ``total_steps`` optimizer steps on ``world_size`` ranks, plus DeepSpeed ``monitor`` sections.

    The optimizer is NOT in the JSON: the caller passes ``torch.optim.AdamW`` to
    ``deepspeed.initialize`` so that nothing JIT-compiles (DeepSpeed's fused/CPU Adam takes
    35-80 s to build on first use).
    """
    config: dict[str, Any] = {
        "train_batch_size": ds.micro_batch * ds.grad_accum * world_size,
        "train_micro_batch_size_per_gpu": ds.micro_batch,
        "gradient_accumulation_steps": ds.grad_accum,
        "gradient_clipping": opt.grad_clip,
        "zero_optimization": _zero(resolve_zero_stage(ds, device_type)[0]),
        "scheduler": _scheduler(opt, total_steps),
        "steps_per_print": 10**9,  # the recipe logs; DeepSpeed's own prints would flood stdout
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,  # torch AdamW under ZeRO is fine (docs/deepspeed-cpu.md)
        **(monitor or {}),
    }
    if ds.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif ds.precision == "fp16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 12}
    return config
