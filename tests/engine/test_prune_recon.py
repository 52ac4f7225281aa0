"""Local reconstruction after pruning (engine.pruning.recon) on tiny real models, and its CLI."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sysconfig
from pathlib import Path

import pytest
import torch

from data.cli import BadInput
from data.models import get_spec
from engine.models import build_model
from engine.pruning import get_method
from engine.pruning import recon as recon_mod
from engine.pruning.common import eval_loss
from engine.pruning.recon import ParentLayers, ReconArgs, parse_granularity, plan_mapping, reconstruct
from engine.pruning.sparse_common import check_n_m, ratio_for_sparsity, target_weights

FAST = {"steps": 30, "lr": 2e-3, "batch_size": 4}
TEXT = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"


def _ids(n: int, seq: int = 48, offset: int = 0) -> torch.LongTensor:
    """Real text as byte ids (< 256 fit the tiny vocab of 512)."""
    data = Path(inspect.__file__).read_bytes()[offset:offset + n * seq]
    return torch.tensor(list(data), dtype=torch.long).view(n, seq)


CALIB, EVAL = _ids(16), _ids(8, offset=16 * 48)


@functools.cache
def _trained_state(layers: int = 2) -> dict[str, torch.Tensor]:
    """tiny-llama after 150 Adam steps on real text: a parent whose loss pruning hurts."""
    model = build_model(_spec(layers), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    train = _ids(64, offset=30_000)
    model.train()
    for step in range(150):
        batch = train[(step % 8) * 8:(step % 8 + 1) * 8]
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _spec(layers: int):
    return dataclasses.replace(get_spec("tiny-llama"), name=f"tiny-llama-{layers}l", layers=layers)


@pytest.fixture(scope="module")
def parent_state() -> dict[str, torch.Tensor]:
    return _trained_state(2)


def _fresh(parent_state, layers: int = 2) -> torch.nn.Module:
    model = build_model(_spec(layers), seed=0)
    model.load_state_dict(parent_state)
    return model.eval()


def _prune_and_store(model, tmp_path: Path, method: str, ratio: float, args=None):
    parent = ParentLayers.save(model, tmp_path / "parent.safetensors")  # before pruning
    return parent, get_method(method)(model, ratio, CALIB, args=args)


def test_block_recon_lowers_error_and_eval_loss_and_keeps_masks_exact(parent_state, tmp_path) -> None:
    model = _fresh(parent_state)
    dense_loss = eval_loss(model, EVAL)
    parent, report = _prune_and_store(model, tmp_path, "unstructured-magnitude",
                                      ratio_for_sparsity(model, "unstructured-magnitude", 0.7))
    pruned_loss = eval_loss(model, EVAL)
    assert pruned_loss > dense_loss + 0.01  # pruning hurt
    done = reconstruct(model, parent, CALIB, report.choices, report.masks, {**FAST, "granularity": "block"})
    assert len(done.units) == 2 and done.resumed_units == 0
    for unit in done.units:
        assert unit["err_after"] < 0.5 * unit["err_before"], unit
    assert eval_loss(model, EVAL) < pruned_loss  # held-out loss recovers too
    params = dict(model.named_parameters())
    for name, mask in report.masks.items():
        assert torch.equal(params[name].detach() != 0, mask), name  # same zeros, no new ones
    assert sum(int((~m).sum()) for m in report.masks.values()) == sum(
        int((w == 0).sum()) for w in target_weights(model).values())
    assert all(p.requires_grad for p in model.parameters())  # a trainer after it sees every param


def test_layer_granularity_keeps_2_4_pattern(parent_state, tmp_path) -> None:
    model = _fresh(parent_state)
    parent, report = _prune_and_store(model, tmp_path, "2:4-magnitude",
                                      ratio_for_sparsity(model, "2:4-magnitude", 0.5))
    done = reconstruct(model, parent, CALIB, report.choices, report.masks, {**FAST, "granularity": "layer"})
    assert set(done.units[0]["linears"]) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                             "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    for errors in done.units[0]["linears"].values():
        assert errors[1] < errors[0]
    for name, w in target_weights(model).items():
        assert check_n_m(w.detach(), 2, 4), name


@pytest.mark.parametrize("granularity", ["block", "layer"])
def test_width_with_shrunk_hidden_matches_kept_channels(parent_state, tmp_path, granularity) -> None:
    model = _fresh(parent_state)
    parent, report = _prune_and_store(model, tmp_path, "width", 0.3, {"hidden": 48, "batch_size": 4})
    assert model.config.hidden_size == 48 and len(report.choices["hidden_channels"]) == 48
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    done = reconstruct(model, parent, CALIB, report.choices, None, {**FAST, "granularity": granularity})
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert all(u["err_after"] < u["err_before"] for u in done.units)
    logits = model(input_ids=EVAL[:2], use_cache=False).logits
    assert logits.shape == (2, EVAL.shape[1], model.config.vocab_size) and torch.isfinite(logits).all()


def test_depth_fits_the_block_after_the_removed_one_to_the_parent_there(parent_state, tmp_path) -> None:
    from engine.pruning.common import drop_layers

    model = _fresh(parent_state)
    parent = ParentLayers.save(model, tmp_path / "parent.safetensors")
    kept = drop_layers(model, [0])  # parent layer 1 now reads the embeddings
    done = reconstruct(model, parent, CALIB, {"kept_layers": kept}, None, {**FAST, "granularity": "block"})
    assert kept == [1] and done.units[0]["parent_blocks"] == [1]
    assert done.units[0]["err_after"] < 0.7 * done.units[0]["err_before"]


def test_granularities_agree_on_a_one_block_model(parent_state, tmp_path) -> None:
    one = _trained_state(1)
    results = []
    for granularity in ("block", "blocks:1", "blocks:3"):
        model = _fresh(one, layers=1)
        parent, report = _prune_and_store(model, tmp_path, "unstructured-magnitude", 0.2)
        reconstruct(model, parent, CALIB, report.choices, report.masks, {**FAST, "granularity": granularity})
        results.append(model.state_dict())
    for other in results[1:]:
        assert all(torch.equal(results[0][k], other[k]) for k in results[0])


def test_recomputing_blocks_in_backward_changes_no_weight(parent_state, tmp_path, monkeypatch) -> None:
    """blocks:2 recomputes each block in its backward (to hold one block's activations):
    the reconstructed model is the one the plain autograd graph gives, to float rounding."""
    results = []
    for checkpoint in (True, False):
        if not checkpoint:
            plain = recon_mod._through
            monkeypatch.setattr(recon_mod, "_through",
                                lambda block, h, kw, checkpoint: plain(block, h, kw, checkpoint=False))
        model = _fresh(parent_state)
        parent, report = _prune_and_store(model, tmp_path, "unstructured-magnitude", 0.2)
        done = reconstruct(model, parent, CALIB, report.choices, report.masks, {**FAST, "granularity": "blocks:2"})
        assert done.units[0]["err_after"] < done.units[0]["err_before"]
        results.append(model.state_dict())
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-4, atol=1e-6)


def test_mmap_threshold_setting_reports_whether_it_took_effect() -> None:
    from engine.memory import mmap_large_allocations

    import platform
    import sys

    with mmap_large_allocations() as took:
        assert took is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def test_freed_heap_holes_go_back_to_the_system() -> None:
    """What reconstruction relies on after each step: freed 1 MiB tensors between live ones
    (holes a top-of-heap trim cannot return) leave the resident set."""
    import platform
    import sys

    from engine.memory import mmap_large_allocations, release_free_heap

    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        pytest.skip("glibc only")

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    with mmap_large_allocations(64 << 20):  # 1 MiB tensors come from the heap
        tensors = [torch.ones(256 * 1024) for _ in range(200)]
        del tensors[::2]
        before = resident()
        assert release_free_heap()
        assert before - resident() > 60 << 20  # ~100 MiB of holes


def test_killed_reconstruction_resumes_to_the_same_model(parent_state, tmp_path, monkeypatch) -> None:
    args = ReconArgs(granularity="block", **FAST)
    straight = _fresh(parent_state)
    parent, report = _prune_and_store(straight, tmp_path, "unstructured-magnitude", 0.3)
    reconstruct(straight, parent, CALIB, report.choices, report.masks, args)

    real, calls = recon_mod._fit_blocks, []

    def dies_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    state = tmp_path / "state"
    model = _fresh(parent_state)
    parent, report = _prune_and_store(model, tmp_path, "unstructured-magnitude", 0.3)
    monkeypatch.setattr(recon_mod, "_fit_blocks", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        reconstruct(model, parent, CALIB, report.choices, report.masks, args, state_dir=state)
    monkeypatch.setattr(recon_mod, "_fit_blocks", real)
    model = _fresh(parent_state)  # a new process: prune again (deterministic), then resume
    parent, report = _prune_and_store(model, tmp_path, "unstructured-magnitude", 0.3)
    done = reconstruct(model, parent, CALIB, report.choices, report.masks, args, state_dir=state)
    assert done.resumed_units == 1 and len(done.units) == 2
    want = straight.state_dict()
    assert all(torch.allclose(v, want[k], atol=1e-6) for k, v in model.state_dict().items())


@pytest.mark.parametrize("value", ["blocks", "blocks:0", "blocks:x", "linear", ""])
def test_bad_granularity(value: str) -> None:
    with pytest.raises(BadInput, match="allowed: layer, block, blocks:K"):
        parse_granularity(value)


def test_empty_calibration_and_unmappable_models_are_bad_input(parent_state, tmp_path) -> None:
    model = _fresh(parent_state)
    parent = ParentLayers.save(model, tmp_path / "parent.safetensors")
    with pytest.raises(BadInput, match="nothing says what was pruned"):
        plan_mapping(model, parent.config, {}, None)  # dense: no masks, no index map
    with pytest.raises(BadInput, match="calibration sequences"):
        reconstruct(model, parent, CALIB[:0], {}, None, {})
    get_method("depth-last")(model, 0.3, None)
    with pytest.raises(BadInput, match="no kept_layers"):
        plan_mapping(model, parent.config, {}, None)


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A saved tiny-llama (trained) with a real BPE tokenizer of 512 ids beside it."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from engine.models import save_model

    bpe = ByteLevelBPETokenizer()
    bpe.train([str(TEXT)], vocab_size=512, min_frequency=2, special_tokens=["<|endoftext|>"])
    tok_dir = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(str(tok_dir))
    out = tmp_path_factory.mktemp("parent") / "tiny-llama"
    model = build_model("tiny-llama", seed=0)
    model.load_state_dict(_trained_state(2))
    save_model(model, out, tokenizer_from=tok_dir)
    return out


def _prune(*args: str) -> int:
    from engine.__main__ import main

    return main(["prune", *args])


def test_cli_prunes_then_reconstructs_and_reports_both_losses(tmp_path, tiny_dir: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "mag50"
    code = _prune("--model", str(tiny_dir), "--method", "unstructured-magnitude", "--sparsity", "0.5",
                  "--calib", str(TEXT), "--calib-samples", "8", "--calib-seq-len", "32", "--eval", str(TEXT),
                  "--eval-samples", "4", "--reconstruct", "blocks:2", "--recon-samples", "6", "--recon-steps", "20",
                  "--recon-lr", "2e-3", "--recon-batch-size", "3", "--out", str(out), "--json")
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    doc = json.loads((out / "prune_report.json").read_text())
    assert printed["loss_after_recon"] == doc["loss_after_recon"] == doc["loss_after"]
    assert doc["loss_after_prune"] > 0 and doc["loss_after_recon"] > 0  # the library test checks it drops
    assert rec_err_dropped(doc["recon"])
    rec = doc["recon"]
    assert (rec["granularity"], rec["calib_sequences"], rec["calib_seq_len"], rec["steps"], rec["lr"]) == (
        "blocks:2", 6, 32, 20, 2e-3)
    assert rec["seconds"] > 0 and len(rec["units"]) == 1 and rec["units"][0]["blocks"] == [0, 1]
    assert doc["choices"]["sparsity_targeted"] == 0.5
    from engine.pruning.sparse_common import load_masks

    masks = load_masks(out / "masks.safetensors")
    params = dict(AutoModelForCausalLM.from_pretrained(out).named_parameters())
    assert all(torch.equal(params[k].detach() != 0, m) for k, m in masks.items())
    assert not list(tmp_path.glob(".mag50*"))  # temp and progress directories are gone


def rec_err_dropped(rec: dict) -> bool:
    return all(u["err_after"] < u["err_before"] for u in rec["units"])


BAD = [
    (["--reconstruct", "blocks:0"], "granularity 'blocks:0' not allowed; allowed: layer, block, blocks:K"),
    (["--reconstruct", "block", "--recon-samples", "0"], "--recon-samples 0"),
    (["--recon-steps", "5"], "only apply with --reconstruct"),
    (["--reconstruct", "block", "--no-calib"], "--reconstruct needs calibration data"),
    (["--sparsity", "0.6", "--method", "2:4-magnitude"], "2:4 removes exactly 0.5"),
    (["--sparsity", "0.5", "--method", "width"], "--sparsity applies to the unstructured and 2:4 methods"),
    (["--sparsity", "0.5", "--ratio", "0.3"], "not allowed with argument"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, tiny_dir: Path, extra, message, capsys) -> None:
    args = {"--model": str(tiny_dir), "--method": "unstructured-magnitude", "--sparsity": "0.5",
            "--calib": str(TEXT), "--calib-samples": "4", "--calib-seq-len": "16", "--out": str(tmp_path / "o")}
    if "--no-calib" in extra:
        args.pop("--calib")
    extra = [x for x in extra if x != "--no-calib"]
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = value
    code = _prune(*[x for kv in args.items() for x in kv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message in err.splitlines()[-1]
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def _recon(*args: str) -> int:
    from engine.__main__ import main

    return main(["recon", *args])


def test_cli_recon_of_a_pruned_directory(tmp_path, tiny_dir: Path, capsys) -> None:
    pruned, out = tmp_path / "w", tmp_path / "w-layer"
    assert _prune("--model", str(tiny_dir), "--method", "width", "--ratio", "0.3", "--hidden", "48",
                  "--calib", str(TEXT), "--calib-samples", "4", "--calib-seq-len", "32", "--out", str(pruned)) == 0
    capsys.readouterr()
    code = _recon("--model", str(pruned), "--parent", str(tiny_dir), "--calib", str(TEXT), "--samples", "4",
                  "--seq-len", "32", "--granularity", "layer", "--steps", "10", "--lr", "1e-3", "--batch-size", "2",
                  "--eval", str(TEXT), "--eval-samples", "2", "--out", str(out), "--json")
    assert code == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    assert doc["recon"]["granularity"] == "layer" and doc["shape_after"]["hidden"] == 48
    assert json.loads((out / "prune_report.json").read_text())["loss_after_recon"] == doc["loss_after_recon"]
    assert not list(tmp_path.glob(".w-layer*"))


@pytest.mark.parametrize("extra,message", [
    ([], "nothing says what was pruned"),
    (["--samples", "0"], "calibration size 0 x 32"),
    (["--granularity", "blocks"], "granularity 'blocks' not allowed"),
])
def test_cli_recon_bad_input(tmp_path, tiny_dir: Path, extra, message, capsys) -> None:
    args = ["--model", str(tiny_dir), "--parent", str(tiny_dir), "--calib", str(TEXT), "--samples", "2",
            "--seq-len", "32", "--out", str(tmp_path / "o"), *extra]
    assert _recon(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err.splitlines()[-1] and "Traceback" not in err and not (tmp_path / "o").exists()


def test_recon_objective_accepts_a_shrunk_hidden_size(parent_state, tmp_path) -> None:
    """The training objective ``recon`` matches kept channels through the index map too."""
    from engine.train.objectives import BlockRecon

    teacher, student = _fresh(parent_state), _fresh(parent_state)
    report = get_method("width")(student, 0.3, CALIB, args={"hidden": 48})
    loss = BlockRecon(teacher, student, [0, 1], report.choices["hidden_channels"])(student, CALIB[:2])
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert student.model.layers[0].mlp.down_proj.weight.grad is not None
