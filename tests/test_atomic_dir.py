"""The one directory swap (data.runs.atomic_dir / replace_dir): the old output survives any failure."""

from __future__ import annotations

from pathlib import Path

import pytest

import data.runs as runs
from data.runs import atomic_dir, replace_dir


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
