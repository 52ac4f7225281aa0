"""llm-compressor's one-shot SparseGPT / Wanda on given ids: the peer of benchmarks/prune_speed.py.

Runs in ANOTHER virtual environment (``python -m venv PEER && PEER/bin/pip install
llmcompressor``), never this project's: it imports only torch, transformers, datasets, numpy
and llmcompressor, and prints one JSON line (seconds, peak RSS, held-out loss) like the
engine's children, so ``prune_speed.py --peer-python PEER/bin/python`` puts both side by
side on the same calibration ids, sparsity and threads.

    PEER/bin/python benchmarks/peer_llmcompressor.py --model work/smollm2-135m --modifier sparsegpt \\
        --sparsity 0.5 --calib-ids calib.npy --eval-ids eval.npy
"""

from __future__ import annotations

import argparse
import json
import resource
import time


def _modifier(name: str, sparsity: float, structure: str):
    """The llm-compressor modifier, pruning the decoder layers' linears (lm_head stays dense)."""
    common = {"sparsity": sparsity, "mask_structure": structure, "ignore": ["re:.*lm_head"]}
    if name == "sparsegpt":
        from llmcompressor.modifiers.obcq import SparseGPTModifier

        return SparseGPTModifier(**common)
    from llmcompressor.modifiers.pruning import WandaPruningModifier

    return WandaPruningModifier(**common)


def _eval_loss(model, ids, batch_size: int = 4) -> float:
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, ids.shape[0], batch_size):
            batch = ids[start:start + batch_size]
            logits = model(input_ids=batch, use_cache=False).logits
            for i in range(batch.shape[0]):
                total += float(F.cross_entropy(logits[i, :-1].float(), batch[i, 1:], reduction="sum"))
            count += batch[:, 1:].numel()
    return total / max(count, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="HF directory (the same one the engine prunes)")
    p.add_argument("--modifier", choices=("sparsegpt", "wanda"), required=True)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--mask-structure", default="0:0", help="0:0 (unstructured) or 2:4")
    p.add_argument("--calib-ids", required=True)
    p.add_argument("--eval-ids", required=True)
    a = p.parse_args()
    import numpy as np
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    calib = np.load(a.calib_ids)
    evals = torch.from_numpy(np.load(a.eval_ids)).long()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    data = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": np.ones_like(calib).tolist()})
    t0 = time.perf_counter()
    oneshot(model=model, dataset=data, recipe=[_modifier(a.modifier, a.sparsity, a.mask_structure)],
            num_calibration_samples=int(calib.shape[0]), max_seq_length=int(calib.shape[1]))
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"method": f"peer:llmcompressor-{a.modifier}", "seconds": seconds, "peak_rss": peak,
                      "ratio": None, "eval_loss": _eval_loss(model.eval(), evals),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
