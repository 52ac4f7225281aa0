"""``engine prune`` end to end on tiny models and real text (a Python stdlib source file)."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from engine.__main__ import main as engine_main

TEXT = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A real byte-level BPE (vocab 512, fits the tiny models) trained on the stdlib text."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train([str(TEXT)], vocab_size=512, min_frequency=2, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    out = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer_dir: Path) -> Path:
    """A saved tiny-qwen with the tokenizer next to it (like a fetched parent)."""
    from engine.models import build_model, save_model

    out = tmp_path_factory.mktemp("parent") / "tiny-qwen"
    save_model(build_model("tiny-qwen"), out, tokenizer_from=tokenizer_dir)
    return out


def _prune(*args: str) -> int:
    return engine_main(["prune", *args])


@pytest.mark.parametrize("method", ["width", "depth"])
def test_prune_writes_loadable_model_and_report(tmp_path, tiny_dir: Path, method: str, capsys) -> None:
    out = tmp_path / "pruned"
    code = _prune("--model", str(tiny_dir), "--method", method, "--ratio", "0.3", "--out", str(out),
                  "--calib", str(TEXT), "--calib-samples", "4", "--calib-seq-len", "32",
                  "--eval", str(TEXT), "--eval-samples", "4", "--json")
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((out / "prune_report.json").read_text())
    assert printed["ratio"] == report["ratio"] and report["method"] == method
    assert report["ratio_target"] == 0.3 and 0.2 < report["ratio"] < 0.45
    assert report["loss_before"] > 0 and report["loss_after"] > 0
    assert report["shape_before"]["hidden"] == 64
    assert (out / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == report["params_after"]
    assert not list(tmp_path.glob(".pruned.*"))  # the temp dir was renamed away


def test_preset_without_calibration(tmp_path) -> None:
    out = tmp_path / "p"
    assert _prune("--model", "tiny-llama-m", "--method", "depth-last", "--ratio", "0.3", "--out", str(out)) == 0
    report = json.loads((out / "prune_report.json").read_text())
    assert report["choices"]["dropped_layers"] == [2, 3]  # 2 of 4 layers: 30% of 328k params
    assert report["ratio"] == pytest.approx(0.3, abs=0.01)
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 2


BAD = [
    (["--ratio", "0"], "--ratio 0.0 is outside (0, 1)"),
    (["--ratio", "1.5"], "outside (0, 1)"),
    (["--method", "prune-everything"], "unknown method 'prune-everything'; allowed: depth"),
    (["--model", "llama-99b"], "neither a model directory nor a known preset"),
    (["--method", "depth-last", "--ratio", "0.95"], "would remove all 2 layers"),
    (["--method", "depth-last", "--ratio", "0.05"], "reachable ratios"),
    (["--method", "width", "--heads", "3", "--calib", str(TEXT), "--tokenizer", "TOK"],
     "heads=3 breaks GQA with kv_heads=2"),
    (["--method", "width"], "needs calibration data"),
    (["--ratio", "abc"], "invalid float value"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_input_exits_2_with_one_line(tmp_path, tokenizer_dir: Path, extra, message, capsys) -> None:
    args = {"--model": "tiny-llama", "--method": "depth-last", "--ratio": "0.4", "--out": str(tmp_path / "o")}
    extra = [str(tokenizer_dir) if x == "TOK" else x for x in extra]
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    code = _prune(*[x for kv in args.items() for x in kv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err.splitlines()[-1]
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_directory_without_config(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code = _prune("--model", str(tmp_path / "empty"), "--method", "depth-last", "--ratio", "0.4",
                  "--out", str(tmp_path / "o"))
    assert code == 2 and "has no config.json" in capsys.readouterr().err


def test_existing_output_is_kept_without_force(tmp_path, capsys) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    args = ["--model", "tiny-llama", "--method", "depth-last", "--ratio", "0.4", "--out", str(out)]
    assert _prune(*args) == 2 and "--force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert _prune(*args, "--force") == 0 and not (out / "keep.txt").exists()


def test_calibration_outside_vocab_is_bad_input(tmp_path, capsys) -> None:
    """A text tokenised by a bigger tokenizer than the model's vocabulary is refused."""
    from transformers import PreTrainedTokenizerFast
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train([str(TEXT)], vocab_size=2000, special_tokens=["<|endoftext|>"])
    tok_dir = tmp_path / "bigtok"
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(str(tok_dir))
    code = _prune("--model", "tiny-llama", "--method", "depth", "--ratio", "0.4", "--out", str(tmp_path / "o"),
                  "--calib", str(TEXT), "--tokenizer", str(tok_dir), "--calib-samples", "2", "--calib-seq-len", "64")
    assert code == 2 and "outside the model's vocabulary (512)" in capsys.readouterr().err


def test_help_has_examples(capsys) -> None:
    for cmd in (["prune", "--help"], ["model", "--help"]):
        assert engine_main(cmd) == 0
        out = capsys.readouterr().out
        assert out.count("  engine ") >= 3


def test_model_list_prints_exact_counts(capsys) -> None:
    assert engine_main(["model", "list"]) == 0
    out = capsys.readouterr().out
    assert "134,515,008" in out and "8,030,261,248" in out and "494,032,768" in out


def test_model_fetch_unknown_name(tmp_path, capsys) -> None:
    assert engine_main(["model", "fetch", "llama-3.1-8b", "--out", str(tmp_path / "x")]) == 2
    assert "fetchable offline: smollm2-135m" in capsys.readouterr().err


def test_masks_are_saved_for_sparse_methods(tmp_path) -> None:
    """Sparse methods go through the same writer: their masks land in masks.safetensors."""
    pytest.importorskip("engine.pruning.unstructured")
    from safetensors.torch import load_file

    out = tmp_path / "s"
    assert _prune("--model", "tiny-llama", "--method", "unstructured-magnitude", "--ratio", "0.2",
                  "--out", str(out)) == 0
    masks = load_file(str(out / "masks.safetensors"))
    report = json.loads((out / "prune_report.json").read_text())
    removed = sum(int((~m).sum()) for m in masks.values())
    assert masks and all(m.dtype == torch.bool for m in masks.values())
    assert report["params_before"] - report["params_after"] == removed


def _digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("out", ["SAME", "SAME/pruned", "LINK", "PARENT_OF_MODEL", "."])
def test_force_never_replaces_the_input_or_the_current_directory(tmp_path, tiny_dir: Path, out: str, capsys,
                                                                 monkeypatch) -> None:
    """``engine prune --model m --out m --force`` used to prune m and swap the result over it."""
    model = tmp_path / "home" / "m"
    model.parent.mkdir()
    import shutil

    shutil.copytree(tiny_dir, model)
    (tmp_path / "link").symlink_to(model)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / ("elsewhere" if out == "." else "home"))
    target = {"SAME": str(model), "SAME/pruned": str(model / "pruned"), "LINK": str(tmp_path / "link"),
              "PARENT_OF_MODEL": str(model.parent), ".": "."}[out]
    before = _digests(model)
    code = engine_main(["prune", "--model", str(model), "--method", "depth-last", "--ratio", "0.3",
                        "--out", target, "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert ("current directory" if out == "." else "the input --model") in err[0]
    assert _digests(model) == before and sorted(p.name for p in model.parent.iterdir()) == ["m"]


def test_recon_refuses_to_write_over_its_pruned_input(tmp_path, tiny_dir: Path, capsys) -> None:
    before = _digests(tiny_dir)
    code = engine_main(["recon", "--model", str(tiny_dir), "--parent", "tiny-qwen", "--calib", str(TEXT),
                        "--out", str(tiny_dir), "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "is the input --model" in err
    assert _digests(tiny_dir) == before
