"""``engine eval``: score a model with lm-evaluation-harness (offline ``corpus_ppl`` included)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence

EPILOG = """examples:
  engine eval work/pruned/width50 --tasks corpus_ppl --data work/corpus --out width50-eval.json
      word/byte perplexity on the corpus's held-out split (offline), results to a JSON file
  engine eval runs/tiny/<run_id>/model --tasks corpus_ppl,corpus_ppl_code --data shards/tiny \\
      --tokenizer shards/tiny/tokenizer --run runs/tiny/<run_id>
      a grid's saved model (tokenizer from its shards), results into runs/<id>/eval.json
  engine eval work/smollm2-135m --tasks hellaswag --limit 200 --batch-size 16
      any lm-eval task whose dataset is already in the local HF cache (HF_DATASETS_OFFLINE=0 to fetch)
"""


def _parser() -> argparse.ArgumentParser:
    from engine.eval.harness import DEVICES, DTYPES

    p = argparse.ArgumentParser(prog="engine eval", description="Score a model with lm-evaluation-harness; corpus_ppl runs offline.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="save_pretrained directory (any engine prune --out), hub id org/name[@revision], or random:PRESET")
    p.add_argument("--tasks", required=True, metavar="T1,T2",
                   help="comma list: corpus_ppl, corpus_ppl_<domain> (need --data) and/or lm-eval tasks")
    p.add_argument("--data", metavar="PATH",
                   help="documents of corpus_ppl: a corpus dir (eval split), a shard dir (its corpus) or a .txt/.jsonl file")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer dir, llama3 or qwen2.5 (default: MODEL's own)")
    p.add_argument("--limit", type=int, metavar="N", help="documents per task (default: all)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="windows per forward pass (default 8)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="default auto: cuda when visible")
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="default auto: bf16 on cuda, fp32 on cpu")
    p.add_argument("--out", metavar="FILE.json", help="write the results here (refused if it exists, see --force)")
    p.add_argument("--run", metavar="RUN_DIR", help="also record them in this run: RUN_DIR/eval.json and run.json")
    p.add_argument("--force", action="store_true", help="replace an existing --out file / the run's results of a task")
    p.add_argument("--json", action="store_true", help="print the results as one JSON document on stdout")
    return p


def setup(argv: Sequence[str] | None) -> tuple["EvalRequest", argparse.Namespace]:  # noqa: F821
    """Parse and check everything that needs no model: a bad input fails before any load."""
    from data.cli import check_output_file
    from engine.eval.harness import EvalRequest, check_model
    from engine.eval.store import check_run

    ns = _parser().parse_args(argv)
    names = tuple(t.strip() for t in ns.tasks.split(","))
    req = EvalRequest(model=ns.model, tasks=names, tokenizer=ns.tokenizer, data=ns.data, limit=ns.limit,
                      batch_size=ns.batch_size, device=ns.device, dtype=ns.dtype)
    check_model(req.model)
    if ns.out is not None:
        check_output_file(ns.out, force=ns.force, suffix=".json")
    if ns.run is not None:
        check_run(ns.run, req.tasks, force=ns.force)
    return req, ns


def main(argv: Sequence[str] | None = None) -> int:
    from data.runs import write_json_atomic
    from engine.eval import store
    from engine.eval.harness import evaluate

    req, ns = setup(argv)
    with contextlib.redirect_stdout(sys.stderr):  # the harness's prints must not mix into --json
        report = evaluate(req)
    if ns.out is not None:
        write_json_atomic(ns.out, report.to_dict())
    if ns.run is not None:
        where = store.record(ns.run, report, force=ns.force)
        print(f"engine eval: results recorded in {where}", file=sys.stderr)
    if ns.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    return 0
