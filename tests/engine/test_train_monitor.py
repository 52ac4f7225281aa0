"""``monitor:`` in a job file: DeepSpeed's own TensorBoard / CSV writers get the recipe's curves.

A tiny Llama trained by the real recipe (``deepspeed.initialize``) on the in-memory corpus of
``train_fakes``; the files DeepSpeed writes are read back with TensorBoard's own reader and
compared with the run store's curve.
"""

import csv

import pytest

from data.cli import BadInput
from data.runs import RunStore
from engine.train.config import config_hash, job_from_dict
from engine.train.dsconfig import build_ds_config, monitor_dir, wandb_installed
from engine.train.recipe import run_job

SEQ, MB = 32, 8
STEP_TOKENS = SEQ * MB


def make_job(runs, **over):
    base = {"parent": "tiny-llama", "init": "random", "tokens": 10 * STEP_TOKENS, "runs_dir": str(runs),
            "data": {"shards": "mem"}, "eval": {"points": 3, "max_sequences": 16},
            "deepspeed": {"micro_batch": MB}, "optim": {"lr": 3e-3, "warmup_frac": 0.1}, "checkpoint": False}
    return job_from_dict({**base, **over})


def read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], [(int(float(step)), float(value)) for step, value in rows[1:]]


def test_monitor_is_off_by_default_and_not_part_of_the_run_id(tmp_path):
    plain = make_job(tmp_path)
    watched = make_job(tmp_path, monitor={"tensorboard": True, "csv": True})
    assert not plain.monitor.enabled and watched.monitor.enabled
    assert config_hash(plain) == config_hash(watched) and plain.run_id == watched.run_id
    ds = build_ds_config(plain, 1, SEQ)
    assert not {"tensorboard", "csv_monitor", "wandb"} & set(ds)


def test_monitor_sections_point_into_the_run_dir_or_a_shared_dir(tmp_path):
    job = make_job(tmp_path, monitor={"tensorboard": True, "csv": True})
    ds = build_ds_config(job, 1, SEQ)
    where = tmp_path / job.run_id / "monitor"
    for key in ("tensorboard", "csv_monitor"):
        assert ds[key] == {"enabled": True, "output_path": str(where.parent), "job_name": "monitor"}
    shared = make_job(tmp_path, monitor={"csv": True, "dir": str(tmp_path / "tb")})
    assert monitor_dir(shared) == tmp_path / "tb" / shared.run_id
    assert "tensorboard" not in build_ds_config(shared, 1, SEQ)
    from deepspeed.monitor.config import get_monitor_config

    parsed = get_monitor_config(ds)  # DeepSpeed's own pydantic model accepts the sections
    assert parsed.enabled and parsed.tensorboard.enabled and parsed.csv_monitor.enabled


@pytest.mark.parametrize("monitor, message", [
    ({"tensorbord": True}, "unknown key(s) tensorbord in monitor"),
    ({"csv": "yes"}, "monitor.csv='yes' must be of type bool"),
    ("on", "monitor must be a mapping"),
])
def test_bad_monitor_keys_are_refused(tmp_path, monitor, message):
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_job(tmp_path, monitor=monitor)


def test_tiny_run_writes_tensorboard_and_csv_curves(tmp_path, dist, mem_data, capsys):
    job = make_job(tmp_path, monitor={"tensorboard": True, "csv": True, "wandb": True})
    assert run_job(job, dist, mem_data) == "done"
    out = capsys.readouterr()
    curve = RunStore(tmp_path).read_curve(job.run_id).sort_values("tokens")
    assert len(curve) >= 3
    folder = tmp_path / job.run_id / "monitor"

    header, rows = read_csv(folder / "Eval_Tokens_eval_loss.csv")
    assert header == ["step", "eval_loss"]
    assert [t for t, _ in rows] == curve["tokens"].tolist()
    assert [v for _, v in rows] == pytest.approx(curve["eval_loss"].tolist(), rel=1e-6)
    _, code = read_csv(folder / "Eval_Tokens_eval_loss.code.csv")
    assert [v for _, v in code] == pytest.approx(curve["eval_loss.code"].tolist(), rel=1e-6)
    _, train = read_csv(folder / "Train_Tokens_train_loss.csv")
    assert [t for t, _ in train] == [s * STEP_TOKENS for s in range(1, 11)]  # every optimizer step
    assert train[-1][1] < train[0][1]  # it learns

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder))
    events.Reload()
    scalars = events.Scalars("Eval/Tokens/eval_loss")
    assert [s.step for s in scalars] == curve["tokens"].tolist()
    assert [s.value for s in scalars] == pytest.approx(curve["eval_loss"].tolist(), rel=1e-5)
    assert "Train/Samples/lr" in events.Tags()["scalars"]  # DeepSpeed's own event rides along

    ds_json = RunStore(tmp_path).read(job.run_id)["deepspeed_json"]
    assert ("wandb" in ds_json) == wandb_installed()
    if not wandb_installed():
        assert "wandb package is not installed" in out.err


def test_resumed_run_csv_has_one_header_and_no_repeated_step(tmp_path, dist, mem_data, monkeypatch):
    from engine.train import recipe

    over = {"tokens": 16 * STEP_TOKENS, "eval": {"points": 4, "max_sequences": 16}, "checkpoint": True,
            "monitor": {"csv": True}}
    job = make_job(tmp_path, **over)
    real_step, calls = recipe._train_step, {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # after the checkpoint at step 8, before the next one
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(recipe, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, dist, mem_data)
    folder = tmp_path / job.run_id / "monitor"
    _, before = read_csv(folder / "Train_Tokens_train_loss.csv")
    assert [t for t, _ in before][-1] == 10 * STEP_TOKENS  # the killed process wrote past its checkpoint
    monkeypatch.setattr(recipe, "_train_step", real_step)
    assert run_job(job, dist, mem_data) == "done"
    with open(folder / "Train_Tokens_train_loss.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["step", "train_loss"] and ["step", "train_loss"] not in rows[1:]
    assert [int(float(r[0])) for r in rows[1:]] == [s * STEP_TOKENS for s in range(1, 17)]
    curve = RunStore(tmp_path).read_curve(job.run_id).sort_values("tokens")
    _, evals = read_csv(folder / "Eval_Tokens_eval_loss.csv")
    assert [t for t, _ in evals] == curve["tokens"].tolist()
