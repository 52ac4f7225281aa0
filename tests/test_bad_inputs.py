"""Bad input across the five CLIs: exit 2, one stderr line, no traceback, nothing lost.

Each case runs the package's ``main(argv)`` in-process (the same ``data.cli`` plumbing as the
console scripts), so the whole table takes seconds. Before and after every case the workspace
is hashed: a bad input may create nothing of value, but it must never change or delete a file
that was already there (the sentinels). A few subprocess cases cover what only a real process
shows (a closed pipe, the interpreter's exit code).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Placeholders in argv: {ws} the workspace; {file} an existing file; {full} a non-empty
# directory; {empty} an empty directory; {corpus} a real corpus; {shards} real token shards;
# {store} a run store; {card} a valid P2 law card; {none} a path that does not exist.
DATA = [
    [], ["nosuch"],
    ["corpus"], ["corpus", "build"], ["corpus", "destroy", "--out", "{ws}/c1"],
    ["corpus", "build", "--out", "{ws}/c1", "--domains", "nosuch"],
    ["corpus", "build", "--out", "{ws}/c1", "--max-mb", "nan"],
    ["corpus", "build", "--out", "{ws}/c1", "--max-mb", "inf"],
    ["corpus", "build", "--out", "{ws}/c1", "--max-mb", "-1"],
    ["corpus", "build", "--out", "{ws}/c1", "--max-mb", "lots"],
    ["corpus", "build", "--out", "{ws}/c1", "--max-docs", "0"],
    ["corpus", "build", "--out", "{ws}/c1", "--max-docs", "-5"],
    ["corpus", "build", "--out", "{ws}/c1", "--max-docs", "1e3"],
    ["corpus", "build", "--out", "{ws}/c1", "--eval-fraction", "1.5"],
    ["corpus", "build", "--out", "{ws}/c1", "--eval-fraction", "nan"],
    ["corpus", "build", "--out", "{ws}/c1", "--eval-fraction", "0"],
    ["corpus", "build", "--out", "{ws}/c1", "--local", "nosep"],
    ["corpus", "build", "--out", "{ws}/c1", "--local", "=x"],
    ["corpus", "build", "--out", "{ws}/c1", "--local", "a={none}"],
    ["corpus", "build", "--out", "{ws}/c1", "--local", "a={empty}"],
    ["corpus", "build", "--out", "{ws}/c1", "--domains", "code", "--local", "code={ws}/texts"],
    ["corpus", "build", "--out", "{file}", "--domains", "--local", "a={ws}/texts"],
    ["corpus", "build", "--out", "{full}", "--domains", "--local", "a={ws}/texts"],
    ["corpus", "build", "--out", "/proc/prunelaw-corpus", "--domains", "--local", "a={ws}/texts"],
    ["corpus", "build", "--out", "{file}/sub", "--domains", "--local", "a={ws}/texts"],
    ["tokenizer"], ["tokenizer", "train"], ["tokenizer", "train", "--corpus", "{corpus}"],
    ["tokenizer", "train", "--corpus", "{none}", "--out", "{ws}/t1"],
    ["tokenizer", "train", "--corpus", "{file}", "--out", "{ws}/t1"],
    ["tokenizer", "train", "--corpus", "{corpus}", "--vocab", "0", "--out", "{ws}/t1"],
    ["tokenizer", "train", "--corpus", "{corpus}", "--vocab", "-3", "--out", "{ws}/t1"],
    ["tokenizer", "train", "--corpus", "{corpus}", "--vocab", "100000000", "--out", "{ws}/t1"],
    ["tokenizer", "train", "--corpus", "{corpus}", "--vocab", "abc", "--out", "{ws}/t1"],
    ["tokenizer", "train", "--corpus", "{corpus}", "--out", "{full}"],
    ["tokenizer", "train", "--corpus", "{corpus}", "--out", "{file}"],
    ["tokenizer", "show"], ["tokenizer", "show", "nosuch-tokenizer"], ["tokenizer", "show", "{file}"],
    ["tokenizer", "show", "{empty}"],
    ["prepare"], ["prepare", "--corpus", "{corpus}", "--tokenizer", "{shards}/tokenizer", "--seq-len", "0",
                  "--out", "{ws}/s1"],
    ["prepare", "--corpus", "{corpus}", "--tokenizer", "{ws}/tok", "--seq-len", "-4", "--out", "{ws}/s1"],
    ["prepare", "--corpus", "{corpus}", "--tokenizer", "{ws}/tok", "--seq-len", "100000000", "--out", "{ws}/s1"],
    ["prepare", "--corpus", "{corpus}", "--tokenizer", "{ws}/tok", "--seq-len", "64", "--num-proc", "0",
     "--out", "{ws}/s1"],
    ["prepare", "--corpus", "{corpus}", "--tokenizer", "{ws}/tok", "--seq-len", "64", "--num-proc", "100000",
     "--out", "{ws}/s1"],
    ["prepare", "--corpus", "{none}", "--tokenizer", "{ws}/tok", "--seq-len", "64", "--out", "{ws}/s1"],
    ["prepare", "--corpus", "{file}", "--tokenizer", "{ws}/tok", "--seq-len", "64", "--out", "{ws}/s1"],
    ["prepare", "--corpus", "{corpus}", "--tokenizer", "nosuch-tok", "--seq-len", "64", "--out", "{ws}/s1"],
    ["prepare", "--corpus", "{corpus}", "--tokenizer", "{ws}/tok", "--seq-len", "64", "--out", "{full}"],
    ["prepare", "--corpus", "{corpus}", "--tokenizer", "{ws}/tok", "--seq-len", "64", "--out", "{file}"],
    ["inspect"], ["inspect", "{none}"], ["inspect", "{file}"], ["inspect", "{full}"],
    ["inspect", "{ws}/truncated_shards"], ["inspect", "{ws}/garbage_manifest"],
]

ENGINE = [
    [], ["nosuch"], ["model"], ["model", "fetch", "nosuch", "--out", "{ws}/m1"], ["model", "fetch", "smollm2-135m"],
    ["model", "fetch", "smollm2-135m", "--out", "{full}"], ["model", "destroy"],
    ["prune"], ["prune", "--model", "tiny-llama", "--method", "depth-last", "--ratio", "0.5"],
    *[["prune", "--model", "tiny-llama", "--method", "depth-last", "--ratio", r, "--out", "{ws}/p1"]
      for r in ("0", "1", "1.5", "-0.1", "nan", "inf", "half")],
    ["prune", "--model", "tiny-llama", "--method", "nosuch", "--ratio", "0.5", "--out", "{ws}/p1"],
    ["prune", "--model", "tiny-llama", "--method", "depth-last", "--ratio", "0.5", "--out", "{full}"],
    ["prune", "--model", "tiny-llama", "--method", "depth-last", "--ratio", "0.5", "--out", "{file}"],
    ["prune", "--model", "{none}", "--method", "depth-last", "--ratio", "0.5", "--out", "{ws}/p1"],
    ["prune", "--model", "{file}", "--method", "depth-last", "--ratio", "0.5", "--out", "{ws}/p1"],
    ["prune", "--model", "{empty}", "--method", "depth-last", "--ratio", "0.5", "--out", "{ws}/p1"],
    ["prune", "--model", "{ws}/badconfig", "--method", "depth-last", "--ratio", "0.5", "--out", "{ws}/p1"],
    ["prune", "--model", "{ws}/gpt2", "--method", "depth-last", "--ratio", "0.5", "--out", "{ws}/p1"],
    *[["prune", "--model", "tiny-llama", "--method", "depth-last", "--ratio", "0.5", "--out", "{ws}/p1", flag, v]
      for flag, v in (("--calib-samples", "0"), ("--calib-seq-len", "0"), ("--eval-samples", "-1"),
                      ("--batch-size", "0"), ("--calib-samples", "100000000"), ("--batch-size", "x"))],
    ["prune", "--model", "tiny-llama", "--method", "width", "--ratio", "0.5", "--out", "{ws}/p1",
     "--calib", "{none}"],
    ["prune", "--model", "tiny-llama", "--method", "width", "--ratio", "0.5", "--out", "{ws}/p1",
     "--axes", "bogus", "--calib", "{shards}"],
    ["prune", "--model", "tiny-llama", "--method", "depth-last", "--ratio", "0.5", "--out", "{ws}/p1",
     "--heads", "2"],
    ["train"], ["train", "--config", "{none}"], ["train", "--config", "{empty}"], ["train", "--config", "{file}"],
    ["train", "--config", "{ws}/bad.yaml"], ["train", "--config", "{ws}/job_unknown.yaml"],
    ["train", "--config", "{ws}/job_ok.yaml", "--procs", "0"],
    ["train", "--config", "{ws}/job_ok.yaml", "--procs", "100000"],
    ["grid"], ["grid", "plan"], ["grid", "destroy", "{ws}/grid_ok.yaml"],
    ["grid", "plan", "{none}"], ["grid", "plan", "{empty}"], ["grid", "plan", "{ws}/bad.yaml"],
    ["grid", "status", "{none}"],
    *[["grid", "plan", "{ws}/" + f"grid_{name}.yaml"] for name in (
        "seeds_empty", "methods_empty", "ratios_empty", "parents_empty", "objectives_empty", "inits_empty",
        "evil_name", "abs_name", "unknown_key", "bad_ratio", "bad_tokens", "bad_method", "bad_objective",
        "bad_preset", "both_preset_path", "no_shards", "too_many", "ratio_map_extra", "not_mapping")],
    ["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{ws}/r1", "--procs-per-job", "0"],
    ["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{ws}/r1", "--procs-per-job", "100000"],
    ["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{ws}/r1", "--max-retries", "-1"],
    ["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{ws}/r1", "--max-retries", "1000"],
    ["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{file}"],
    ["grid", "cancel", "{ws}/grid_ok.yaml", "--runs", "{file}"],
    ["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{ws}/r1", "--partition", "gpu"],
    ["grid", "plan", "{ws}/grid_ok.yaml", "--executor", "slurm", "--parallel", "2"],
    ["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{ws}/r1", "--parallel", "0"],
    ["grid", "plan", "{ws}/grid_ok.yaml", "--executor", "nosuch"],
    *[["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{ws}/r1", "--executor", "slurm", "--dry-run", *extra]
      for extra in (["--time", "bogus"], ["--time", "-1"], ["--mem", "12X"], ["--mem", "lots"],
                    ["--gpus-per-job", "-1"], ["--nodes-per-job", "0"], ["--gpus-per-job", "3", "--nodes-per-job", "2"],
                    ["--sbatch-extra", "qos"], ["--max-parallel", "0"], ["--cpus-per-task", "0"],
                    ["--partition", "a b"], ["--account", "x;rm -rf"])],
    ["demo", "--grid", "{none}"], ["demo", "--bootstrap", "-1"], ["demo", "--procs-per-job", "0"],
    ["demo", "--bootstrap", "100000000"],
    # Inputs that were lost or mis-run silently: a repeated YAML key (last-wins), an output that
    # is, holds or lies inside the input (even with --force), the current directory as --out,
    # a newline or shell metacharacter in an sbatch option, a hub eval task not cached offline,
    # and what plan can know about parents (reachable ratios, directory, architecture, vocab).
    ["grid", "plan", "{ws}/grid_dup_key.yaml"], ["train", "--config", "{ws}/job_dup_key.yaml"],
    *[["prune", "--model", "{ws}/pm", "--method", "depth-last", "--ratio", "0.5", "--out", out, "--force"]
      for out in ("{ws}/pm", "{ws}/pm/sub", "{ws}/pm_link", "{ws}", ".")],
    ["prune", "--model", "tiny-llama", "--method", "depth-last", "--ratio", "0.5", "--calib", "{full}/keep.txt",
     "--out", "{full}", "--force"],
    ["recon", "--model", "{ws}/pm", "--parent", "tiny-llama", "--calib", "{file}", "--out", "{ws}/pm", "--force"],
    *[["grid", "launch", "{ws}/grid_ok.yaml", "--runs", "{ws}/r1", "--executor", "slurm", "--dry-run", extra]
      for extra in ("--sbatch-extra=--qos=high\nrm -rf ~", "--sbatch-extra=--comment=$(id)",
                    "--sbatch-extra=--qos=high --x=y")],
    ["model", "fetch", "smollm2-135m", "--out", ".", "--force"],
    ["eval", "tiny-llama", "--tasks", "hellaswag", "--tokenizer", "{ws}/tok"],
    *[["grid", "plan", "{ws}/" + f"grid_{name}.yaml"] for name in (
        "depth_all_layers", "nm_unreachable", "parent_missing", "parent_gpt2", "parent_small_vocab")],
]

FITTING = [
    [], ["nosuch"], ["fit"], ["fit", "{store}"], ["fit", "{none}", "--law", "p2"],
    ["fit", "{store}", "--law", "nosuch"], ["fit", "{empty}", "--law", "p2"], ["fit", "{file}", "--law", "p2"],
    ["fit", "{ws}/chin.csv", "--law", "chinchilla", "--method", "nosuch"],
    ["fit", "{store}", "--law", "p2", "--method", "nosuch"],
    *[["fit", "{ws}/chin.csv", "--law", "chinchilla", "--bootstrap", b] for b in ("-1", "1e8", "100000000", "x")],
    ["fit", "{ws}/chin.csv", "--law", "chinchilla", "--out", "{ws}/card_existing.json"],
    ["fit", "{ws}/chin.csv", "--law", "chinchilla", "--out", "{full}"],
    ["fit", "{ws}/chin.csv", "--law", "chinchilla", "--out", "/proc/prunelaw-card.json"],
    ["fit", "{ws}/garbage.parquet", "--law", "chinchilla"], ["fit", "{ws}/badcell.csv", "--law", "chinchilla"],
    ["fit", "{ws}/missingcol.csv", "--law", "chinchilla"], ["fit", "{ws}/empty.csv", "--law", "chinchilla"],
    ["fit", "{ws}/chin.csv", "--law", "chinchilla", "--weighting", "nosuch"],
    ["fit", "{ws}/chin.csv", "--law", "chinchilla", "--slope", "nan"],
    ["fit", "{ws}/chin.csv", "--law", "chinchilla", "--slope", "-1"],
    ["validate"], ["validate", "{none}", "--law", "p2"], ["validate", "{store}", "--law", "p2", "--by", "nosuch"],
    ["validate", "{store}", "--law", "nosuch"], ["validate", "{ws}/garbage.parquet", "--law", "chinchilla"],
]

PLANNER = [
    [], ["nosuch"], ["recommend"], ["recommend", "--params", "8B"],
    *[["recommend", "--params", p, "--ratio", "0.5"] for p in ("abc", "-1", "0", "nan", "8Q", "llama-99")],
    *[["recommend", "--params", "8B", "--ratio", r] for r in ("0", "1", "1.5", "-0.2", "nan", "abc", "")],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--method", "nosuch"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--family", "nosuch"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--law", "{none}"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--law", "{file}"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--law", "{empty}"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--slope", "-1"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--slope", "nan"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--target-loss", "-1"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--recover", "1.5"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--slope", "1", "--target-loss", "2"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--mfu", "0"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--mfu", "2"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--price", "-1"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--gpu", "nosuch"],
    ["recommend", "--params", "8B", "--ratio", "0.5", "--loss-before", "-1"],
    *[["compare", "--params", "8B", "--ratios", r, "--tokens", "10B"] for r in ("0.25,,0.5", "abc", "1.5", "", "0.5,0.5")],
    *[["compare", "--params", "8B", "--ratios", "0.5", "--tokens", t] for t in ("abc", "-5", "0", "nan")],
    ["compare", "--params", "8B", "--ratios", "0.5", "--tokens", "10B", "--scratch-law", "{file}"],
    ["cards", "--dir", "{none}"], ["cards", "--dir", "{file}"],
]

REPORTS = [
    [], ["nosuch"], ["build"], ["build", "{store}"], ["build", "{store}", "--out", "{ws}/report_existing.pdf"],
    ["build", "{store}", "--out", "{ws}/r.txt"], ["build", "{none}", "--out", "{ws}/r.pdf"],
    ["build", "{file}", "--out", "{ws}/r.pdf"], ["build", "{empty}", "--out", "{ws}/r.pdf"],
    *[["build", "{store}", "--out", "{ws}/r.pdf", "--panels", p] for p in ("3", "0", "-1", "x")],
    ["build", "{store}", "--out", "{ws}/r.pdf", "--law", "{none}"],
    ["build", "{store}", "--out", "{ws}/r.pdf", "--law", "{file}"],
    ["build", "{store}", "--out", "{ws}/r.pdf", "--status", "bogus"],
    ["build", "{store}", "--out", "{full}"], ["build", "{store}", "--out", "/proc/prunelaw-report.pdf"],
    ["build", "{store}", "--out", "{file}/r.pdf"],
]

PRUNELAW = [
    [], ["nosuch"], ["demo", "--grid", "{none}"], ["demo", "--grid", "{empty}"], ["demo", "--bootstrap", "-1"],
    ["demo", "--bootstrap", "x"], ["demo", "--procs-per-job", "0"], ["demo", "--procs-per-job", "100000"],
    ["demo", "--nosuch"],
]

CASES = ([("data", a) for a in DATA] + [("engine", a) for a in ENGINE] + [("fitting", a) for a in FITTING]
         + [("planner", a) for a in PLANNER] + [("reports", a) for a in REPORTS]
         + [("prunelaw", a) for a in PRUNELAW])
CASE_TIMEOUT_S = 90
"""A bad input is refused in well under a second of work; a case still running after this
started real work (a training run, the demo) and fails instead of hanging the suite."""


def _mains():
    from data.__main__ import main as data_main
    from engine.__main__ import main as engine_main
    from fitting.__main__ import main as fitting_main
    from planner.__main__ import main as planner_main
    from reports.__main__ import main as reports_main

    from workflow.cli import prunelaw

    return {"data": data_main, "engine": engine_main, "fitting": fitting_main, "planner": planner_main,
            "reports": reports_main, "prunelaw": prunelaw}


def _grid(shards: Path, **change) -> dict:
    grid = {"name": "bad", "data": {"shards": str(shards)},
            "parents": [{"name": "p", "preset": "tiny-llama", "tokens": 8192}],
            "methods": ["depth-last"], "ratios": [0.3], "objectives": ["lm"], "tokens": 4096,
            "train": {"eval": {"points": 2, "max_sequences": 8}}}
    grid.update(change)
    return {k: v for k, v in grid.items() if v is not None}


def _write_store(root: Path) -> None:
    from data.runs import RunStore

    store = RunStore(root)
    for i, ratio in enumerate((0.25, 0.5)):
        meta = {"family": "tiny", "parent": "tiny-llama", "method": "depth", "ratio_target": ratio, "ratio": ratio,
                "params_before": 1e6, "params_after": 1e6 * (1 - ratio), "nonembed_before": 8e5,
                "nonembed_after": 8e5 * (1 - ratio), "loss_before": 3.0, "init": "pruned", "objective": "lm", "seed": 0}
        store.write(f"r{i}", {"status": "done", "meta": meta})
        store.append_curve(f"r{i}", [{"step": s, "tokens": s * 1000, "eval_loss": 3.5 + ratio - 0.1 * s ** 0.5,
                                      "train_loss": 3.6, "lr": 1e-3, "elapsed_s": s} for s in range(1, 6)])


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, str]:
    """A workspace of real inputs (corpus, shards, store, card) and sentinel files."""
    from data.cli import run_cli
    from train_fakes import MemData, write_shards

    ws = tmp_path_factory.mktemp("bad_inputs")
    (ws / "file.txt").write_text("keep me\n")
    (ws / "full").mkdir()
    (ws / "full" / "keep.txt").write_text("keep me too\n")
    (ws / "empty").mkdir()
    (ws / "texts").mkdir()
    for i in range(12):
        (ws / "texts" / f"doc{i}.txt").write_text(f"Document {i}: " + "the quick brown fox jumps. " * 20)
    mains = _mains()
    assert run_cli("data", mains["data"], ["corpus", "build", "--out", str(ws / "corpus"), "--domains",
                                           "--local", f"a={ws / 'texts'}", "--eval-fraction", "0.3"]) == 0
    shards = write_shards(ws / "shards", MemData(seq_len=32))
    (ws / "tok").mkdir()
    (ws / "bad.yaml").write_text("name: [unclosed\n")
    (ws / "job_unknown.yaml").write_text(yaml.safe_dump({"nosuch_key": 1}))
    job = {"parent": "tiny-llama", "tokens": 4096, "data": {"shards": str(shards)}, "runs_dir": str(ws / "jr")}
    (ws / "job_ok.yaml").write_text(yaml.safe_dump(job))
    grids = {"ok": _grid(shards), "seeds_empty": _grid(shards, seeds=[]), "methods_empty": _grid(shards, methods=[]),
             "ratios_empty": _grid(shards, ratios=[]), "parents_empty": _grid(shards, parents=[]),
             "objectives_empty": _grid(shards, objectives=[]), "inits_empty": _grid(shards, inits=[]),
             "evil_name": _grid(shards, name="../../evil"), "abs_name": _grid(shards, name="/tmp/evil"),
             "unknown_key": _grid(shards, nosuch=1), "bad_ratio": _grid(shards, ratios=[1.5]),
             "bad_tokens": _grid(shards, tokens="lots"), "bad_method": _grid(shards, methods=["nosuch"]),
             "bad_objective": _grid(shards, objectives=["nosuch"]),
             "bad_preset": _grid(shards, parents=[{"name": "p", "preset": "nosuch", "tokens": 100}]),
             "both_preset_path": _grid(shards, parents=[{"name": "p", "preset": "tiny-llama", "path": "x", "tokens": 1}]),
             "no_shards": _grid(ws / "no-such-shards"),
             "too_many": _grid(shards, seeds=list(range(2000)), ratios=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
             "ratio_map_extra": _grid(shards, ratios={"depth-last": [0.3], "width": [0.3]})}
    for name, grid in grids.items():
        (ws / f"grid_{name}.yaml").write_text(yaml.safe_dump(grid))
    (ws / "grid_not_mapping.yaml").write_text("- just\n- a list\n")
    (ws / "badconfig").mkdir()
    (ws / "badconfig" / "config.json").write_text("{not json")
    (ws / "gpt2").mkdir()
    (ws / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    (ws / "truncated_shards").mkdir()
    manifest = (shards / "manifest.json").read_text()
    (ws / "truncated_shards" / "manifest.json").write_text(manifest[: len(manifest) // 2])
    (ws / "garbage_manifest").mkdir()
    (ws / "garbage_manifest" / "manifest.json").write_text(json.dumps({"format": "prunelaw-shards-1"}))
    _write_store(ws / "store")
    (ws / "chin.csv").write_text("N,D,loss\n" + "".join(
        f"{n},{d},{1.7 + 400 / n ** 0.34 + 410 / d ** 0.28:.5f}\n" for n in (1e7, 3e7, 1e8) for d in (1e8, 1e9, 1e10)))
    (ws / "garbage.parquet").write_bytes(b"PAR1 this is not parquet at all")
    (ws / "badcell.csv").write_text("N,D,loss\n1e7,1e8,2.5\n1e8,abc,2.4\n3e8,1e9,2.3\n")
    (ws / "missingcol.csv").write_text("N,loss\n1e7,2.5\n")
    (ws / "empty.csv").write_text("")
    (ws / "card_existing.json").write_text('{"keep": "me"}\n')
    (ws / "report_existing.pdf").write_bytes(b"%PDF-1.4 keep me\n")
    (ws / "grid_dup_key.yaml").write_text(yaml.safe_dump(_grid(shards)) + "ratios: [0.5]\n")
    (ws / "job_dup_key.yaml").write_text(yaml.safe_dump(job) + "tokens: 2048\n")
    from data.models import MODELS
    from engine.models import build_model, config_for

    build_model("tiny-llama").save_pretrained(ws / "pm")  # real weights: a swap over it would show
    (ws / "pm_link").symlink_to(ws / "pm")
    config_for(MODELS["tiny-llama"], vocab=64).save_pretrained(ws / "small_vocab")
    for name, change in {"depth_all_layers": {"ratios": [0.9]}, "nm_unreachable": {"methods": ["2:4"], "ratios": [0.5]},
                         "parent_missing": {"parents": [{"name": "p", "path": str(ws / "nowhere")}]},
                         "parent_gpt2": {"parents": [{"name": "p", "path": str(ws / "gpt2")}]},
                         "parent_small_vocab": {"parents": [{"name": "p", "path": str(ws / "small_vocab")}]}}.items():
        (ws / f"grid_{name}.yaml").write_text(yaml.safe_dump(_grid(shards, **change)))
    return {"ws": str(ws), "file": str(ws / "file.txt"), "full": str(ws / "full"), "empty": str(ws / "empty"),
            "corpus": str(ws / "corpus"), "shards": str(shards), "store": str(ws / "store"),
            "none": str(ws / "does-not-exist")}


def _snapshot(root: Path) -> dict[str, str]:
    """path -> content hash of every file already in the workspace."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _case_id(case: tuple[str, list[str]]) -> str:
    cli, argv = case
    return " ".join([cli, *argv])[:80] or cli


def test_the_table_is_big_enough():
    assert len(CASES) >= 150


class _WouldRun(Exception):
    """A case got past validation and tried to start real work (a bug: it must be refused)."""


@pytest.fixture
def no_real_work(monkeypatch):
    """Bad input must be refused before any process starts or the demo begins its steps."""
    def refuse(*args, **kwargs):
        raise _WouldRun(f"would start {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    import workflow.demo

    monkeypatch.setattr(workflow.demo, "run_demo", refuse)


@pytest.fixture
def case_timeout():
    """SIGALRM after CASE_TIMEOUT_S: a case that got past validation cannot run for long."""
    import signal

    def expire(signum, frame):
        raise _WouldRun(f"still running after {CASE_TIMEOUT_S} s: real work started")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(CASE_TIMEOUT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_exits_2_with_one_line_and_loses_nothing(case, ws, capsys, no_real_work, case_timeout):
    cli, template = case
    argv = [a.format(**ws) for a in template]
    root = Path(ws["ws"])
    before = _snapshot(root)
    code = _mains()[cli](argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"{cli} {argv}: exit {code}\nstdout: {out[-500:]}\nstderr: {err[-2000:]}"
    assert len(lines) == 1, f"{cli} {argv}: expected one stderr line, got:\n{err}"
    assert "Traceback" not in err + out
    assert lines[0].startswith(f"{cli}")
    after = _snapshot(root)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"{cli} {argv} changed or removed {changed}"


def _python(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_a_closed_pipe_is_not_an_error():
    """``planner recommend ... | head -c0``: the reader went away before the first line."""
    proc = _python("planner", "recommend", "--params", "8B", "--ratio", "0.5")
    proc.stdout.close()  # closed before the child writes anything
    err = proc.stderr.read()
    code = proc.wait(timeout=60)
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


@pytest.mark.parametrize("args", [("data",), ("planner", "recommend", "--ratio", "2"),
                                  ("fitting", "fit", "nowhere", "--law", "p2")])
def test_a_real_process_exits_2_with_one_line(args):
    proc = _python(*args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# -- model sources: hub ids, random:PRESET, broken checkpoints ---------------------------------
# Each model case runs against a hub cache built here (tests/hub_cache.py), offline.

from hub_cache import add_to_cache, save_tiny, use_cache  # noqa: E402

_PRUNE = ["--method", "depth-last", "--ratio", "0.4", "--out", "{ws}/p1"]
MODEL_CASES = [
    ("engine", ["prune", "--model", "{truncated}", *_PRUNE]),
    ("engine", ["prune", "--model", "{mismatch}", *_PRUNE]),
    ("engine", ["eval", "{truncated}", "--tasks", "corpus_ppl", "--data", "{ws}/doc.txt"]),
    ("engine", ["prune", "--model", "acme/absent", *_PRUNE]),
    ("engine", ["prune", "--model", "acme/absent@v9", *_PRUNE]),
    ("engine", ["prune", "--model", "acme/gpt", *_PRUNE]),
    ("engine", ["prune", "--model", "llama-3.1-8b", *_PRUNE]),
    ("engine", ["prune", "--model", "random:llama-9000", *_PRUNE]),
    ("engine", ["eval", "acme/absent", "--tasks", "corpus_ppl", "--data", "{ws}/doc.txt"]),
    ("engine", ["eval", "acme/gpt", "--tasks", "corpus_ppl", "--data", "{ws}/doc.txt"]),
    ("engine", ["eval", "qwen2.5-0.5b", "--tasks", "corpus_ppl", "--data", "{ws}/doc.txt"]),
    ("engine", ["model", "fetch", "acme/absent"]),
    ("engine", ["model", "fetch", "acme/tiny", "--revision", "a", "--out", "{ws}/f"]),
    ("engine", ["model", "fetch", "random:tiny-llama"]),
    ("engine", ["grid", "plan", "{ws}/grid_hub_absent.yaml", "--runs", "{ws}/r"]),
    ("engine", ["grid", "plan", "{ws}/grid_hub_gpt.yaml", "--runs", "{ws}/r"]),
    ("data", ["prepare", "--corpus", "{ws}/corpus", "--tokenizer", "acme/absent", "--seq-len", "16",
              "--out", "{ws}/s1"]),
]


# -- datasets as a source, and an --out over the command's own input (data prepare / corpus) --

DATASET_CASES = [
    (["prepare", "--dataset", "{saved}", "--text-field", "body", "--tokenizer", "{bpe}",
     "--seq-len", "16", "--out", "{ws}/s2"],
     "has no field 'body' (fields: text, meta, meta.source)"),
    (["prepare", "--dataset", "{saved}", "--domain-field", "meta.nosuch", "--tokenizer", "{bpe}",
     "--seq-len", "16", "--out", "{ws}/s2"],
     "has no field 'meta.nosuch'"),
    (["prepare", "--dataset", "{saved}", "--max-tokens", "0", "--tokenizer", "{bpe}",
     "--seq-len", "16", "--out", "{ws}/s2"],
     "--max-tokens '0' must be a positive"),
    (["prepare", "--corpus", "{corpus}", "--max-tokens", "0", "--tokenizer", "{bpe}",
     "--seq-len", "16", "--out", "{ws}/s2"],
     "--max-tokens '0' must be a positive"),
    (["prepare", "--corpus", "{corpus}", "--split", "test", "--tokenizer", "{bpe}",
     "--seq-len", "16", "--out", "{ws}/s2"],
     '--split applies to --dataset only'),
    (["prepare", "--dataset", "{saved}", "--tokenizer", "{bpe}", "--seq-len", "16",
     "--out", "{saved}", "--overwrite"],
     'is the input'),
    (["prepare", "--corpus", "{corpus}", "--tokenizer", "{bpe}", "--seq-len", "16",
     "--out", "{corpus}", "--overwrite"],
     'is the input'),
    (["prepare", "--corpus", "{corpus}", "--tokenizer", "{bpe}", "--seq-len", "16",
     "--out", "{ws}", "--overwrite"],
     'contains the input'),
    (["prepare", "--corpus", "{corpus}", "--tokenizer", "{bpe}", "--seq-len", "16",
     "--out", "{bpe}", "--overwrite"],
     'is the input'),
    (["corpus", "build", "--out", "{ws}/c1", "--domains", "--local", "a={saved}"],
     'is a datasets save_to_disk directory'),
    (["corpus", "build", "--out", "{ws}/texts", "--domains", "--local", "a={ws}/texts", "--overwrite"],
     'is the input'),
]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, str]:
    """A truncated checkpoint, one whose config disagrees with its weights, a gpt2 hub model."""
    import json as _json

    from data.cli import run_cli

    tmp_path = tmp_path_factory.mktemp("bad_models")
    hub_cache = tmp_path / "hf_home" / "hub"
    hub_cache.mkdir(parents=True)
    good = save_tiny(tmp_path / "good", tokenizer=False)
    truncated = save_tiny(tmp_path / "truncated", tokenizer=False)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    mismatch = save_tiny(tmp_path / "mismatch", tokenizer=False)
    config = _json.loads((mismatch / "config.json").read_text())
    (mismatch / "config.json").write_text(_json.dumps({**config, "intermediate_size": 100}))
    gpt = tmp_path / "gpt2"
    gpt.mkdir()
    (gpt / "config.json").write_text(_json.dumps({"model_type": "gpt2", "n_layer": 2}))
    add_to_cache(hub_cache, "acme/gpt", gpt)
    add_to_cache(hub_cache, "acme/tiny", good)
    (tmp_path / "doc.txt").write_text("the quick brown fox. " * 50)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("the quick brown fox jumps. " * 60)
    assert run_cli("data", _mains()["data"], ["corpus", "build", "--out", str(tmp_path / "corpus"), "--domains",
                                              "--local", f"a={tmp_path / 'texts'}", "--eval-fraction", "0.3"]) == 0
    from train_fakes import MemData, write_shards

    shards = write_shards(tmp_path / "shards", MemData(seq_len=32))
    for name, parent in (("absent", "acme/absent"), ("gpt", "acme/gpt")):
        grid = _grid(shards, parents=[{"name": "h", "path": parent}])
        (tmp_path / f"grid_hub_{name}.yaml").write_text(yaml.safe_dump(grid))
    return {"ws": str(tmp_path), "truncated": str(truncated), "mismatch": str(mismatch)}


@pytest.fixture
def model_ws(model_files, monkeypatch) -> dict[str, str]:
    """``model_files`` with huggingface_hub pointed at its cache, offline."""
    use_cache(monkeypatch, Path(model_files["ws"]) / "hf_home")
    return model_files


@pytest.mark.parametrize("case", MODEL_CASES, ids=[_case_id(c) for c in MODEL_CASES])
def test_bad_model_source_exits_2_with_one_line(case, model_ws, capsys, no_real_work, case_timeout):
    cli, template = case
    argv = [a.format(**model_ws) for a in template]
    root = Path(model_ws["ws"])
    before = _snapshot(root)
    code = _mains()[cli](argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"{cli} {argv}: exit {code}\nstdout: {out[-500:]}\nstderr: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith(cli), f"{cli} {argv}: expected one stderr line, got:\n{err}"
    assert "Traceback" not in err + out
    assert [p for p, digest in before.items() if _snapshot(root).get(p) != digest] == []


def test_broken_checkpoints_name_the_file_and_tensor(model_ws, capsys):
    """The two faults that once ended in a SafetensorError without a path / an 18-line table."""
    engine = _mains()["engine"]
    assert engine(["prune", "--model", model_ws["truncated"], *[a.format(**model_ws) for a in _PRUNE]]) == 2
    err = capsys.readouterr().err
    assert f"{model_ws['truncated']}/model.safetensors' is unreadable" in err and "truncated" in err
    assert engine(["prune", "--model", model_ws["mismatch"], *[a.format(**model_ws) for a in _PRUNE]]) == 2
    err = capsys.readouterr().err
    assert "tensor model.layers.0.mlp.down_proj.weight has shape [64, 128] but config.json implies [64, 100]" in err


# -- planner bounds and reports' card checks (N0, price, MFU; a card of another law or data) --------

SCREEN_PLANNER = [
    ["recommend", "--params", "1e30", "--ratio", "0.5"], ["recommend", "--params", "100", "--ratio", "0.5"],
    ["compare", "--params", "1e30", "--ratios", "0.5", "--tokens", "1B"],
    *[["recommend", "--params", "8B", "--ratio", "0.5", "--price", p] for p in ("inf", "nan", "-1", "1e6")],
    *[["recommend", "--params", "8B", "--ratio", "0.5", "--mfu", m] for m in ("inf", "nan", "0.99", "1e-9")],
]
SCREEN_REPORTS = [
    ["build", "{store}", "--out", "{ws}/r.pdf", "--law", "{chin_card}"],
    ["build", "{store}", "--out", "{ws}/r.pdf", "--law", str(ROOT / "planner" / "cards" / "p2_llama3_depth.json")],
]
SCREEN_CASES = [("planner", a) for a in SCREEN_PLANNER] + [("reports", a) for a in SCREEN_REPORTS]


@pytest.fixture(scope="module")
def screen_ws(ws) -> dict[str, str]:
    """``ws`` plus a Chinchilla card fitted on a published-style table (not on the run store)."""
    from fitting.card import save_card
    from fitting.fit import FitConfig, fit
    from fitting.table import load_data

    card = Path(ws["ws"]) / "chin_card.json"
    if not card.exists():
        save_card(fit(load_data(Path(ws["ws"]) / "chin.csv", "chinchilla"), FitConfig(n_bootstrap=0)), card)
    return {**ws, "chin_card": str(card)}


@pytest.mark.parametrize("case", SCREEN_CASES, ids=[_case_id(c) for c in SCREEN_CASES])
def test_planner_bounds_and_foreign_cards_exit_2(case, screen_ws, capsys, no_real_work, case_timeout):
    test_bad_input_exits_2_with_one_line_and_loses_nothing(case, screen_ws, capsys, no_real_work, case_timeout)


@pytest.fixture(scope="module")
def dataset_ws(ws) -> dict[str, str]:
    """The workspace plus a ``datasets`` save_to_disk directory (fields: text, meta.source) and
    a real tokenizer (the fake shards' tokenizer directory holds none)."""
    import datasets

    from data.tokenizers import train_bpe

    saved = Path(ws["ws"]) / "saved_dataset"
    datasets.Dataset.from_dict({"text": [f"Document {i}: " + "words about pruning. " * 8 for i in range(20)],
                                "meta": [{"source": "a"}] * 20}).save_to_disk(str(saved))
    bpe = train_bpe(ws["corpus"], 300, Path(ws["ws"]) / "bpe")
    return ws | {"saved": str(saved), "bpe": str(bpe)}


@pytest.mark.parametrize("argv, needle", DATASET_CASES, ids=[_case_id(("data", c)) for c, _ in DATASET_CASES])
def test_bad_dataset_input_exits_2_and_keeps_the_input(argv, needle, dataset_ws, capsys, no_real_work, case_timeout):
    root = Path(dataset_ws["ws"])
    before = _snapshot(root)
    code = _mains()["data"]([a.format(**dataset_ws) for a in argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("data") and needle in lines[0], f"exit {code}\n{err}"
    after = _snapshot(root)
    assert not [p for p, digest in before.items() if after.get(p) != digest]
