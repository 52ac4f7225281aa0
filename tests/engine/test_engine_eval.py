"""``engine eval``: lm-evaluation-harness on saved tiny Llamas with the offline corpus_ppl task.

A real corpus (``data corpus build`` over stdlib docstrings, two local domains), a real BPE
tokenizer, transformers' ``LlamaForCausalLM`` saved with ``save_pretrained``; the harness's
numbers are checked against the model's own log-likelihoods computed here by hand.
"""

import ast
import json
import math
import re
import sysconfig
from pathlib import Path

import pytest
import torch

from data.runs import RunStore
from engine.__main__ import main as engine_main
from engine.eval.tasks import read_documents

VOCAB = 300


def _docstrings(limit: int) -> list[str]:
    """Real prose, cut at a word boundary so every document fits one 512-token window."""
    texts = []
    for file in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(file.read_text("utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if doc and len(doc) >= 200:
            texts.append(doc[:400].rsplit(" ", 1)[0])
        if len(texts) >= limit:
            break
    return texts


def _train_a_bit(model, tok, corpus: Path, steps: int = 60) -> None:
    """A few AdamW steps of next-token CE on the corpus's train split."""
    ids = []
    for domain_file in sorted(corpus.glob("*.jsonl")):
        for line in domain_file.read_text("utf-8").splitlines():
            record = json.loads(line)
            if record["split"] == "train":
                ids += tok(record["text"])["input_ids"] + [tok.eos_token_id]
    rows = torch.tensor(ids[: len(ids) // 64 * 64]).view(-1, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = rows[torch.randint(0, len(rows), (8,), generator=g)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from data.corpus import build_corpus
    from data.tokenizers import load_tokenizer, train_bpe
    from engine.models import build_model, save_model

    base = tmp_path_factory.mktemp("eval")
    texts = _docstrings(80)
    for name, part in (("prose", texts[::2]), ("notes", texts[1::2])):
        (base / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part), "utf-8")
    corpus = build_corpus(base / "corpus", [], local={n: str(base / f"{n}.jsonl") for n in ("prose", "notes")},
                          eval_fraction=0.25)
    tok_dir = train_bpe(corpus, VOCAB, base / "tok")
    tok = load_tokenizer(tok_dir)
    random_model = build_model("tiny-llama", vocab=len(tok), seed=0)
    save_model(random_model, base / "random", tokenizer_from=tok_dir)  # carries its tokenizer
    trained = build_model("tiny-llama", vocab=len(tok), seed=0)
    _train_a_bit(trained, tok, corpus)
    save_model(trained, base / "trained")  # no tokenizer: --tokenizer is needed
    return {"base": base, "corpus": corpus, "tok": tok_dir, "random": base / "random", "trained": base / "trained"}


def run_eval(*args) -> int:
    return engine_main(["eval", *map(str, args)])


def by_hand(model_dir: Path, tok_dir: Path, texts: list[str]) -> dict[str, float]:
    """The rolling log-likelihood of each text after the prefix token (EOS: the BPE has no BOS),
    aggregated the way lm-eval's wikitext metrics are (per word, per byte)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    total, words, nbytes = 0.0, 0, 0
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) < model.config.max_position_embeddings  # one window: no rolling needed
        inputs = torch.tensor([[tok.eos_token_id] + ids[:-1]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=inputs).logits.double(), -1)[0]
        total += float(logp[torch.arange(len(ids)), torch.tensor(ids)].sum())
        words += len(re.split(r"\s+", text))
        nbytes += len(text.encode("utf-8"))
    return {"word_perplexity": math.exp(-total / words), "byte_perplexity": math.exp(-total / nbytes),
            "bits_per_byte": -total / nbytes / math.log(2)}


def test_corpus_ppl_equals_the_models_own_loglikelihood(assets, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert run_eval(assets["random"], "--tasks", "corpus_ppl", "--data", assets["corpus"], "--limit", 5,
                    "--batch-size", 3, "--out", out) == 0
    report = json.loads(out.read_text())
    result = report["tasks"]["corpus_ppl"]
    assert result["documents"] == 5 and result["available"] > 5
    assert report["tokenizer"] == str(assets["random"]) and report["lm_eval_version"]
    # the first 5 documents of the task's dataset: domains in name order, corpus order within
    texts = [t for d in sorted(read_documents(str(assets["corpus"])).by_domain.items()) for t in d[1]][:5]
    expected = by_hand(assets["random"], assets["tok"], texts)
    for metric, value in expected.items():
        assert result["metrics"][metric] == pytest.approx(value, rel=1e-4), metric
    assert expected["byte_perplexity"] > 20  # a random model: near-uniform over 300 tokens
    assert "corpus_ppl" in capsys.readouterr().out  # the summary table


def test_trained_model_scores_lower_and_lands_in_the_run_store(assets, tmp_path, capsys):
    store = RunStore(tmp_path / "runs")
    store.write("r1", {"status": "done", "meta": {"run_id": "r1"}})
    store.append_curve("r1", [{"step": 0, "tokens": 0, "eval_loss": 5.0, "train_loss": math.nan, "lr": 0.0,
                               "elapsed_s": 0.0}])  # a done run has its curve (else it reads as corrupt)
    run = tmp_path / "runs" / "r1"
    common = ["--data", assets["corpus"], "--limit", 6, "--tokenizer", assets["tok"]]
    assert run_eval(assets["trained"], "--tasks", "corpus_ppl,corpus_ppl_notes", *common, "--run", run, "--json") == 0
    printed = json.loads(capsys.readouterr().out)  # --json: one document on stdout, nothing else
    recorded = json.loads((run / "eval.json").read_text())["tasks"]
    assert set(recorded) == {"corpus_ppl", "corpus_ppl_notes"}
    assert recorded["corpus_ppl"]["metrics"] == printed["tasks"]["corpus_ppl"]["metrics"]
    assert recorded["corpus_ppl_notes"]["config"]["dataset_path"] == "json"
    record = store.read("r1")
    assert record["status"] == "done" and record["eval"]["corpus_ppl"] == recorded["corpus_ppl"]["metrics"]

    assert run_eval(assets["random"], "--tasks", "corpus_ppl", *common, "--out", tmp_path / "rand.json") == 0
    random_ppl = json.loads((tmp_path / "rand.json").read_text())["tasks"]["corpus_ppl"]["metrics"]
    trained_ppl = recorded["corpus_ppl"]["metrics"]
    assert trained_ppl["byte_perplexity"] < 0.8 * random_ppl["byte_perplexity"]
    assert math.isfinite(trained_ppl["word_perplexity"])

    before = (run / "eval.json").read_bytes()
    assert run_eval(assets["random"], "--tasks", "corpus_ppl", *common, "--run", run) == 2
    assert "already has 'corpus_ppl'" in capsys.readouterr().err and (run / "eval.json").read_bytes() == before
    assert run_eval(assets["random"], "--tasks", "corpus_ppl", *common, "--run", run, "--force") == 0
    replaced = json.loads((run / "eval.json").read_text())["tasks"]
    assert replaced["corpus_ppl"]["metrics"] == random_ppl and "corpus_ppl_notes" in replaced  # the other task kept


def test_a_shard_directory_reads_its_own_corpus(assets, tmp_path):
    from data.corpus import manifest_hash

    shards = tmp_path / "shards"
    shards.mkdir()
    origin = {"path": str(assets["corpus"]), "manifest_sha256": manifest_hash(assets["corpus"])}
    (shards / "manifest.json").write_text(json.dumps({"format": "prunelaw-shards/1", "splits": {}, "corpus": origin}))
    assert read_documents(str(shards)).by_domain == read_documents(str(assets["corpus"])).by_domain
    (shards / "manifest.json").write_text(json.dumps({"splits": {}, "corpus": {**origin, "manifest_sha256": "0"}}))
    from data.cli import BadInput

    with pytest.raises(BadInput, match="changed since these shards were prepared"):
        read_documents(str(shards))


BAD = [
    (["MISSING", "--tasks", "corpus_ppl", "--data", "CORPUS"], "neither a model directory nor a known preset"),
    (["RANDOM", "--tasks", "corpus_ppl", "--data", "CORPUS", "--limit", "0"], "--limit 0 must be between 1"),
    (["RANDOM", "--tasks", "corpus_ppl", "--data", "CORPUS", "--batch-size", "0"], "--batch-size 0 must be"),
    (["RANDOM", "--tasks", "corpus_ppl"], "needs --data"),
    (["RANDOM", "--tasks", ",", "--data", "CORPUS"], "names no task"),
    (["RANDOM", "--tasks", "corpus_ppl", "--data", "NOWHERE"], "is not a corpus directory"),
    (["RANDOM", "--tasks", "corpus_ppl_nosuch", "--data", "CORPUS"], "'corpus_ppl_nosuch' is not in --data"),
    (["RANDOM", "--tasks", "no_such_task_xyz", "--data", "CORPUS"], "unknown task 'no_such_task_xyz'"),
    (["TRAINED", "--tasks", "corpus_ppl", "--data", "CORPUS"], "carries no tokenizer; pass --tokenizer"),
    (["RANDOM", "--tasks", "corpus_ppl", "--data", "CORPUS", "--out", "SENTINEL"], "already exists; pass --force"),
    (["RANDOM", "--tasks", "corpus_ppl", "--data", "CORPUS", "--out", "x.txt"], "must end in .json"),
    (["RANDOM", "--tasks", "corpus_ppl", "--data", "CORPUS", "--run", "BASE"], "is not a run directory"),
    (["BASE", "--tasks", "corpus_ppl", "--data", "CORPUS"], "has no config.json"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[m for _, m in BAD])
def test_bad_inputs_exit_2_with_one_line(assets, tmp_path, capsys, argv, message):
    sentinel = tmp_path / "sentinel.json"
    sentinel.write_text("keep me")
    names = {"MISSING": tmp_path / "missing", "CORPUS": assets["corpus"], "RANDOM": assets["random"],
             "TRAINED": assets["trained"], "NOWHERE": tmp_path / "nowhere", "SENTINEL": sentinel,
             "BASE": tmp_path}
    assert run_eval(*[names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert sentinel.read_text() == "keep me"


@pytest.mark.slow  # a fresh interpreter imports lm-eval and builds the task (~7 s)
def test_a_hub_task_not_cached_offline_is_refused_before_the_model_loads(assets, tmp_path):
    """``--tasks hellaswag`` with an empty HF cache and no network: exit 2 naming the task and the
    remedy. The model's weights file is well formed but holds none of the model's tensors (the
    cheap header checks pass), so reaching the model load would fail otherwise."""
    import os
    import shutil
    import subprocess
    import sys

    broken = tmp_path / "broken"
    shutil.copytree(assets["random"], broken)
    from safetensors.torch import save_file
    import torch

    save_file({"not_a_weight": torch.zeros(1)}, str(broken / "model.safetensors"))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "engine", "eval", str(broken), "--tasks", "hellaswag"],
                          capture_output=True, text=True, env=env, timeout=300)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(err) == 1 and "task 'hellaswag': its dataset is not available offline" in err[0], err
    assert str(tmp_path / "hf") in err[0] and "HF_DATASETS_OFFLINE=0" in err[0] and "--tasks corpus_ppl" in err[0]
