"""The one directory swap (data.runs.atomic_dir / replace_dir): the old output survives any failure."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import data.runs as runs
from data.runs import RunStore, atomic_dir, replace_dir, write_json_atomic


def _old(out: Path) -> Path:
    out.mkdir()
    (out / "keep.txt").write_text("old")
    return out


def test_a_failure_mid_write_leaves_the_old_directory_intact(tmp_path):
    out = _old(tmp_path / "out")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("new")
            raise RuntimeError("disk full")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


def test_success_replaces_the_old_directory_and_removes_it(tmp_path):
    out = _old(tmp_path / "out")
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_failing_rename_puts_the_old_directory_back(tmp_path, monkeypatch, exchange):
    out = _old(tmp_path / "out")
    new = tmp_path / "new"
    new.mkdir()
    if not exchange:
        monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
    real = Path.rename

    def failing(self, target):
        if Path(target) == out and self == new:
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    if exchange:  # the exchange is one syscall: make it fail instead
        def boom(a, b):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(runs, "_exchange", boom)
    with pytest.raises(OSError):
        replace_dir(new, out)
    assert (out / "keep.txt").read_text() == "old"


def test_a_kill_between_the_two_renames_is_repaired_by_the_next_swap(tmp_path, monkeypatch):
    """Where no atomic exchange exists, a kill after 'out -> aside' leaves out missing; the next
    swap of the same output puts the old one back first (nothing lost, then replaced)."""
    out = tmp_path / "out"
    aside = _old(tmp_path / ".out.old-12345")  # what the killed swap left
    monkeypatch.setattr(runs, "_exchange", lambda a, b: False)
    runs._recover(out)
    assert (out / "keep.txt").read_text() == "old" and not aside.exists()


def test_the_exchange_swaps_in_one_step_where_the_kernel_can(tmp_path):
    a, b = _old(tmp_path / "a"), tmp_path / "b"
    b.mkdir()
    (b / "new.txt").write_text("new")
    if not runs._exchange(b, a):
        pytest.skip("renameat2(RENAME_EXCHANGE) not supported here")
    assert (a / "new.txt").is_file() and (b / "keep.txt").is_file()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_store_files_are_group_and_other_readable_under_umask_022(tmp_path, umask_022):
    store = RunStore(tmp_path / "runs")
    store.write("r", {"status": "running", "meta": {}})
    store.append_curve("r", [{"step": 0, "tokens": 0, "eval_loss": 5.0}])
    write_json_atomic(tmp_path / "card.json", {"law": "p2"})
    for path in (tmp_path / "runs" / "r" / "run.json", tmp_path / "runs" / "r" / "curve.parquet",
                 tmp_path / "card.json"):
        assert _mode(path) == 0o644, path


def test_a_stricter_umask_is_honoured_too(tmp_path):
    old = os.umask(0o077)
    try:
        write_json_atomic(tmp_path / "card.json", {"law": "p2"})
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "card.json") == 0o600 and _mode(tmp_path / "out") == 0o700


def test_a_pruned_model_directory_is_group_and_other_readable_under_umask_022(tmp_path, umask_022):
    from engine.__main__ import main as engine_main
    from engine.models import build_model, save_model

    parent = tmp_path / "parent"
    save_model(build_model("tiny-llama-m"), parent)
    out = tmp_path / "pruned"
    assert engine_main(["prune", "--model", str(parent), "--method", "depth-last", "--ratio", "0.3",
                        "--out", str(out)]) == 0
    assert _mode(out) == 0o755
    assert {p.name: _mode(p) for p in out.iterdir()} == {p.name: 0o644 for p in out.iterdir()}
