"""Sparse pruning (2:4 and unstructured; magnitude, Wanda, SparseGPT) on tiny real models."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from data.cli import BadInput
from engine.models import build_model
from engine.pruning import get_method
from engine.pruning.common import count_params
from engine.pruning.masks import PackedMasks
from engine.pruning.sparse_common import (
    Pattern, SparseArgs, apply_masks, capture_first_inputs, check_n_m, inverse_hessian_chol, load_masks,
    magnitude_scores, masks_from_model, n_m_mask, run_layer, save_masks, sparsegpt_prune, target_linears,
    target_weights, unstructured_mask, wanda_scores)

NM_METHODS = ("2:4", "2:4-magnitude", "2:4-sparsegpt")
UNSTRUCTURED = ("unstructured", "unstructured-magnitude", "unstructured-sparsegpt")


def _calib(n: int = 8, seq: int = 48) -> torch.LongTensor:
    """Real text as token ids: the bytes of a stdlib module (ids < 256 fit the tiny vocab)."""
    data = Path(inspect.__file__).read_bytes()
    return torch.tensor(list(data[: n * seq]), dtype=torch.long).view(n, seq)


def _nm_ratio(model: torch.nn.Module) -> float:
    targeted = sum(w.numel() for w in target_weights(model).values())
    return targeted / 2 / count_params(model).total


@pytest.fixture(params=["tiny-llama", "tiny-qwen"])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    return _model(request.param)


def _model(name: str) -> torch.nn.Module:
    """A tiny preset; Qwen's q/k/v biases get non-zero values like a trained checkpoint's
    (HF initialises them to 0, which would count as already-removed parameters)."""
    model = build_model(name, seed=0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                p.normal_(0.0, 0.02)
    return model


# --- 2:4 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", NM_METHODS)
def test_2_4_every_group_of_four_keeps_two(model: torch.nn.Module, method: str) -> None:
    ratio = _nm_ratio(model)
    report = get_method(method)(model, ratio, _calib())
    weights = target_weights(model)
    assert len(weights) == 7 * model.config.num_hidden_layers
    for name, w in weights.items():
        assert check_n_m(w.detach(), 2, 4), name  # non-zeros of the weight itself
        assert torch.equal(report.masks[name], w.detach() != 0), name
    # exactly the predicted fraction, and the report says so
    assert report.params_before - report.params_after == round(ratio * report.params_before)
    assert report.ratio == pytest.approx(ratio, abs=1e-12)
    assert report.choices["sparsity_targeted"] == 0.5
    assert any("dense" in n for n in report.notes)


def test_2_4_survives_save_pretrained_and_reload(tmp_path, model: torch.nn.Module) -> None:
    report = get_method("2:4-sparsegpt")(model, _nm_ratio(model), _calib())
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    for name, w in target_weights(reloaded).items():
        assert check_n_m(w.detach(), 2, 4), name
    rebuilt = masks_from_model(reloaded)
    assert rebuilt.keys() == report.masks.keys()
    assert all(torch.equal(rebuilt[k], report.masks[k]) for k in rebuilt)


def test_2_4_refuses_a_ratio_it_cannot_reach(model: torch.nn.Module) -> None:
    achieved = _nm_ratio(model)
    half = achieved / 2  # tiny models have 2 decoder layers: one layer covered
    with pytest.raises(BadInput, match=rf"reaches only {half:.4f}, {achieved:.4f} \(1..2 layers\)"):
        get_method("2:4")(model, 0.5, _calib())
    # within the tolerance: accepted, the achieved ratio is reported
    report = get_method("2:4-magnitude")(model, round(achieved, 2), None)
    assert report.ratio == pytest.approx(achieved, abs=1e-9)
    assert report.ratio_target == round(achieved, 2)


def test_2_4_reaches_lower_ratios_by_covering_the_last_layers(model: torch.nn.Module) -> None:
    half = _nm_ratio(model) / 2
    report = get_method("2:4")(model, round(half, 2), _calib())
    assert report.ratio == pytest.approx(half, rel=0.02)  # zero-init Qwen biases count as removed
    first, last = model.model.layers
    assert all(bool((lin.weight != 0).all()) for lin in target_linears(first).values())
    for name, w in target_weights(model).items():
        if ".layers.1." in name:
            assert check_n_m(w.detach(), 2, 4), name
    assert "last 1 of 2 decoder layers" in " ".join(report.notes)


def test_n_m_mask_keeps_the_two_largest_of_each_group() -> None:
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.4, 0.3, 0.2]])
    keep = n_m_mask(scores, 2, 4)
    assert keep.tolist() == [[True, False, True, False, False, True, True, False]]
    assert check_n_m(keep, 2, 4)
    assert not check_n_m(torch.ones(2, 8, dtype=torch.bool), 2, 4)


# --- unstructured ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", UNSTRUCTURED)
def test_unstructured_hits_per_layer_sparsity_exactly(model: torch.nn.Module, method: str) -> None:
    total = count_params(model).total
    targeted = sum(w.numel() for w in target_weights(model).values())
    report = get_method(method)(model, 0.3, _calib())
    sparsity = 0.3 * total / targeted
    for name, w in target_weights(model).items():
        zeros = int((w == 0).sum())
        assert zeros == round(sparsity * w.numel()), name
        assert int((~report.masks[name]).sum()) == zeros
    assert report.ratio == pytest.approx(0.3, abs=1e-4)
    assert report.nonzero_after == count_params(model).nonzero


def test_magnitude_prunes_exactly_the_smallest_weights() -> None:
    model = build_model("tiny-llama", seed=1)
    before = {k: w.detach().clone() for k, w in target_weights(model).items()}
    report = get_method("unstructured-magnitude")(model, 0.4, None)
    for name, w0 in before.items():
        keep = report.masks[name]
        assert w0.abs()[~keep].max() <= w0.abs()[keep].min(), name
        assert torch.equal(target_weights(model)[name].detach(), w0 * keep)  # kept ones untouched


def test_wanda_equals_magnitude_when_input_norms_are_equal() -> None:
    torch.manual_seed(0)
    W = torch.randn(16, 32)
    equal = torch.full((32,), 7.0)
    for group in ("row", "layer"):
        assert torch.equal(unstructured_mask(wanda_scores(W, equal), 200, group),
                           unstructured_mask(magnitude_scores(W), 200, group))
    assert torch.equal(n_m_mask(wanda_scores(W, equal)), n_m_mask(magnitude_scores(W)))
    # and differs once one input dominates: Wanda keeps that column's weights
    loud = equal.clone()
    loud[5] = 1e6
    assert n_m_mask(wanda_scores(W, loud))[:, 5].all()
    assert not n_m_mask(magnitude_scores(W))[:, 5].all()


def test_row_group_prunes_the_same_count_in_every_row() -> None:
    scores = torch.rand(6, 20)
    keep = unstructured_mask(scores, 6 * 5 + 2, "row")
    pruned = (~keep).sum(dim=1).tolist()
    assert pruned == [6, 6, 5, 5, 5, 5]
    for r in range(6):  # within a row, the lowest scores go
        assert scores[r][~keep[r]].max() <= scores[r][keep[r]].min()


def test_unstructured_refuses_a_ratio_beyond_the_targeted_share(model: torch.nn.Module) -> None:
    share = sum(w.numel() for w in target_weights(model).values()) / count_params(model).total
    with pytest.raises(BadInput, match=rf"--ratio below {share:.4f}"):
        get_method("unstructured")(model, 0.95, _calib())


# --- SparseGPT ---------------------------------------------------------------------------------


def _correlated_inputs(n_tokens: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Inputs with correlated features and uneven scales, like real activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
    scale = torch.logspace(-0.5, 0.5, dim)[torch.randperm(dim, generator=g)]  # scattered outliers
    return (torch.randn(n_tokens, dim, generator=g) @ mix + 0.3 * torch.randn(n_tokens, dim, generator=g)) * scale


@pytest.mark.parametrize("pattern", [Pattern("unstructured", sparsity=0.5), Pattern("n:m", n=2, m=4)])
def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda(pattern: Pattern) -> None:
    torch.manual_seed(0)
    W = torch.randn(48, 64)
    X = _correlated_inputs(512, 64)  # [tokens, in]
    H = X.T @ X
    ref = X @ W.T

    def err(w: torch.Tensor) -> float:
        return float((ref - X @ w.T).norm())

    def select(scores: torch.Tensor) -> torch.Tensor:
        if pattern.kind == "n:m":
            return n_m_mask(scores, 2, 4)
        return unstructured_mask(scores, pattern.n_prune(W.numel()), "row")

    new, keep = sparsegpt_prune(W, H, pattern, blocksize=32)  # 2 blocks: lazy updates exercised
    assert int((~keep).sum()) == pattern.n_prune(W.numel())
    assert torch.equal(new != 0, keep)
    e_sgpt = err(new)
    e_mag = err(W * select(magnitude_scores(W)))
    e_wanda = err(W * select(wanda_scores(W, (X * X).sum(0))))
    assert e_sgpt < 0.9 * e_wanda  # measured ~0.8: reconstruction pays off
    assert e_wanda < 0.9 * e_mag  # measured ~0.6: input norms matter


def test_sparsegpt_lazy_block_updates_match_one_block() -> None:
    # Lazy batching is an exact reordering of the same updates: block size must not matter
    # for N:M (whose choices are made per group of 4 in both cases).
    torch.manual_seed(0)
    W = torch.randn(24, 64)
    X = _correlated_inputs(256, 64, seed=1)
    a, ka = sparsegpt_prune(W, X.T @ X, Pattern("n:m"), blocksize=8)
    b, kb = sparsegpt_prune(W, X.T @ X, Pattern("n:m"), blocksize=64)
    assert torch.equal(ka, kb)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_sparsegpt_equals_the_textbook_column_by_column_obs() -> None:
    # One block (the mask chosen once over the matrix): the solver must give exactly the OBS
    # updates of the paper's Algorithm 1 done naively on W's columns in float64.
    torch.manual_seed(2)
    W = torch.randn(40, 48)
    X = _correlated_inputs(256, 48, seed=3)
    new, keep = sparsegpt_prune(W, X.T @ X, Pattern("unstructured", sparsity=0.5), blocksize=48)
    U = inverse_hessian_chol(X.T @ X, 0.01).double()
    ref = W.double().clone()
    for i in range(W.shape[1]):
        q = ref[:, i] * keep[:, i]
        err = (ref[:, i] - q) / U[i, i]
        ref[:, i:] -= err[:, None] * U[i, i:][None]
        ref[:, i] = q
    torch.testing.assert_close(new.double(), ref, rtol=1e-4, atol=1e-5)
    assert int((~keep).sum()) == W.numel() // 2


# --- the layer-wise driver ---------------------------------------------------------------------


def test_layerwise_capture_reproduces_the_model_hidden_states(model: torch.nn.Module) -> None:
    calib = _calib(4, 32)
    with torch.no_grad():
        ref = model(input_ids=calib, output_hidden_states=True, use_cache=False).hidden_states
    inputs, kwargs = capture_first_inputs(model, calib, batch_size=3)  # uneven last batch
    assert [x.shape[0] for x in inputs] == [3, 1]
    for i, layer in enumerate(model.model.layers[:-1]):  # the last entry is after the final norm
        torch.testing.assert_close(torch.cat(inputs), ref[i], rtol=1e-5, atol=1e-5)
        run_layer(layer, inputs, kwargs)


def test_qwen_biases_and_embeddings_stay_dense() -> None:
    model = _model("tiny-qwen")
    dense_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.endswith("proj.weight")}
    get_method("unstructured")(model, 0.3, _calib())
    for n, p in model.named_parameters():
        if n in dense_before:
            assert torch.equal(p.detach(), dense_before[n]), n
    assert any(n.endswith("q_proj.bias") for n in dense_before)


# --- masks -------------------------------------------------------------------------------------


def test_masks_survive_an_optimizer_step_via_apply_masks(tmp_path) -> None:
    model = build_model("tiny-llama", seed=0)
    report = get_method("2:4-magnitude")(model, _nm_ratio(model), None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    calib = _calib(2, 32)
    model(input_ids=calib, labels=calib).loss.backward()
    opt.step()
    assert not all(check_n_m(w.detach()) for w in target_weights(model).values())  # step refills
    path = tmp_path / "masks.safetensors"
    save_masks(report.masks, path)
    masks = load_masks(path)
    assert all(m.dtype == torch.bool for m in masks.values())
    apply_masks(model, {f"module.{k}": v for k, v in masks.items()})  # DeepSpeed-wrapped names
    assert all(check_n_m(w.detach()) for w in target_weights(model).values())
    with pytest.raises(KeyError, match="nothing.weight"):
        apply_masks(model, {"nothing.weight": masks[next(iter(masks))]})


def test_pruning_holds_masks_bit_packed_and_gives_them_back_exactly(tmp_path) -> None:
    model = build_model("tiny-llama", seed=0)
    report = get_method("unstructured-magnitude")(model, 0.3, None)
    assert isinstance(report.masks, PackedMasks)
    weights = target_weights(model)
    assert set(report.masks) == set(weights)
    for name, keep in report.masks.items():
        assert keep.dtype == torch.bool and keep.shape == weights[name].shape
        assert torch.equal(keep, weights[name] != 0), name  # tiny-llama has no zeros of its own
    total = sum(w.numel() for w in weights.values())
    assert report.masks.nbytes <= total // 8 + len(weights)  # one bit per weight
    odd = torch.rand(3, 7) > 0.5  # 21 entries: not a whole number of bytes
    report.masks["odd"] = odd
    assert torch.equal(report.masks["odd"], odd)
    del report.masks["odd"]
    path = tmp_path / "masks.safetensors"
    save_masks(report.masks, path)
    loaded = load_masks(path)
    assert all(torch.equal(loaded[k], report.masks[k]) for k in report.masks) and len(loaded) == len(report.masks)


def test_masks_from_a_dense_model_are_empty() -> None:
    assert masks_from_model(build_model("tiny-llama", seed=0)) == {}


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, float("nan"), 1.5])
def test_ratio_outside_open_unit_interval_is_bad_input(ratio: float) -> None:
    with pytest.raises(BadInput, match=r"outside \(0, 1\)"):
        get_method("unstructured")(build_model("tiny-llama"), ratio, _calib())


def test_missing_calibration_and_unknown_args_are_bad_input() -> None:
    model = build_model("tiny-llama")
    with pytest.raises(BadInput, match="needs calibration data"):
        get_method("unstructured-sparsegpt")(model, 0.3, None)
    with pytest.raises(BadInput, match=r"unknown sparse option\(s\) blocksz; allowed: .*blocksize"):
        get_method("unstructured")(model, 0.3, _calib(), args={"blocksz": 64})
    with pytest.raises(BadInput, match="group 'column'"):
        SparseArgs(group="column")
    # nothing was pruned by the refused calls
    assert masks_from_model(model) == {}


@pytest.mark.parametrize("group", ["row", "layer"])
def test_exact_counts_even_when_all_scores_tie(group: str) -> None:
    scores = torch.ones(5, 12)
    scores[0, 3] = 0.5  # one clear loser, the rest tied
    keep = unstructured_mask(scores, 23, group)
    assert int((~keep).sum()) == 23
    assert not keep[0, 3]


def test_wanda_scores_layer_two_on_the_pruned_layer_one_outputs() -> None:
    # Sequential pruning (both papers): layer 1's statistics come from the PRUNED layer 0.
    model = _model("tiny-llama")
    calib = _calib()
    q1 = model.model.layers[1].self_attn.q_proj
    w1 = q1.weight.detach().clone()

    def q1_input_sq_norms() -> torch.Tensor:
        acc = []
        handle = q1.register_forward_pre_hook(lambda _m, a: acc.append((a[0].reshape(-1, 64) ** 2).sum(0)))
        with torch.no_grad():
            model(input_ids=calib, use_cache=False)
        handle.remove()
        return torch.stack(acc).sum(0)

    dense_norms = q1_input_sq_norms()
    report = get_method("unstructured")(model, 0.3, calib)
    n_prune = int((~report.masks["model.layers.1.self_attn.q_proj.weight"]).sum())
    sequential = unstructured_mask(wanda_scores(w1, q1_input_sq_norms()), n_prune, "row")
    one_shot = unstructured_mask(wanda_scores(w1, dense_norms), n_prune, "row")
    assert torch.equal(report.masks["model.layers.1.self_attn.q_proj.weight"], sequential)
    assert not torch.equal(sequential, one_shot)


# --- the staged (one-forward) layer driver -----------------------------------------------------


def test_gram_upper_blocks_give_the_full_hessian() -> None:
    from engine.pruning.sparse_common import add_gram, symmetric

    x = _correlated_inputs(300, 70)
    H = torch.zeros(70, 70)
    add_gram(H, x[:200], block=16)  # uneven last block, two batches
    add_gram(H, x[200:], block=16)
    torch.testing.assert_close(symmetric(H), x.T @ x, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen"])
@pytest.mark.parametrize("scorer", ["wanda", "sparsegpt"])
def test_staged_layer_leaves_the_pruned_layers_own_outputs(name: str, scorer: str) -> None:
    # One forward pass replays the layer sub-module by sub-module: what it leaves for the next
    # layer must be exactly the pruned layer's forward on the same inputs.
    from engine.pruning.sparse_common import STAGED_LAYERS, prune_layer_staged

    model = _model(name)
    layer = model.model.layers[0]
    assert type(layer).__name__ in STAGED_LAYERS
    inputs, kwargs = capture_first_inputs(model, _calib(6, 32), batch_size=4)
    original = [h.clone() for h in inputs]
    masks: dict[str, torch.Tensor] = {}
    prune_layer_staged(layer, "model.layers.0", inputs, kwargs, scorer, Pattern("unstructured", 0.5), SparseArgs(),
                       masks)
    assert len(masks) == 7 and all(abs(float((~m).float().mean()) - 0.5) < 0.01 for m in masks.values())
    run_layer(layer, original, kwargs)
    for got, want in zip(inputs, original):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_staged_layer_reads_each_group_after_the_groups_before_are_pruned(monkeypatch) -> None:
    # q/k/v see the layer's own inputs (same masks as the two-pass driver); o_proj's statistics
    # come from the PRUNED attention, so its mask differs from one scored on the dense layer.
    import engine.pruning.sparse_common as sc

    calib = _calib()
    staged = get_method("unstructured")(_model("tiny-llama"), 0.3, calib).masks
    monkeypatch.setattr(sc, "STAGED_LAYERS", ())
    two_pass = get_method("unstructured")(_model("tiny-llama"), 0.3, calib).masks
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(staged[q], two_pass[q])
    assert not torch.equal(staged["model.layers.0.self_attn.o_proj.weight"],
                           two_pass["model.layers.0.self_attn.o_proj.weight"])
