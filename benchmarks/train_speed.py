"""Time per optimizer step: the engine's DeepSpeed step against a plain PyTorch loop.

Both train the same transformers Llama on the same batches, in this process, interleaved in
blocks (engine block, plain block, ...) so machine load hits both alike; medians of per-block
step times are compared. Goal: engine / plain <= 1.10.

    python benchmarks/train_speed.py                       # tiny-llama-s, ZeRO-0 fp32
    python benchmarks/train_speed.py --model tiny-llama-m --zero 1 --precision bf16
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-llama-s")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--zero", type=int, default=0)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--blocks", type=int, default=6, help="interleaved blocks per side")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps per block")
    return p.parse_args()


def main() -> int:
    args = parse()
    import torch

    from engine.models import build_model
    from engine.train.config import job_from_dict
    from engine.train.objectives import lm_loss
    from engine.train.recipe import _train_step, apply_masks, build_engine
    from engine.train.runtime import init_distributed

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    dist = init_distributed()
    job = job_from_dict({"parent": args.model, "tokens": 10**9, "data": {"shards": "-"},
                         "optim": {"grad_clip": 0.0},
                         "deepspeed": {"zero_stage": args.zero, "precision": args.precision,
                                       "micro_batch": args.micro_batch}})
    model = build_model(args.model, vocab=args.vocab, seed=0)
    plain = copy.deepcopy(model).train()
    engine, _ = build_engine(job, model, dist, args.seq)
    engine.train()
    opt = torch.optim.AdamW(plain.parameters(), lr=job.optim.lr, betas=job.optim.betas,
                            weight_decay=job.optim.weight_decay)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, args.vocab, (args.micro_batch, args.seq), generator=g) for _ in range(8)]
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def plain_step(ids: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = lm_loss(plain, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    stream = iter(lambda: batches[int(time.perf_counter_ns()) % len(batches)], None)
    times: dict[str, list[float]] = {"engine": [], "plain": []}
    for block in range(args.blocks + 1):  # block 0 warms both up and is discarded
        for side in ("engine", "plain"):
            t0 = time.perf_counter()
            for i in range(args.steps):
                if side == "engine":
                    _train_step(engine, stream, lm_loss, job, dist)
                    apply_masks(engine, {}, args.zero)
                else:
                    plain_step(batches[i % len(batches)])
            if block:
                times[side].append((time.perf_counter() - t0) / args.steps)
    e, p = statistics.median(times["engine"]), statistics.median(times["plain"])
    params = sum(x.numel() for x in plain.parameters())
    print(f"model {args.model} ({params / 1e6:.2f}M params), batch {args.micro_batch}x{args.seq}, "
          f"ZeRO-{args.zero} {args.precision}, {args.blocks} blocks x {args.steps} steps, OMP threads "
          f"{os.environ['OMP_NUM_THREADS']}")
    print(f"plain PyTorch loop : {p * 1e3:8.1f} ms/step")
    print(f"engine (DeepSpeed) : {e * 1e3:8.1f} ms/step")
    print(f"ratio engine/plain : {e / p:8.3f}  (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
