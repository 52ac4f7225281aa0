"""The held-out eval every curve point comes from: per-sequence sums, per-domain and
token-weighted means, checked against transformers' own loss of the same model."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from engine.train.evaluate import evaluate, sequence_sums


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def _hf_loss(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids, use_cache=False).loss)


def test_each_sequences_sum_is_transformers_loss_of_that_sequence_alone(model) -> None:
    ids = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(1))
    sums = sequence_sums(model, ids)
    assert sums.shape == (3,)
    for i in range(3):
        assert float(sums[i]) / 16 == pytest.approx(_hf_loss(model, ids[i:i + 1]), rel=1e-5)


def test_eval_loss_weights_domains_by_their_tokens_and_leaves_out_a_probe_domain(model) -> None:
    gen = torch.Generator().manual_seed(2)
    data = {"big": [torch.randint(0, 97, (4, 17), generator=gen) for _ in range(2)],
            "small": [torch.randint(0, 97, (1, 9), generator=gen)],
            "probe": [torch.randint(0, 97, (2, 17), generator=gen)]}
    model.train()
    out = evaluate(model, list(data), lambda d: data[d], mean_over=["big", "small"])
    assert model.training  # the pass restores the caller's mode

    per = {d: sum(_hf_loss(model, b) * b[:, 1:].numel() for b in bs) / sum(b[:, 1:].numel() for b in bs)
           for d, bs in data.items()}
    for d, loss in per.items():
        assert out[f"eval_loss.{d}"] == pytest.approx(loss, rel=1e-5)
    tokens = {"big": 2 * 4 * 16, "small": 8}
    weighted = sum(per[d] * n for d, n in tokens.items()) / sum(tokens.values())
    assert out["eval_loss"] == pytest.approx(weighted, rel=1e-5)
    assert not math.isclose(out["eval_loss"], (per["big"] + per["small"]) / 2, rel_tol=1e-4)
