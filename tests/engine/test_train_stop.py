"""The online budget (``stop:``): a tiny Llama refits its own curve and ends the run at D*."""

from __future__ import annotations

import pandas as pd
import pytest

from data.cli import BadInput
from data.runs import RunStore
from engine.train.config import job_from_dict
from engine.train.recipe import run_job
from engine.train.stop import NoForecaster, decide, forecaster

SEQ, MB = 32, 8  # SEQ: the shared mem_data fixture's sequence length
STEP_TOKENS = SEQ * MB
TOTAL = 40 * STEP_TOKENS


def make_job(runs, **stop):
    return job_from_dict({"parent": "tiny-llama", "init": "random", "tokens": TOTAL, "runs_dir": str(runs),
                          "data": {"shards": "mem"}, "eval": {"points": 10, "max_sequences": 8},
                          "deepspeed": {"micro_batch": MB}, "optim": {"lr": 3e-3, "warmup_frac": 0.05},
                          "stop": {"min_fraction": 0.3, **stop}})


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, dist, mem_data):
    """A run whose target (a loss above the start) is met at once: it stops at the minimum fraction."""
    runs = tmp_path_factory.mktemp("runs")
    job = make_job(runs, target_loss=50.0)
    assert run_job(job, dist, mem_data) == "done"
    return runs, job


def test_run_stops_at_the_predicted_budget_not_before_the_minimum(stopped):
    runs, job = stopped
    store = RunStore(runs)
    record, curve = store.read(job.run_id), store.read_curve(job.run_id)
    assert record["status"] == "done"
    last = int(curve["tokens"].iloc[-1])
    assert 0.3 * TOTAL <= last < TOTAL  # ended early, but never before min_fraction
    stop = record["stop"]
    assert stop["decision"]["decision"] == "stop" and stop["decision"]["tokens"] == last
    history = stop["history"]
    assert [h["step"] for h in history] == sorted({h["step"] for h in history})
    assert all(h["decision"] == "continue" for h in history if h["fraction"] < 0.3)
    fitted = [h for h in history if h.get("d_star") is not None]
    assert fitted and all(h["low"] <= h["d_star"] <= h["high"] for h in fitted)
    assert not (runs / job.run_id / "checkpoint").exists()


def test_status_shows_the_stop(stopped):
    from engine.grid.status import stop_cell

    runs, job = stopped
    assert stop_cell(RunStore(runs).read(job.run_id)).startswith("stopped at ")


def test_killed_run_resumes_and_stops_at_the_same_point(tmp_path, stopped, dist, mem_data, monkeypatch):
    from engine.train import recipe

    job = make_job(tmp_path, target_loss=50.0)
    real, calls = recipe._train_step, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "_train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, dist, mem_data)
    monkeypatch.setattr(recipe, "_train_step", real)
    assert run_job(job, dist, mem_data) == "done"
    got = RunStore(tmp_path).read(job.run_id)["stop"]
    ref_runs, ref_job = stopped
    ref = RunStore(ref_runs).read(ref_job.run_id)["stop"]
    assert got["decision"]["step"] == ref["decision"]["step"]
    assert [h["step"] for h in got["history"]] == [h["step"] for h in ref["history"]]  # no duplicates


def test_decide_never_stops_below_the_minimum_fraction():
    job = make_job("unused", at="optimum", min_fraction=0.5, recover=0.5)
    tokens = [0, 256, 512, 1024, 2048, 4096]
    curve = pd.DataFrame({"tokens": tokens, "eval_loss": [5.0] + [2.0 + 3.0 * t ** -0.5 for t in tokens[1:]]})
    early = decide(job, curve, 16, 4096, None)  # D* is long past (the gap closes fast) ...
    assert early["decision"] == "continue" and "min_fraction" in early["reason"]
    late = decide(job, curve, 16, int(0.6 * TOTAL), None)  # ... so past the minimum it stops
    assert late["decision"] == "stop"
    few = decide(job, curve.iloc[:3], 2, 512, None)
    assert few["decision"] == "continue" and "no fit yet" in few["reason"]


def test_the_online_stop_fits_the_curve_after_its_lr_warm_up():
    """Evaluations on the warm-up ramp (lr below its peak) are left out of the stop's fit, as
    of a pilot's: the forecast equals the one from the curve without them."""
    job = make_job("unused", at="optimum", min_fraction=0.5, recover=0.9)
    tokens = [0, 128, 256, 512, 1024, 2048, 4096]
    loss = [5.0, 4.99, 4.9] + [2.0 + 3.0 * t ** -0.5 for t in tokens[3:]]
    lr = [1e-4, 1e-4, 5e-4, 1e-3, 1e-3, 1e-3, 1e-3]
    with_ramp = pd.DataFrame({"tokens": tokens, "eval_loss": loss, "lr": lr})
    without = with_ramp.drop(index=[1, 2]).drop(columns="lr")
    got, want = decide(job, with_ramp, 16, 4096, None), decide(job, without, 16, 4096, None)
    assert got["d_star"] == pytest.approx(want["d_star"]) and got["final_loss"] == pytest.approx(want["final_loss"])
    assert decide(job, with_ramp.drop(columns="lr"), 16, 4096, None)["d_star"] != pytest.approx(want["d_star"])


def test_the_stop_decides_from_the_run_log_in_memory_and_records_through_it(tmp_path):
    """The stop refits the rows the run log holds, not curve.parquet read back; its history
    goes into run.json through the log."""
    from engine.train.runlog import RunLog
    from engine.train.stop import should_stop

    job = make_job(tmp_path, at="optimum", min_fraction=0.5, recover=0.5)
    log = RunLog(tmp_path, job.run_id, is_main=True)
    log.start({"status": "running", "meta": {"loss_before": 2.0}})
    tokens = [0, 256, 512, 1024, 2048, 4096]
    for step, t in enumerate(tokens):
        log.append({"step": step, "tokens": t, "eval_loss": 5.0 if t == 0 else 2.0 + 3.0 * t ** -0.5})
    (tmp_path / job.run_id / "curve.parquet").unlink()  # nothing to read back: the rows are in memory
    assert should_stop(job, log, 16, int(0.6 * TOTAL))
    assert RunStore(tmp_path).read(job.run_id)["stop"]["decision"]["step"] == 16
    assert not should_stop(job, RunLog(tmp_path, job.run_id, is_main=False), 16, int(0.6 * TOTAL))


def test_the_forecaster_is_found_by_entry_point_not_import():
    import fitting.online

    assert forecaster() is fitting.online.forecast  # registered in pyproject.toml
    with pytest.raises(NoForecaster, match="prunelaw.stop_forecasters.*installed: .*law"):
        forecaster("no-such-forecaster")


def test_a_card_prior_is_placed_at_the_run_s_own_parent_and_ratio():
    from pathlib import Path

    card = Path(__file__).resolve().parents[2] / "planner" / "cards" / "p2_llama3_depth.json"
    job = make_job("unused", at="optimum", min_fraction=0.5, recover=0.5, card=str(card))
    tokens = [0, 256, 512, 1024, 2048, 4096]
    curve = pd.DataFrame({"tokens": tokens, "eval_loss": [5.0] + [2.0 + 3.0 * t ** -0.5 for t in tokens[1:]]})
    meta = {"params_before": 4e5, "ratio": 0.5}
    with_card = decide(job, curve, 16, int(0.6 * TOTAL), 2.0, meta)
    alone = decide(make_job("unused", at="optimum", min_fraction=0.5, recover=0.5), curve, 16, int(0.6 * TOTAL), 2.0)
    assert with_card["decision"] == "stop" and with_card["d_star"] != alone["d_star"]  # the prior moved it
    lacking = decide(job, curve, 16, int(0.6 * TOTAL), 2.0, {"ratio": 0.5})
    assert lacking["decision"] == "continue" and "lacks ['params_before']" in lacking["reason"]


@pytest.mark.parametrize("stop, needle", [({}, "exactly one"), ({"at": "optimum", "target_loss": 2.0}, "exactly one"),
                                          ({"at": "soon"}, "allowed: optimum"),
                                          ({"at": "optimum", "min_fraction": 0}, "min_fraction")])
def test_bad_stop_config_is_refused(stop, needle):
    with pytest.raises(BadInput, match=needle):
        job_from_dict({"parent": "tiny-llama", "tokens": 1000, "data": {"shards": "x"}, "stop": stop})


def test_jobs_without_stop_keep_their_id():
    from engine.train.config import config_hash

    base = {"parent": "tiny-llama", "tokens": 1000, "data": {"shards": "x"}}
    with_stop = job_from_dict({**base, "stop": {"at": "optimum"}})
    assert config_hash(job_from_dict(base)) == config_hash(job_from_dict({**base, "stop": None}))
    assert config_hash(with_stop) != config_hash(job_from_dict(base))


def test_a_grid_sets_the_online_budget_for_its_post_training_jobs(tmp_path):
    from engine.grid.spec import load_grid
    from test_grid_spec import write

    grid = load_grid(write(tmp_path, train={"deepspeed": {"micro_batch": 4}, "stop": {"at": "optimum"}}))
    post = [j for j in grid.jobs if j.config.method != "none"]
    assert post and all(j.config.stop is not None and j.config.stop.at == "optimum" for j in post)
