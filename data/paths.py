"""Checks on an output directory against the command's own inputs (torch-free, light).

``--force`` / ``--overwrite`` allow replacing an earlier output, never the input: an output
that is an input, lies inside one, or contains one would be deleted (or swapped away) by the
final directory swap (``data.runs.replace_dir``). Paths are compared after resolving
symlinks, so ``--out link-to-model`` is caught like ``--out model``.
"""

from __future__ import annotations

import os
from pathlib import Path

from data.cli import BadInput


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_out_apart(out: str | os.PathLike[str], inputs: dict[str, str | os.PathLike[str] | None],
                    flag: str = "--out") -> None:
    """Refuse ``out`` when it is, contains or lies inside one of ``inputs``.

    Args:
        out: the output path as the user gave it.
        inputs: flag -> path of every input the command reads (None and non-paths, such as a
            preset name with no file of that name, are skipped).
        flag: the output's flag, for the message.

    Raises:
        BadInput: naming both flags and what is allowed.
    """
    target = _resolved(out)
    for name, given in inputs.items():
        if given is None or not Path(given).expanduser().exists():
            continue
        source = _resolved(given)
        if target == source:
            how = "is"
        elif _within(target, source):
            how = "lies inside"
        elif _within(source, target):
            how = "contains"
        else:
            continue
        raise BadInput(f"{flag} {str(out)!r} {how} the input {name} {str(given)!r}; writing there would overwrite or delete "
                       f"the input (even with --force): give an output path outside every input")


def check_swappable(out: str | os.PathLike[str], flag: str = "--out") -> None:
    """Refuse an output directory that cannot be replaced by a rename.

    The output is built beside ``out`` and swapped in at the end; the current directory (or
    one of its ancestors) and a mount point cannot be renamed (EBUSY), so they would fail only
    after all the work.

    Raises:
        BadInput: naming ``out`` and what is allowed.
    """
    target = _resolved(out)
    if _within(Path.cwd().resolve(), target):
        raise BadInput(f"{flag} {str(out)!r} is the current directory or contains it; the output directory is "
                       f"swapped in by a rename at the end: give a new directory, e.g. {flag} ./out")
    if target.is_dir() and os.path.ismount(target):
        raise BadInput(f"{flag} {str(out)!r} is a mount point, which cannot be replaced by a rename; "
                       f"give a directory inside it, e.g. {flag} {str(Path(out) / 'pruned')!r}")
