"""The machine probe decides threads and parallel jobs by measurement.

The decision rule is a pure function of the measured rates, so it is tested without timing
anything; the measurement itself is exercised once (a few seconds) with the real workers.
"""

import json

import pytest
import yaml

from data.runs import RunStore
from engine import probe
from engine.grid.local import _Scheduler, slots_and_threads
from engine.grid.spec import load_grid


def test_two_threads_slower_than_one_runs_one_single_thread_job_per_core():
    # the 2-vCPU machine of the issue: 2 OpenMP threads were 6-23x slower than 1
    plan = probe.choose(2, rate_1=52.0, rate_all=7.0, rate_parallel=63.0, source="probe")
    assert (plan.single_threads, plan.grid_threads, plan.grid_parallel) == (1, 1, 2)
    assert "2 job(s) at a time x 1 thread(s)" in plan.describe()


def test_threads_that_scale_give_one_job_every_core():
    plan = probe.choose(8, rate_1=10.0, rate_all=70.0, rate_parallel=72.0, source="probe")
    assert (plan.single_threads, plan.grid_threads, plan.grid_parallel) == (8, 8, 1)


def test_side_by_side_wins_when_it_clearly_beats_threads():
    plan = probe.choose(4, rate_1=10.0, rate_all=20.0, rate_parallel=38.0, source="probe")
    assert (plan.single_threads, plan.grid_threads, plan.grid_parallel) == (4, 1, 4)


def test_users_omp_setting_wins_and_is_said(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan = probe.machine_plan()
    assert plan.source == "env" and plan.single_threads == 1
    assert plan.grid_parallel == probe.usable_cores()
    assert "OMP_NUM_THREADS=1 is set" in plan.describe()


def test_plan_is_measured_once_then_read_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("PRUNELAW_CACHE", str(tmp_path))
    calls = []

    def fake_measure(cores, seconds=probe.PROBE_SECONDS):
        calls.append(cores)
        return probe.choose(cores, 50.0, 5.0, 90.0, "probe")

    monkeypatch.setattr(probe, "measure", fake_measure)
    first, second = probe.machine_plan(), probe.machine_plan()
    assert len(calls) == 1 and first.source == "probe" and second.source == "cache"
    assert (second.grid_threads, second.grid_parallel) == (first.grid_threads, first.grid_parallel)
    cached = json.loads(next(tmp_path.glob("machine-probe-*.json")).read_text())
    assert cached["rate_parallel"] == 90.0
    (next(tmp_path.glob("machine-probe-*.json"))).write_text("{torn")
    assert probe.machine_plan().source == "probe" and len(calls) == 2  # a torn cache is re-measured


def test_real_workers_report_a_positive_rate():
    assert probe._run_workers(threads=1, count=1, seconds=0.2) > 0


def test_ranks_per_job_share_the_cores_the_plan_keeps_busy():
    plan = probe.choose(2, 52.0, 7.0, 63.0, "probe")
    assert slots_and_threads(plan, 1) == (2, 1)
    assert slots_and_threads(plan, 2) == (1, 1)


@pytest.mark.parametrize("device,zero,native,expect", [
    ("cpu", 1, True, "fp32"), ("cpu", 1, False, "fp32"),
    ("cuda", 1, True, "bf16"), ("cuda", 0, True, "fp32"), ("cuda", 1, False, "fp32")])
def test_auto_precision_follows_the_device(monkeypatch, device, zero, native, expect):
    monkeypatch.setattr(probe, "native_bf16", lambda _device: native)
    precision, why = probe.resolve_precision("auto", device, zero)
    assert precision == expect and why.startswith("auto:")


def test_an_explicit_bf16_on_an_emulating_cpu_is_kept_with_a_warning(monkeypatch):
    monkeypatch.setattr(probe, "native_bf16", lambda _device: False)
    precision, why = probe.resolve_precision("bf16", "cpu", 1)
    assert precision == "bf16" and "slower than fp32" in why


def _grid(tmp_path):
    spec = {"name": "g", "data": {"shards": str(tmp_path / "shards")},
            "parents": [{"name": "big", "preset": "ref-llama-3", "tokens": 4000},
                        {"name": "small", "preset": "ref-llama-1", "tokens": 4000}],
            "methods": ["width", "depth"], "ratios": [0.3], "objectives": ["kd"], "tokens": 2000}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_grid(path)


def test_scheduler_runs_parents_alone_first_and_children_once_their_parent_is_done(tmp_path):
    grid = _grid(tmp_path)
    store = RunStore(tmp_path / "runs")
    sched = _Scheduler(grid, store, max_retries=0)
    first = sched.next_batch(free_slots=2)
    second = sched.next_batch(free_slots=1)
    assert [j.kind for j in first + second] == ["parent", "parent"]
    assert first[0].config.parent == "ref-llama-3"  # the longest job first
    assert sched.next_batch(free_slots=1) == []  # every child waits for its parent
    store.write(second[0].run_id, {"status": "done", "meta": {}})
    store.append_curve(second[0].run_id, [{"step": 1, "tokens": 8, "eval_loss": 3.0}])  # done has a curve
    sched.finished(second)
    children = sched.next_batch(free_slots=1)
    assert children and {j.depends for j in children} == {second[0].run_id}
    assert len(children) == 2  # both children of the finished parent, batched into one launch
