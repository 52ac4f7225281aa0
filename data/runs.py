"""The run store (docs/design-contract.md): ``runs/<run_id>/run.json`` + ``runs/<run_id>/curve.parquet``.

The engine writes it, fitting and reports read it. Every write goes to a temporary file in
the same directory and is renamed into place, so a killed writer never leaves a torn file,
and a curve never holds two rows for one ``(run_id, step)``.

torch-free (fitting imports it); pandas and pyarrow are imported only where a table is read
or written, so ``import data.runs`` stays cheap.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.cli import BadInput

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

RUN_FILE = "run.json"
CURVE_FILE = "curve.parquet"
STATUSES = ("pending", "running", "done", "failed")
CORRUPT = "corrupt"
"""Not a stored status: what ``RunStore.status`` says of a run whose files are torn."""
REQUIRED_CURVE = ("step", "tokens", "eval_loss")
"""Curve columns without which a curve.parquet is not a curve (fitting reads all three)."""


class Failure(str, Enum):
    """Why a run did not finish: the typed kind executors decide retries on (never the message).

    The trainer stores a failed run's kind under run.json's ``failure`` key; ``killed`` and
    ``corrupt`` are found by looking (a dead owner, torn files), not stored.
    """

    BAD_INPUT = "bad_input"
    """The job cannot run as written (unreachable ratio, missing parent): fails the same again."""
    DIVERGED = "diverged"
    """NaN/inf or a loss blow-up: deterministic for a given config and seed."""
    CRASHED = "crashed"
    """Any other exception in the trainer (out of memory, a lost rank): worth one more try."""
    KILLED = "killed"
    """The process died without a word (kill -9, preemption, a reboot): resumes from its checkpoint."""
    CORRUPT = "corrupt"
    """Torn or unreadable files: run again from scratch (the pieces are kept aside)."""

    @property
    def retryable(self) -> bool:
        """Would running the same job again help?"""
        return self not in (Failure.BAD_INPUT, Failure.DIVERGED)


def failure_kind(exc: BaseException) -> Failure:
    """The kind of the exception that ended a run (what the trainer records with it)."""
    if isinstance(exc, BadInput):
        return Failure.BAD_INPUT
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: stopped from outside
        return Failure.KILLED
    return Failure.CRASHED


def failure_of(record: Mapping[str, Any]) -> Failure | None:
    """The failure kind of a failed run's record; None unless its status is ``failed``.

    Records written before kinds were stored carry only a reason: they count as ``crashed``
    (retried once, which costs at most one quick failure) rather than guessing from the text.
    """
    if record.get("status") != "failed":
        return None
    try:
        return Failure(record.get("failure") or Failure.CRASHED)
    except ValueError:
        return Failure.CRASHED

META_COLUMNS: tuple[str, ...] = (
    "run_id", "family", "parent", "method", "ratio_target", "ratio", "params_before",
    "params_after", "nonembed_before", "nonembed_after", "loss_before", "init", "objective",
    "seed",
)
"""Per-run metadata, stored under ``meta`` in run.json and repeated on every curve row."""
CURVE_COLUMNS: tuple[str, ...] = ("step", "tokens", "eval_loss", "train_loss", "lr", "elapsed_s")
"""Per-evaluation-point columns of curve.parquet (plus optional ``eval_loss.<domain>``)."""
COLUMNS: tuple[str, ...] = META_COLUMNS + CURVE_COLUMNS + ("status",)
DOMAIN_PREFIX = "eval_loss."


def _unusable(path: Path, exc: OSError, what: str) -> BadInput:
    """A BadInput naming the user's ``path`` (not the temporary sibling the OS complained about)."""
    return BadInput(f"cannot write {what} {str(path)!r}: {exc.strerror or exc}")


def current_umask() -> int:
    """The process umask, read without setting it where Linux allows (``os.umask`` can only
    be read by writing it, which races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode(directory: bool = False) -> int:
    """The mode ``open``/``mkdir`` would give under the umask: ``mkstemp``/``mkdtemp`` make
    owner-only files, which colleagues on a shared file system could not read."""
    return (0o777 if directory else 0o666) & ~current_umask()


def grant_shared_read(root: Path) -> None:
    """Add the read bits (and search bits on directories) the umask allows, across ``root``.

    ``mkdtemp`` and the safetensors writer make owner-only entries; a plain ``chmod`` to one
    mode would also drop bits a file was given on purpose, so bits are only added.
    """
    allowed = shared_mode(directory=True)
    for path in (root, *root.rglob("*")):
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        path.chmod(mode | ((0o555 if path.is_dir() else 0o444) & allowed))


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename (POSIX-atomic).

    The file gets the mode the umask allows, as a plain ``open`` would give it.

    Raises:
        BadInput: ``path`` is a directory, or its directory cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{str(path)!r} is a directory; expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _unusable(path, exc, "file") from exc
    try:
        os.fchmod(fd, shared_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the kernel, libc or file system cannot (the caller falls back to two
    renames). Raises OSError for a real failure (permissions, a different file system).
    """
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _aside(out: Path) -> Path:
    return out.with_name(f".{out.name}.old-{os.getpid()}")


def _recover(out: Path) -> None:
    """A swap killed between its two renames left ``out`` missing and the old one aside: put it back."""
    if out.exists() or out.is_symlink():
        return
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if old.is_dir():
            old.rename(out)
            return


def replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished directory ``tmp`` to ``out``; an old ``out`` is removed only afterwards.

    The one directory swap of the project (corpus, shards, tokenizers, models, pruned
    outputs, search state); ``out`` gets the mode the umask allows. The old ``out`` is never deleted before the new one is in place:
    on Linux the two are exchanged in one atomic step, so a reader (or a kill) sees either the
    old or the new directory, never none; elsewhere the old one is moved aside first, put back
    if the rename fails, and put back by the next swap if a kill struck between the renames.
    """
    import shutil

    tmp, out = Path(tmp), Path(out)
    grant_shared_read(tmp)
    _recover(out)
    if not out.exists():
        tmp.rename(out)
        return
    if _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old directory
        return
    old = _aside(out)
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory in a temporary sibling of ``out``; swap it in only if the body succeeds.

    ``with atomic_dir(out) as tmp: write files into tmp``. On any exception the temporary
    directory is removed and ``out`` (old or absent) is untouched.

    Raises:
        BadInput: the parent of ``out`` cannot be created or written.
    """
    import shutil

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise _unusable(out, exc, "directory") from exc
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(Path(path), (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


class RunStore:
    """A directory of runs. Cheap to construct; nothing is read until asked."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def run_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / RUN_FILE).is_file())

    def exists(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / RUN_FILE).is_file()

    def read(self, run_id: str) -> dict[str, Any]:
        path = self.run_dir(run_id) / RUN_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise BadInput(f"run {run_id!r} not found in {self.root}") from exc
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path} is not valid JSON: {exc}") from exc

    def corrupt(self, run_id: str) -> str | None:
        """Why a run's files are torn or unreadable (a kill mid-copy, a full disk), or None.

        The one check every reader uses (launch, status, fitting, reports): run.json that is
        not a JSON record with a valid status, a curve.parquet whose footer or schema is
        unreadable or lacks step/tokens/eval_loss, or a ``done`` run without curve rows.
        Reads run.json and only the parquet footer, so it is cheap enough for every status.
        """
        path = self.run_dir(run_id) / RUN_FILE
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            return f"{RUN_FILE} is not valid JSON ({exc})"
        if not isinstance(record, dict) or record.get("status") not in STATUSES:
            return f"{RUN_FILE} has no valid status"
        curve = self.run_dir(run_id) / CURVE_FILE
        if not curve.is_file():
            return f"status is done but there is no {CURVE_FILE}" if record["status"] == "done" else None
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(curve)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a torn file
            return f"{CURVE_FILE} is unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})"
        missing = [c for c in REQUIRED_CURVE if c not in meta.schema.names]
        if missing:
            return f"{CURVE_FILE} lacks column(s) {', '.join(missing)}"
        if record["status"] == "done" and meta.num_rows == 0:
            return f"status is done but {CURVE_FILE} has no rows"
        return None

    def status(self, run_id: str) -> str:
        """pending, running, done, failed, or ``corrupt`` (torn files: launch runs it again)."""
        if not self.exists(run_id):
            return "pending"
        if self.corrupt(run_id):
            return CORRUPT
        return self.read(run_id)["status"]

    def check(self, run_id: str) -> dict[str, Any]:
        """run.json as a dict, with ``corrupt: reason`` instead of raising for a torn run."""
        reason = self.corrupt(run_id)
        if reason is None:
            return self.read(run_id)
        try:
            record = json.loads((self.run_dir(run_id) / RUN_FILE).read_text())
        except (ValueError, UnicodeDecodeError):
            record = {}
        return {**(record if isinstance(record, dict) else {}), "corrupt": reason}

    def quarantine(self, run_id: str) -> list[Path]:
        """Move a corrupt run's torn files aside (``*.corrupt-<time>``) so it can run again."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        moved = []
        for name in (CURVE_FILE, RUN_FILE):
            path = self.run_dir(run_id) / name
            if path.is_file():
                target = path.with_name(f"{name}.corrupt-{stamp}")
                path.rename(target)
                moved.append(target)
        return moved

    def write(self, run_id: str, record: Mapping[str, Any]) -> None:
        """Replace run.json: ``record`` holds run_id, status, meta, config and anything else.

        A ``failure`` kind is kept only while the status is ``failed``: a run that resumed or
        finished no longer carries the kind of an earlier attempt."""
        record = dict(record)
        if record.get("status") not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {record.get('status')!r}")
        if record["status"] != "failed":  # a failure kind belongs to a failed run only
            record.pop("failure", None)
        record["run_id"] = run_id
        record["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_json_atomic(self.run_dir(run_id) / RUN_FILE, record)

    def update(self, run_id: str, **fields: Any) -> dict[str, Any]:
        """Read-modify-write run.json (``meta`` is merged, other keys replaced)."""
        record = self.read(run_id)
        meta = fields.pop("meta", None)
        if meta:
            record.setdefault("meta", {}).update(meta)
        record.update(fields)
        self.write(run_id, record)
        return record

    def set_status(self, run_id: str, status: str, reason: str | None = None,
                   failure: Failure | None = None) -> None:
        """Set ``status`` (and ``reason``); a ``failed`` run also records its :class:`Failure` kind."""
        self.update(run_id, status=status, reason=reason, failure=failure.value if failure else None)

    # -- curves -------------------------------------------------------------------------

    def read_curve(self, run_id: str) -> "pd.DataFrame":
        import pandas as pd

        path = self.run_dir(run_id) / CURVE_FILE
        if not path.is_file():
            return pd.DataFrame(columns=list(CURVE_COLUMNS))
        return pd.read_parquet(path)

    def append_curve(self, run_id: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add evaluation rows; a row for a step already present replaces it. Returns row count."""
        import pandas as pd

        new = pd.DataFrame(list(rows))
        if new.empty:
            return len(self.read_curve(run_id))
        missing = [c for c in ("step", "tokens", "eval_loss") if c not in new.columns]
        if missing:
            raise ValueError(f"curve rows lack {missing}")
        old = self.read_curve(run_id)
        old = old[~old["step"].isin(new["step"])] if len(old) else old
        frames = [f for f in (old, new) if len(f)]
        curve = pd.concat(frames, ignore_index=True).sort_values("step", kind="stable")
        self._write_curve(run_id, curve)
        return len(curve)

    def truncate_curve(self, run_id: str, max_step: int) -> int:
        """Drop rows after ``max_step`` (a resumed run re-evaluates from its checkpoint)."""
        curve = self.read_curve(run_id)
        if len(curve) and (curve["step"] > max_step).any():
            curve = curve[curve["step"] <= max_step]
            self._write_curve(run_id, curve)
        return len(curve)

    def _write_curve(self, run_id: str, curve: "pd.DataFrame") -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        curve = curve.reset_index(drop=True)
        curve["step"] = curve["step"].astype("int64")
        curve["tokens"] = curve["tokens"].astype("int64")
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(curve, preserve_index=False), sink)
        write_bytes_atomic(self.run_dir(run_id) / CURVE_FILE, sink.getvalue().to_pybytes())


class CorruptRunWarning(UserWarning):
    """A run was left out of a table because its files are torn (the message names it)."""


def _meta_row(record: Mapping[str, Any]) -> dict[str, Any]:
    meta = dict(record.get("meta") or {})
    row = {col: meta.get(col) for col in META_COLUMNS}
    row["run_id"] = record.get("run_id")
    row["status"] = record.get("status")
    return row


def load(path: str | os.PathLike[str], *, statuses: Iterable[str] | None = None) -> "pd.DataFrame":
    """All curves under ``path`` (a store root or one run directory), one row per eval point.

    Columns are :data:`COLUMNS` in that order, then any ``eval_loss.<domain>`` columns.
    ``statuses`` keeps only runs with those statuses (default: all).

    Raises:
        BadInput: the path is missing or holds no runs.
    """
    import pandas as pd

    root = Path(path)
    if not root.exists():
        raise BadInput(f"run store {str(root)!r} does not exist")
    if (root / RUN_FILE).is_file():
        store, ids = RunStore(root.parent), [root.name]
    else:
        store = RunStore(root)
        ids = store.run_ids()
    if not ids:
        raise BadInput(f"run store {str(root)!r} holds no runs (no */{RUN_FILE})")
    keep = set(statuses) if statuses is not None else None
    frames = []
    for run_id in ids:
        reason = store.corrupt(run_id)
        if reason is not None:  # one torn run must not hide the others: skip it, say which
            warnings.warn(f"skipped corrupt run {run_id!r} in {str(root)!r}: {reason}", CorruptRunWarning,
                          stacklevel=2)
            continue
        record = store.read(run_id)
        if keep is not None and record.get("status") not in keep:
            continue
        curve = store.read_curve(run_id)
        if curve.empty:
            continue
        for col, value in _meta_row(record).items():
            curve[col] = value
        frames.append(curve)
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    table = pd.concat(frames, ignore_index=True)
    for col in COLUMNS:
        if col not in table.columns:
            table[col] = math.nan
    domains = sorted(c for c in table.columns if c.startswith(DOMAIN_PREFIX))
    return table[list(COLUMNS) + domains]


def size_order_violations(frame: "pd.DataFrame") -> list[str]:
    """Parents whose loss does not fall with size, per family (empty when all are ordered).

    A scaling-law fit across parents assumes a larger parent is a better model: parents
    pretrained too briefly for their size (the old demo's 788K-parameter parent had a higher
    loss than its 400K one) make the size exponents fit noise. ``frame`` is
    :func:`load`'s table; each parent is one ``(family, params_before, loss_before)``.
    """
    need = {"family", "params_before", "loss_before", "method"}
    if frame.empty or not need <= set(frame.columns):
        return []
    children = frame[frame["method"] != "none"]  # a pretraining run's loss_before is its random init's
    parents = (children.dropna(subset=["params_before", "loss_before"])
               .groupby(["family", "params_before"], dropna=False)["loss_before"].mean().reset_index())
    problems = []
    for family, group in parents.groupby("family", dropna=False):
        group = group.sort_values("params_before")
        sizes, losses = group["params_before"].tolist(), group["loss_before"].tolist()
        for (n_a, l_a), (n_b, l_b) in zip(zip(sizes, losses), zip(sizes[1:], losses[1:])):
            if not l_b < l_a:
                problems.append(f"{family or 'unknown'}: parent of {int(n_b):,} params has loss {l_b:.4f}, "
                                f"not below the {int(n_a):,}-param parent's {l_a:.4f}")
    return problems
