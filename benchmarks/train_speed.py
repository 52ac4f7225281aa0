"""Training speed: the engine at the settings it picks by itself against the best plain loop.

"The settings it picks" are what a newcomer gets in a fresh shell with no OMP_NUM_THREADS:
threads from the machine probe (``engine.probe``), precision ``auto`` resolved for this device,
and the ZeRO stage of the demo grid. The baseline is a plain PyTorch loop (same transformers
model, same batches, torch AdamW) at the FASTEST of {1, all cores} threads x {fp32, bf16},
found in this run. Engine and baseline then alternate in blocks so that machine load hits both
alike; medians of per-block step times are compared. Goal: engine / best plain <= 1.10.

``auto`` is resolved as a job resolves it: on a CPU with native bf16 the machine probe times
fp32 against bf16 at this model's shape, sequence and micro-batch (cached per machine; the
probe runs before any clock starts), and the engine trains in what it picked.

``--table`` instead prints plain-loop tokens/s for threads x precision x model size.

    python benchmarks/train_speed.py                          # tiny-llama-s, the product's settings
    python benchmarks/train_speed.py --model ref-llama-5 --micro-batch 32
    python benchmarks/train_speed.py --preset smollm2         # SmolLM2-135M's shape, 4 x 512 tokens
    python benchmarks/train_speed.py --table                  # the README's throughput table
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("DS_ACCELERATOR", "cpu")

TABLE_MODELS = ("ref-llama-1", "ref-llama-3", "ref-llama-5", "tiny-llama-l")
PRESETS = {"smollm2": {"model": "smollm2-135m", "vocab": 49152, "seq": 512, "micro_batch": 4, "blocks": 2,
                       "steps": 2}}
"""Named settings: ``smollm2`` is SmolLM2-135M's shape (random weights: speed does not depend
on them) at 4 x 512 tokens per step, few steps because one takes seconds on a CPU."""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-llama-s")
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--zero", type=int, default=1, help="ZeRO stage of the engine side (the demo's: 1)")
    p.add_argument("--blocks", type=int, default=5, help="interleaved blocks per side")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per block")
    p.add_argument("--table", action="store_true", help="plain-loop tokens/s: threads x precision x size")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named defaults of the other flags (flags given win)")
    preset = p.parse_known_args()[0].preset
    if preset:
        p.set_defaults(**PRESETS[preset])
    return p.parse_args()


def plain_stepper(model, lr: float, dtype) -> Callable:
    import torch

    from engine.train.objectives import lm_loss

    m = copy.deepcopy(model).train()
    if dtype is not None:
        m = m.to(dtype)  # DeepSpeed's bf16 mode keeps bf16 weights too
    opt = torch.optim.AdamW(m.parameters(), lr=lr, fused=True)  # the fastest torch AdamW, as the engine's

    def step(ids) -> None:
        loss = lm_loss(m, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_block(step: Callable, batches: list, steps: int) -> float:
    t0 = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    return (time.perf_counter() - t0) / steps


def best_plain(model, batches: list, lr: float, cores: int, steps: int) -> tuple[tuple[int, str], Callable, dict]:
    """The fastest plain setting of threads x precision, measured now (each warmed up first)."""
    import torch

    rates = {}
    steppers = {}
    for threads in sorted({1, cores}):
        for precision in ("fp32", "bf16"):
            torch.set_num_threads(threads)
            step = plain_stepper(model, lr, torch.bfloat16 if precision == "bf16" else None)
            time_block(step, batches, 2)
            rates[(threads, precision)] = time_block(step, batches, steps)
            steppers[(threads, precision)] = step
    best = min(rates, key=rates.get)
    return best, steppers[best], rates


def table(args: argparse.Namespace) -> int:
    import torch

    from engine.models import build_model
    from engine.probe import usable_cores

    cores = usable_cores()
    print(f"plain PyTorch loop, tokens/s, batch {args.micro_batch}x{args.seq}, vocab {args.vocab}")
    print(f"{'model':14s} {'params':>8s} " + " ".join(f"{t}thr-{p:>4s}" for t in sorted({1, cores})
                                                   for p in ("fp32", "bf16")))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, args.vocab, (args.micro_batch, args.seq), generator=g) for _ in range(4)]
    for name in TABLE_MODELS:
        model = build_model(name, vocab=args.vocab, seed=0)
        params = sum(p.numel() for p in model.parameters())
        _, _, rates = best_plain(model, batches, 1e-3, cores, args.steps)
        tokens = args.micro_batch * args.seq
        print(f"{name:14s} {params / 1e6:7.2f}M " + " ".join(f"{tokens / rates[(t, p)]:10.0f}"
                                                         for t in sorted({1, cores}) for p in ("fp32", "bf16")))
    return 0


def main() -> int:
    args = parse()
    if args.table:
        return table(args)
    from engine.probe import Workload, machine_plan, resolve_precision

    plan = machine_plan()  # what `engine train` / `engine grid launch` would choose here
    import torch

    from engine.models import build_model
    from engine.train.config import job_from_dict
    from engine.train.objectives import lm_loss
    from engine.train.recipe import _train_step, apply_masks, build_engine
    from engine.train.runtime import init_distributed

    dist = init_distributed()
    model = build_model(args.model, vocab=args.vocab, seed=0)
    torch.set_num_threads(plan.single_threads)  # the probe times at the threads the engine runs at
    precision, why = resolve_precision("auto", dist.device.type, args.zero,
                                       Workload.of(model.config, args.seq, args.micro_batch, "train"))
    job = job_from_dict({"parent": args.model, "tokens": 10**9, "data": {"shards": "-"},
                         "optim": {"grad_clip": 0.0},
                         "deepspeed": {"zero_stage": args.zero, "precision": precision,
                                       "micro_batch": args.micro_batch}})
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, args.vocab, (args.micro_batch, args.seq), generator=g) for _ in range(8)]
    best, plain_step, rates = best_plain(model, batches, job.optim.lr, plan.cores, args.steps)
    engine, _ = build_engine(job, copy.deepcopy(model), dist, args.seq)
    engine.train()
    trained_in = {p.dtype for p in engine.module.parameters()}
    expect = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
    if trained_in != {expect}:  # the engine side must run what auto picked, not what we assume
        raise SystemExit(f"engine weights are {trained_in}, not {precision} as auto picked")
    stream = iter(lambda: batches[time.perf_counter_ns() % len(batches)], None)

    def engine_step(_ids) -> None:
        _train_step(engine, stream, lm_loss, job, dist)
        apply_masks(engine, {}, args.zero)

    threads = {"engine": plan.single_threads, "plain": best[0]}
    steps = {"engine": engine_step, "plain": plain_step}
    times: dict[str, list[float]] = {"engine": [], "plain": []}
    for block in range(args.blocks + 1):  # block 0 warms both up and is discarded
        for side in ("engine", "plain"):
            torch.set_num_threads(threads[side])
            dt = time_block(steps[side], batches, args.steps)
            if block:
                times[side].append(dt)
    e, p = statistics.median(times["engine"]), statistics.median(times["plain"])
    tokens = args.micro_batch * args.seq
    params = sum(x.numel() for x in model.parameters())
    print(f"model {args.model} ({params / 1e6:.2f}M params), batch {args.micro_batch}x{args.seq}, "
          f"{args.blocks} blocks x {args.steps} steps")
    print(f"machine probe      : {plan.describe()}")
    print("plain settings     : " + ", ".join(f"{t} thr {pr}: {tokens / r:.0f} tok/s" for (t, pr), r in rates.items()))
    print(f"plain PyTorch best : {p * 1e3:8.1f} ms/step ({tokens / p:.0f} tok/s; {best[0]} thread(s), {best[1]})")
    print(f"engine (product)   : {e * 1e3:8.1f} ms/step ({tokens / e:.0f} tok/s; {plan.single_threads} thread(s), "
          f"ZeRO-{args.zero}, {why})")
    print(f"ratio engine/best  : {e / p:8.3f}  (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
