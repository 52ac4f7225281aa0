"""Cost of targeted pruning's masks: a masked training step against an unmasked one, same run.

The masked step samples every hard-concrete mask, runs the forward through the mask hooks
(heads, neurons, layers, hidden channels and the RMSNorm correction), adds the Lagrangian and
runs the backward; the unmasked step is the same model's plain LM forward + backward. Steps
alternate (masked, unmasked, ...) so that machine noise hits both; medians are compared.
Goal: ``ratio_step <= 1.3``. Forward-only times are reported too.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/targeted_speed.py                # SmolLM2-135M shape
    .venv/bin/python benchmarks/targeted_speed.py --model tiny-llama-m --target layers=3,ffn=96 --repeats 3
    .venv/bin/python benchmarks/targeted_speed.py --device cuda --batch 8 --seq-len 1024  # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def _step(model, ids, masks=None, progress: float = 1.0, backward: bool = True) -> float:
    import torch

    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)  # CUDA runs asynchronously
    sync()
    t0 = time.perf_counter()
    with torch.set_grad_enabled(backward):
        if masks is not None:
            masks()
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        if masks is not None:
            loss = loss + masks.lagrangian(progress).sum()
        if backward:
            loss.backward()
    model.zero_grad(set_to_none=True)
    if masks is not None:
        masks.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t0


def measure(model_name: str, target: str, batch: int, seq_len: int, repeats: int, device: str = "cpu") -> dict:
    import torch

    from engine.models import load_model
    from engine.pruning.targeted_masks import MaskSet, attach, detach
    from engine.pruning.targeted_shape import Parent, parse_target

    torch.manual_seed(0)
    model = load_model(model_name).to(device)
    model.train()
    parent = Parent.of(model)
    masks = MaskSet(parent.shape, parse_target(target, parent)).to(device)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len)).to(device)
    times: dict[str, list[float]] = {"masked": [], "plain": [], "masked_fwd": [], "plain_fwd": []}
    for i in range(repeats + 1):  # the first round warms allocator and kernels up
        handles = attach(model, masks, parent.head_dim)
        m, mf = _step(model, ids, masks), _step(model, ids, masks, backward=False)
        detach(handles)
        p, pf = _step(model, ids), _step(model, ids, backward=False)
        if i:
            for key, value in zip(times, (m, p, mf, pf), strict=True):
                times[key].append(value)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": model_name, "target": target, "device": device, "batch": batch, "seq_len": seq_len, "repeats": repeats,
            "threads": torch.get_num_threads(), "seconds_median": {k: round(v, 4) for k, v in med.items()},
            "ratio_step": round(med["masked"] / med["plain"], 3),
            "ratio_forward": round(med["masked_fwd"] / med["plain_fwd"], 3), "goal": "ratio_step <= 1.3"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:smollm2-135m", help="model (default: a random init of SmolLM2-135M's shape)")
    p.add_argument("--target", default="layers=24,heads=6,kv_heads=2,ffn=1024,hidden=384",
                   help="target shape: every axis masked by default")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    a = p.parse_args()
    result = measure(a.model, a.target, a.batch, a.seq_len, a.repeats, a.device)
    print(json.dumps(result, indent=2))
    print(f"masked / unmasked training step: {result['ratio_step']:.3f}x (goal <= 1.3)", file=sys.stderr)


if __name__ == "__main__":
    main()
