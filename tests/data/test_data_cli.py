"""The ``data`` CLI: the demo's three commands end to end, help epilogs, exit code 2."""

from __future__ import annotations

import json

import pytest

from data.__main__ import main as data_main
from data.shards import ShardSet
from test_data_fixtures import write_docstring_corpus


@pytest.mark.parametrize("command", [["corpus"], ["tokenizer"], ["prepare"], ["inspect"]])
def test_help_has_examples(command, capsys):
    try:
        code = data_main(command + ["--help"])
    except SystemExit as exit_:  # argparse's own exit, where a command does not catch it
        code = exit_.code
    out = capsys.readouterr().out
    assert code == 0 and out.count("\n  data ") >= 3


def test_corpus_tokenizer_prepare_end_to_end(tmp_path, capsys):
    docs = write_docstring_corpus(tmp_path / "src" / "docs.jsonl", limit=80)
    corpus, tok, shards = tmp_path / "corpus", tmp_path / "tok", tmp_path / "shards"
    assert data_main(["corpus", "build", "--out", str(corpus), "--domains", "code", "--local",
                      f"docs={docs}", "--max-mb", "0.2", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["domains"]) == {"code", "docs"}
    assert data_main(["tokenizer", "train", "--corpus", str(corpus), "--vocab", "300", "--out", str(tok)]) == 0
    assert data_main(["prepare", "--corpus", str(corpus), "--tokenizer", str(tok), "--seq-len", "32",
                      "--out", str(shards), "--num-proc", "1"]) == 0
    capsys.readouterr()
    assert data_main(["inspect", str(shards), "--verify", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] == "sha256" and info["vocab_size"] == 300
    assert ShardSet(shards).num_sequences("train", "docs") == info["splits"]["train"]["docs"]["sequences"] > 0


@pytest.mark.parametrize("argv, needle", [
    (["corpus", "build", "--out", "{tmp}/c", "--domains", "poetry"], "unknown domain 'poetry'; allowed: books"),
    (["corpus", "build", "--out", "{tmp}/c", "--local", "oops"], "--local 'oops' must be NAME=PATH"),
    (["tokenizer", "train", "--corpus", "{tmp}/missing", "--vocab", "300", "--out", "{tmp}/t"], "not a corpus"),
    (["tokenizer", "show", "gpt9"], "'gpt9' is neither"),
    (["inspect", "{tmp}"], "has no manifest.json"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, tmp_path, capsys):
    code = data_main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
