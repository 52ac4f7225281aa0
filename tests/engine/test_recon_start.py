"""Reconstructed starts in the recipe: ``objective: recon+lm`` reconstructs, then post-trains."""

import pytest

from data.cli import BadInput
from data.runs import RunStore
from engine.train.config import default_run_id, job_from_dict
from engine.train.recipe import run_job
from train_fakes import MemData

SEQ, MB = 32, 8


def _job(runs, **over):
    base = {"parent": "tiny-llama", "tokens": 6 * SEQ * MB, "runs_dir": str(runs), "data": {"shards": "mem"},
            "method": "unstructured-magnitude", "ratio": 0.3, "objective": "recon+lm",
            "eval": {"points": 2, "max_sequences": 8}, "deepspeed": {"micro_batch": MB},
            "recon": {"calib_sequences": 8, "steps": 10, "lr": 5e-4, "batch_size": 4, "granularity": "block"}}
    return job_from_dict({**base, **over})


@pytest.mark.parametrize("objective", ["recon+lm", "recon+kd"])
def test_recon_start_reconstructs_then_trains_and_records_it(tmp_path, objective) -> None:
    """``recon+kd`` reads the parent's layers from disk too: its teacher is loaded only after
    the student is wrapped, so no second model exists while reconstructing."""
    from engine.train.runtime import init_distributed

    job = _job(tmp_path, objective=objective)
    assert run_job(job, init_distributed(), MemData(seq_len=SEQ)) == "done"
    record = RunStore(tmp_path).read(job.run_id)
    recon = record["pruning"]["recon"]
    assert recon["granularity"] == "block" and recon["calib_sequences"] == 8 and recon["steps"] == 10
    assert len(recon["units"]) == 2 and all(u["err_after"] <= u["err_before"] for u in recon["units"])
    assert record["meta"]["objective"] == objective
    assert not list((tmp_path / job.run_id).glob("recon-start*"))  # the parent copy is gone


def test_report_compares_a_reconstructed_start_with_lm_at_matched_tokens(tmp_path) -> None:
    from data.runs import load
    from engine.train.runtime import init_distributed
    from reports.tables import matched_comparison

    for objective in ("lm", "recon+lm"):
        assert run_job(_job(tmp_path, objective=objective), init_distributed(), MemData(seq_len=SEQ)) == "done"
    table = matched_comparison(load(tmp_path), "objective", "lm")
    assert set(table["arm"]) == {"recon+lm"} and len(table) >= 2 and table["gap"].notna().all()


def test_recon_start_options_are_checked_and_old_ids_kept(tmp_path) -> None:
    with pytest.raises(BadInput, match="granularity 'blocks:0' not allowed"):
        _job(tmp_path, recon={"granularity": "blocks:0"})
    with pytest.raises(BadInput, match="init 'random' would discard them"):
        _job(tmp_path, init="random")
    with pytest.raises(BadInput, match="calib_sequences=0"):
        _job(tmp_path, recon={"calib_sequences": 0})
    plain = _job(tmp_path, objective="lm", recon={})
    explicit = _job(tmp_path, objective="lm", recon={"granularity": "block", "steps": 100, "lr": 1e-4, "batch_size": 8})
    assert default_run_id(plain) == default_run_id(explicit)  # knobs at defaults leave ids alone
    assert default_run_id(_job(tmp_path, recon={"granularity": "layer"})) != default_run_id(_job(tmp_path, recon={}))
