"""The chosen design as a grid YAML that ``engine grid plan|launch`` accepts as it is.

The grid schema (``engine.grid.spec.GridSpec``) is a cross product ``parents x methods x
ratios`` at one post-training budget, which is why designs are searched in that shape. Real
parents are given by ``path`` (a ``preset`` parent would be pretrained from scratch by the
grid): their hub id (``meta-llama/Llama-3.2-1B``, fetched into the huggingface_hub cache by the
engine), or with ``models_dir`` the folder ``<models_dir>/<model-table name>`` where the user
saved the checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path

from data.units import format_count
from planner.design.candidates import EVAL_POINTS
from planner.design.plan import DesignPlan


def grid_name(p: DesignPlan) -> str:
    q = p.query
    size = q.parent.name or format_count(q.parent.params_before)
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"design-{q.parent.family}-{q.method}-{size}-r{q.ratio:g}")


def grid_document(p: DesignPlan, shards: str, models_dir: str) -> dict:
    """The grid as a mapping (``GridSpec``'s keys)."""
    d, q = p.chosen, p.query
    return {
        "name": grid_name(p),
        "data": {"shards": shards, "seq_len": 2048},
        "parents": [{"name": s.name, "path": str(Path(models_dir) / s.name) if models_dir else s.hf_id, "family": s.family}
                    for s in d.parents],
        "methods": [q.method],
        "ratios": [float(r) for r in d.ratios],
        "objectives": ["lm"],
        "tokens": int(round(d.tokens)),
        # The fit reads every checkpoint of the curve: the design counted on this many. The
        # rest is what grids/p2-llama3.yaml runs on 8 x 80 GB (engine grid plan --estimate);
        # a constant LR after warm-up keeps one run's checkpoints valid for smaller budgets.
        "train": {"eval": {"points": EVAL_POINTS, "max_sequences": 256, "batch_size": 8},
                  "optim": {"lr": 1.0e-4, "warmup_frac": 0.01, "schedule": "constant"},
                  "deepspeed": {"micro_batch": 4, "grad_accum": 8, "zero_stage": 2, "precision": "bf16"},
                  "calib_sequences": 128},
    }


def grid_yaml(p: DesignPlan, shards: str, models_dir: str) -> str:
    import yaml

    d, q = p.chosen, p.query
    lo, hi = p.interval("chosen")
    head = [f"# {q.command()}: {len(d.runs)} runs, {d.gpu_hours:.3g} {q.gpu.name.upper()} GPU-hours at MFU {q.mfu:g}",
            f"# promised: D* = {format_count(p.d_star)} [{format_count(lo)}, {format_count(hi)}] (95%, prior: {p.prior.kind})",
            "# parents: " + ", ".join(f"{s.name} = {s.hf_id}" for s in d.parents)]
    return "\n".join(head) + "\n" + yaml.safe_dump(grid_document(p, shards, models_dir), sort_keys=False)


def write_grid(p: DesignPlan, path: str | Path, shards: str, models_dir: str, force: bool) -> Path:
    """Write the grid atomically; an existing file is kept unless ``force``."""
    from data.cli import check_output_file
    from data.runs import write_bytes_atomic

    check_output_file(path, force=force)
    write_bytes_atomic(Path(path), grid_yaml(p, shards, models_dir).encode())
    return Path(path)
