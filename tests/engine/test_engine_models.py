"""engine.models and the counting helpers: real transformers classes with the table's counts."""

from __future__ import annotations

import pytest
import torch

from data.cli import BadInput
from data.models import get_spec
from engine.models import build_model, load_model, save_model, spec_of
from engine.pruning.common import count_params, eval_loss


@pytest.mark.parametrize("name,cls", [("tiny-llama", "LlamaForCausalLM"), ("tiny-qwen", "Qwen2ForCausalLM")])
def test_build_model_matches_table(name: str, cls: str) -> None:
    model = build_model(name)
    spec = get_spec(name)
    counts = count_params(model)
    assert type(model).__name__ == cls
    assert counts.total == spec.params_total  # tied embeddings counted once
    assert counts.nonembed == spec.params_nonembed
    assert model.lm_head.weight is model.model.embed_tokens.weight
    attn = model.model.layers[0].self_attn
    assert attn.head_dim == spec.head_dim and attn.num_key_value_groups == spec.heads // spec.kv_heads
    assert (attn.q_proj.bias is not None) == spec.qkv_bias


def test_real_preset_config_has_exact_count() -> None:
    """Build a real preset on the meta device: the transformers model has the published count."""
    from transformers import Qwen2ForCausalLM

    from engine.models import config_for

    spec = get_spec("qwen2.5-0.5b")
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config_for(spec))
    assert sum(p.numel() for p in model.parameters()) == spec.expected_total == 494_032_768


def test_vocab_override_and_seed() -> None:
    a, b = build_model("tiny-llama", vocab=300, seed=3), build_model("tiny-llama", vocab=300, seed=3)
    assert a.config.vocab_size == 300 and a.model.embed_tokens.weight.shape == (300, 64)
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)


def test_nonzero_counts_zeroed_weights() -> None:
    model = build_model("tiny-llama")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[:, :10].zero_()
    counts = count_params(model)
    assert counts.total - counts.nonzero == 64 * 10


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen"])
def test_save_and_reload_same_logits(tmp_path, name: str) -> None:
    model = build_model(name)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text("{}")
    out = save_model(model, tmp_path / "m", {"note.json": {"a": 1}}, tokenizer_from=tmp_path / "src")
    again = load_model(out)
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-6)
    assert (out / "tokenizer.json").is_file() and (out / "note.json").read_text().strip().startswith("{")
    assert spec_of(again) == spec_of(model)


def test_load_model_bad_inputs(tmp_path) -> None:
    with pytest.raises(BadInput, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(BadInput, match="known preset"):
        load_model("llama-9000")
    with pytest.raises(BadInput, match="unknown model"):
        build_model("nope")
    with pytest.raises(BadInput, match="random:NAME takes one of"):
        load_model("random:nope")


def test_random_init_is_explicit_and_described() -> None:
    """``random:NAME`` builds the table shape with fresh weights and says so; the record keeps it."""
    from engine.models import resolve_model

    model = load_model("random:tiny-qwen", seed=4)
    assert torch.equal(model.model.embed_tokens.weight, build_model("tiny-qwen", seed=4).model.embed_tokens.weight)
    resolved = resolve_model("random:tiny-qwen")
    assert "RANDOM INIT of the tiny-qwen shape" in resolved.describe()
    assert resolved.record() == {"kind": "random", "preset": "tiny-qwen"}
    assert resolve_model("tiny-qwen").path is None  # a test shape: nothing else it could mean


def test_weight_shapes_are_checked_against_the_config(tmp_path) -> None:
    """Weights of another model under a config: one line naming the tensor, before any allocation."""
    import json

    out = save_model(build_model("tiny-llama"), tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 4}))
    with pytest.raises(BadInput, match=r"tensor model.layers.0.self_attn.k_proj.weight has shape \[32, 64\] "
                                       r"but config.json implies \[64, 64\]"):
        load_model(out)


def test_eval_loss_is_token_mean_cross_entropy() -> None:
    model = build_model("tiny-qwen")
    ids = torch.randint(0, 512, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = float(model(input_ids=ids, labels=ids).loss)  # HF shifts labels internally
    assert eval_loss(model, ids, batch_size=2) == pytest.approx(expected, rel=1e-5)
    # a random 512-way model sits near log(512)
    assert abs(expected - torch.log(torch.tensor(512.0)).item()) < 0.5
