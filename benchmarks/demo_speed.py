"""The demo's pretraining step as a newcomer runs it, against a plain loop doing the same work.

Issue 14 found `engine demo` slow for reasons a per-step benchmark cannot see (2 OpenMP threads
per job on a 2-vCPU machine, bf16 emulated on the CPU): this runs one whole pretraining job of
``grids/demo.yaml`` (its smallest parent by default) through ``engine train --config`` in a
child environment WITHOUT ``OMP_NUM_THREADS`` (so the product's own probe chooses), start-up,
evals and the model save included, and compares its wall time with a plain PyTorch loop that
takes the same number of optimizer steps on the same model and batch shape at the fastest of
{1, all cores} threads x {fp32, bf16}, measured in the same run. Run it alone on the machine.

    python benchmarks/demo_speed.py                      # needs the demo's shards: engine demo first
    python benchmarks/demo_speed.py --parent l           # the demo's largest parent
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import best_plain, time_block  # noqa: E402  (the same plain baseline)

ROOT = Path(__file__).resolve().parents[1]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", type=Path, default=ROOT / "grids" / "demo.yaml")
    p.add_argument("--parent", default=None, help="parent name in the grid (default: the first)")
    p.add_argument("--vocab", type=int, default=512, help="the demo tokenizer's vocabulary")
    return p.parse_args()


def parent_job(grid_path: Path, name: str | None, runs: Path):
    """The grid's pretraining job for ``name`` written as a complete job file under ``runs``."""
    from engine.grid.spec import load_grid, write_job_files

    grid = load_grid(grid_path)
    files = dict(zip((j.run_id for j in grid.jobs), write_job_files(grid, runs)))
    parents = [j for j in grid.jobs if j.kind == "parent"]
    job = next((j for j in parents if name is None or j.run_id.startswith(f"{name}_")), None)
    if job is None:
        raise SystemExit(f"no parent {name!r} in {grid_path}; parents: "
                         f"{', '.join(j.run_id.split('_')[0] for j in parents)}")
    if not Path(job.config.data.shards).exists():
        raise SystemExit(f"shards {job.config.data.shards} missing: run `engine demo` first")
    return job, files[job.run_id]


def run_engine(job_file: Path) -> float:
    """Wall seconds of ``engine train --config`` in an environment without OMP_NUM_THREADS."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).with_name("engine")), "train", "--config", str(job_file)],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        raise SystemExit(f"engine train failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    chose = [line for line in (out.stdout + out.stderr).splitlines() if "thread" in line][:2]
    print("engine said        : " + " | ".join(s.strip() for s in chose))
    return wall


def main() -> int:
    args = parse()
    from engine.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        job, job_file = parent_job(args.grid, args.parent, Path(tmp) / "runs")
        cfg = job.config
        seq = cfg.data.seq_len or 128
        batch = cfg.deepspeed.micro_batch
        steps = max(1, cfg.tokens // (batch * seq))
        engine_wall = run_engine(job_file)
    model = build_model(cfg.parent, vocab=args.vocab, seed=0)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, args.vocab, (batch, seq), generator=g) for _ in range(8)]
    cores = os.cpu_count() or 1
    best, step, rates = best_plain(model, batches, cfg.optim.lr, cores, steps=6)
    torch.set_num_threads(best[0])
    plain_wall = time_block(step, batches, steps) * steps
    print(f"job                : {job.run_id} ({cfg.parent}, {cfg.tokens:,} tokens = {steps} steps of {batch}x{seq})")
    print(f"plain PyTorch best : {plain_wall:8.1f} s for the same steps ({best[0]} thread(s), {best[1]})")
    print(f"engine train       : {engine_wall:8.1f} s wall (launcher, start-up, evals, save included)")
    print(f"ratio engine/plain : {engine_wall / plain_wall:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
