"""MixtureLoader: deterministic, resumable, rank-disjoint, weighted, dynamic; eval + calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data.calib import sample_calibration
from data.cli import BadInput
from data.loader import DynamicConfig, MixtureLoader, dynamic_update, eval_batches, feistel_permute
from data.shards import ShardSet
from test_data_fixtures import SEQ_LEN, built


@pytest.fixture()
def shards(tmp_path_factory) -> ShardSet:
    return ShardSet(built(tmp_path_factory)["shards"])


def _rows(batch: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in batch]


def test_batches_are_long_tensors_from_the_shards(shards):
    batch = next(MixtureLoader(shards, micro_batch=4))
    assert batch.dtype == torch.long and batch.shape == (4, SEQ_LEN)
    known = {r.astype(np.int64).tobytes() for d in shards.domains for r in shards.sequences("train", d)}
    assert set(_rows(batch)) <= known


def test_two_ranks_never_share_a_sequence_in_an_epoch(shards):
    n = shards.num_sequences("train", "docs")
    steps = (n // 2) // 3  # within one epoch of the rank's share
    seen = []
    for rank in (0, 1):
        loader = MixtureLoader(shards, micro_batch=3, rank=rank, world_size=2, weights={"docs": 1.0})
        seen.append([r for _ in range(steps) for r in _rows(next(loader))])
    assert len(set(seen[0])) == len(seen[0]) == steps * 3  # no repeats within a rank either
    assert not set(seen[0]) & set(seen[1])


def test_resume_continues_with_the_exact_next_batch(shards):
    dyn = DynamicConfig({"code": 1.0, "docs": 1.0}, update_every=2)
    a = MixtureLoader(shards, micro_batch=5, seed=3, dynamic=dyn)
    for _ in range(7):
        next(a)
    a.update_domain_losses({"code": 1.5, "docs": 3.0})
    state = a.state_dict()
    expected = [next(a) for _ in range(4)]
    b = MixtureLoader(shards, micro_batch=5, seed=3, dynamic=dyn)
    b.load_state_dict(state)
    assert b.weights == pytest.approx(state["weights"])
    for want in expected:
        assert torch.equal(next(b), want)
    with pytest.raises(BadInput, match="seed=3"):
        MixtureLoader(shards, micro_batch=5, seed=4).load_state_dict(state)


def test_seed_determinism_and_domain_weights(shards):
    first = [next(MixtureLoader(shards, micro_batch=8, seed=1)) for _ in range(1)][0]
    again = next(MixtureLoader(shards, micro_batch=8, seed=1))
    other = next(MixtureLoader(shards, micro_batch=8, seed=2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    code_rows = {r.astype(np.int64).tobytes() for r in shards.sequences("train", "code")}
    only_code = MixtureLoader(shards, micro_batch=8, weights={"code": 1.0, "docs": 0.0})
    assert all(r in code_rows for _ in range(5) for r in _rows(next(only_code)))
    with pytest.raises(BadInput, match="unknown domain 'news'"):
        MixtureLoader(shards, micro_batch=2, weights={"news": 1.0})


def test_dynamic_update_follows_sheared_llama(shards):
    cfg = DynamicConfig({"code": 2.0, "docs": 2.0}, update_every=10, smoothing=1e-4)
    w = dynamic_update({"code": 0.5, "docs": 0.5}, {"code": 2.5, "docs": 1.0}, cfg)
    alpha = np.array([0.5 * math.exp(0.5), 0.5 * math.exp(0.0)])  # docs below reference: clamped at 0
    want = (1 - 1e-4) * alpha / alpha.sum() + 1e-4 / 2
    assert [w["code"], w["docs"]] == pytest.approx(list(want))
    huge = dynamic_update({"code": 0.5, "docs": 0.5}, {"code": 5000.0, "docs": 2.0}, cfg)
    assert huge["docs"] == pytest.approx(1e-4 / 2) and math.isfinite(huge["code"])  # no overflow
    loader = MixtureLoader(shards, micro_batch=16, dynamic=cfg)
    assert not loader.update_due
    for _ in range(10):
        next(loader)
    assert loader.update_due
    for _ in range(5):
        loader.update_domain_losses({"code": 4.0, "docs": 2.0})
    assert loader.weights["code"] > 0.95
    code_rows = {r.astype(np.int64).tobytes() for r in shards.sequences("train", "code")}
    drawn = [r in code_rows for _ in range(4) for r in _rows(next(loader))]
    assert sum(drawn) >= 0.9 * len(drawn)  # the batches follow the new weights


def test_eval_batches_cover_each_sequence_once(shards):
    arr = shards.sequences("eval", "docs")
    batches = list(eval_batches(shards, "docs", batch_size=7))
    assert [len(b) for b in batches[:-1]] == [7] * (len(batches) - 1)
    assert torch.equal(torch.cat(batches), torch.from_numpy(arr.astype(np.int64)))
    assert sum(len(b) for b in eval_batches(shards, "docs", batch_size=7, max_sequences=10)) == 10


def test_calibration_from_shards_and_text(shards, tmp_path_factory, tmp_path):
    path = built(tmp_path_factory)["shards"]
    calib = sample_calibration(path, 16, 32, domains=["docs"], seed=0)
    assert calib.shape == (16, 32) and calib.dtype == torch.long
    assert torch.equal(calib, sample_calibration(path, 16, 32, domains=["docs"], seed=0))
    flat = shards.sequences("train", "docs").reshape(-1).astype(np.int64)
    row = calib[0].numpy()
    assert any(np.array_equal(flat[s:s + 32], row) for s in range(0, len(flat) - 31, 32))
    long = sample_calibration(path, 2, 3 * SEQ_LEN, split="eval")  # longer than one shard sequence
    assert long.shape == (2, 3 * SEQ_LEN)
    text = tmp_path / "calib.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 50, "utf-8")
    assert sample_calibration(text, 4, 16, tokenizer=built(tmp_path_factory)["tok"]).shape == (4, 16)
    with pytest.raises(BadInput, match="needs a tokenizer"):
        sample_calibration(text, 4, 16)
    with pytest.raises(BadInput, match="asked for n=100000"):
        sample_calibration(path, 100_000, 32)


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 4099])
def test_feistel_permutation_is_a_bijection(n):
    perm = feistel_permute(np.arange(n), n, (5, 0, 1))
    assert sorted(perm.tolist()) == list(range(n))
    if n >= 1000:  # and actually shuffles
        assert abs(np.corrcoef(np.arange(n), perm)[0, 1]) < 0.1
        assert not np.array_equal(perm, feistel_permute(np.arange(n), n, (5, 0, 2)))


def test_one_epoch_visits_every_sequence_once(shards):
    n = shards.num_sequences("train", "docs")
    loader = MixtureLoader(shards, micro_batch=1, weights={"docs": 1.0})
    rows = [r for _ in range(n) for r in _rows(next(loader))]
    expected = {r.astype(np.int64).tobytes() for r in shards.sequences("train", "docs")}
    assert set(rows) == expected and loader.state_dict()["domains"]["docs"]["epoch"] == 1
