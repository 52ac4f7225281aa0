"""Peak memory of local reconstruction (engine.pruning.recon) against its budget.

Goal: peak <= 1.3 x weights + one submodel's calibration activations, i.e. the
full model never has two copies. Each measurement runs in a fresh subprocess so that
``ru_maxrss`` is its own:

- ``load``: import torch, load the model (the runtime plus the weights);
- ``recon``: the same, then unstructured magnitude pruning and reconstruction at each
  granularity, the parent read one layer at a time from safetensors.

The budget subtracts the runtime (``load`` minus the weights) from the peak, and counts one
submodel's calibration activations: the hidden states the driver must hold on both paths for
every calibration sequence (``2 x n x seq_len x hidden`` floats) and what autograd saves for
the backward of the submodel's blocks on one batch (one block's is measured in the ``load``
child with saved-tensor hooks; ``layer`` is counted as one block). Two ratios are printed:
against that budget (the issue's), and against the budget of a one-block submodel, stricter
for ``blocks:K``: it recomputes each block in its backward, so its activations are about one
block's, but its gradients, Adam moments and undo copy are K blocks' (4 x 54 MiB on SmolLM2).

    .venv/bin/python benchmarks/recon_memory.py --model work/smollm2-135m --n 32 --seq-len 256 --steps 2
    .venv/bin/python benchmarks/recon_memory.py --model tiny-llama-m --n 8 --seq-len 64 --steps 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def child(model_path: str, mode: str, n: int, seq_len: int, steps: int, folder: str) -> dict:
    import torch

    from engine.models import load_model

    model = load_model(model_path)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    if mode == "load":
        # from_pretrained may leave the weights mapped from safetensors and unread: read every
        # one, so this peak holds the resident weights (else "runtime" came out negative).
        with torch.no_grad():
            float(sum(p.detach().abs().sum() for p in model.parameters()))
    out = {"mode": mode, "weights": weights, "hidden": model.config.hidden_size,
           "bytes": next(model.parameters()).element_size()}
    if mode == "load":
        out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        out["block_autograd"] = block_autograd_bytes(model, min(8, n), seq_len)
        return out
    from engine.pruning import get_method
    from engine.pruning.recon import ParentLayers, reconstruct
    from engine.pruning.sparse_common import ratio_for_sparsity

    if Path(model_path).is_dir():
        parent = ParentLayers.from_dir(Path(model_path), model)
    else:
        parent = ParentLayers.save(model, Path(folder) / "parent.safetensors")
    calib = torch.randint(0, model.config.vocab_size, (n, seq_len), generator=torch.Generator().manual_seed(0))
    report = get_method("unstructured-magnitude")(model, ratio_for_sparsity(model, "unstructured-magnitude", 0.5),
                                                  None)
    done = reconstruct(model, parent, calib, report.choices, report.masks,
                       {"granularity": mode, "steps": steps, "batch_size": min(8, n)})
    out["seconds"] = done.seconds
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return out


def block_autograd_bytes(model, batch: int, seq_len: int) -> int:
    """Bytes autograd saves for the backward of the first decoder block on one batch (not
    counting parameters): the activation memory of one block's reconstruction step."""
    import torch

    from engine.pruning.sparse_common import _named_layers, _Stop

    block = _named_layers(model)[0][1]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}
    inside = [False]

    def leave(*_: object) -> None:
        inside[0] = False
        raise _Stop  # the blocks after the first are not needed

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if inside[0] and ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    hooks = [block.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True)),
             block.register_forward_hook(leave)]
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.model(input_ids=ids)
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()
    return sum(saved.values())


def measure(model: str, mode: str, n: int, seq_len: int, steps: int, folder: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", model, "--n", str(n), "--seq-len", str(seq_len),
           "--steps", str(steps), "--folder", folder]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PRUNELAW_BENCH": "1"})
    if proc.returncode != 0:
        return {"mode": mode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="work/smollm2-135m", help="HF dir or preset")
    p.add_argument("--granularities", default="layer,block,blocks:4")
    p.add_argument("--n", type=int, default=32, help="calibration sequences")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="Adam steps per submodel (memory does not grow with it)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.model, a.child, a.n, a.seq_len, a.steps, a.folder)))
        return
    from engine.pruning.recon_args import parse_granularity

    with tempfile.TemporaryDirectory() as tmp:
        load = measure(a.model, "load", a.n, a.seq_len, a.steps, tmp)
        if "error" in load:
            raise SystemExit(f"load failed: {load['error']}")
        runtime = load["peak_rss"] - load["weights"]
        paths = 2 * a.n * a.seq_len * load["hidden"] * load["bytes"]
        one = budget_of(load, paths, 1)
        mib = 2 ** 20
        print(f"model {a.model}: weights {load['weights'] / mib:.0f} MiB, runtime {runtime / mib:.0f} MiB, "
              f"hidden states {a.n}x{a.seq_len} on both paths {paths / mib:.0f} MiB, one block's autograd at "
              f"{min(8, a.n)}x{a.seq_len} {load['block_autograd'] / mib:.0f} MiB; budget of a one-block submodel "
              f"{one / mib:.0f} MiB")
        print(f"{'granularity':<12} {'seconds':>8} {'peak MiB':>9} {'used MiB':>9} {'budget MiB':>10} "
              f"{'used/budget':>11} {'used/one-block':>14}")
        for mode in a.granularities.split(","):
            r = measure(a.model, mode, a.n, a.seq_len, a.steps, tmp)
            if "error" in r:
                print(f"{mode:<12} error: {r['error']}")
                continue
            used = r["peak_rss"] - runtime
            budget = budget_of(load, paths, parse_granularity(mode) or 1)
            print(f"{mode:<12} {r['seconds']:>8.1f} {r['peak_rss'] / mib:>9.0f} {used / mib:>9.0f} "
                  f"{budget / mib:>10.0f} {used / budget:>11.3f} {used / one:>14.3f}  "
                  f"{'ok' if used <= budget else 'OVER BUDGET'}")


def budget_of(load: dict, paths: int, blocks: int) -> float:
    """1.3 x weights + one submodel's calibration activations (``blocks`` decoder blocks)."""
    return 1.3 * load["weights"] + paths + blocks * load["block_autograd"]


if __name__ == "__main__":
    main()
