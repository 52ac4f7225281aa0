"""The CLI contract shared by every prunelaw command (docs/design-contract.md).

Exit 0 on success, 2 on bad input with one clear line on stderr, 1 on anything else with a
message instead of a bare traceback. Light: no heavy imports.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager


class BadInput(Exception):
    """A user error: the message is one line naming the bad value and what is allowed."""


# OSErrors that mean "the path the user gave cannot be used as asked" (a directory where a
# file was expected, no permission, a read-only or pseudo file system): bad input, exit 2.
# Anything else (disk full, I/O error) stays an operational failure, exit 1.
_USER_PATH_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOENT,
                               errno.EEXIST, errno.EROFS, errno.ENAMETOOLONG, errno.EINVAL, errno.ELOOP})


def path_error(exc: OSError) -> BadInput | None:
    """The one-line BadInput for an OSError about a user's path, or None if it is not one."""
    if exc.errno not in _USER_PATH_ERRNOS or not exc.filename:
        return None
    return BadInput(f"{str(exc.filename)!r}: {exc.strerror or exc}")


@contextmanager
def _one_line_argparse() -> Iterator[None]:
    """Make every argparse parser raise BadInput instead of printing usage and exiting.

    argparse's own ``error`` prints a usage block plus the message (two or more lines) and
    calls ``sys.exit(2)``; the contract is exactly one line. Patching the base class here covers
    every command (and its sub-parsers) without each one subclassing the parser.
    """
    original = argparse.ArgumentParser.error

    def error(self: argparse.ArgumentParser, message: str) -> None:
        raise BadInput(f"{message} (see '{self.prog} --help')")

    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


@contextmanager
def _one_line_warnings(prog: str) -> Iterator[None]:
    """Library warnings (a skipped corrupt run, ...) as ``prog: warning: ...`` lines on stderr.

    Python's default format spends two lines (file:line and the source line) on each.
    """
    import warnings

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _silence_stdout() -> None:
    """After a reader closed the pipe (``... | head``), send what is left to /dev/null.

    Without this the interpreter's final flush raises BrokenPipeError again at exit and prints
    "Exception ignored ..." (the recipe of the Python ``signal`` docs).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests)
        pass


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` under the exit-code contract; returns the exit code."""
    try:
        with _one_line_argparse(), _one_line_warnings(prog):
            code = main(argv)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
    except BadInput as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()  # the reader has what it wanted: not an error
        return 0
    except SystemExit as exc:  # --help / --version, or a library calling sys.exit
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        bad = path_error(exc)
        if bad is not None:
            print(f"{prog}: error: {_one_line(bad)}", file=sys.stderr)
            return 2
        return _failed(prog, exc)
    except Exception as exc:  # noqa: BLE001 - the contract forbids bare tracebacks
        return _failed(prog, exc)
    return int(code or 0)


def _one_line(exc: BaseException) -> str:
    """The message on one line (multi-line library messages are joined)."""
    return " ".join(str(exc).split())


def _failed(prog: str, exc: BaseException) -> int:
    if os.environ.get("PRUNELAW_DEBUG"):
        traceback.print_exception(exc)
    print(f"{prog}: failed: {type(exc).__name__}: {_one_line(exc)} (set PRUNELAW_DEBUG=1 for the traceback)",
          file=sys.stderr)
    return 1


def dispatch(prog: str, description: str, commands: dict[str, tuple[str, str]],
             argv: Sequence[str] | None = None) -> int:
    """Route ``prog SUBCOMMAND ...`` to ``module.main(rest)``, importing only that module.

    ``commands`` maps a subcommand to ``(module path, one-line help)``. Importing lazily keeps
    light commands (the planner, fitting) free of the heavy ones' imports.
    """
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(f"{prog}: error: a command is required; allowed: {', '.join(commands)} (see '{prog} --help')",
              file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        width = max(len(name) for name in commands)
        lines = [f"usage: {prog} {{{','.join(commands)}}} ...", "", description, "", "commands:"]
        lines += [f"  {name:<{width}}  {text}" for name, (_, text) in commands.items()]
        lines += ["", f"Run '{prog} COMMAND --help' for a command's options and examples."]
        print("\n".join(lines))
        return 0
    name, rest = args[0], args[1:]
    if name not in commands:
        print(f"{prog}: error: unknown command {name!r}; allowed: {', '.join(commands)}", file=sys.stderr)
        return 2
    module = importlib.import_module(commands[name][0])
    return run_cli(f"{prog} {name}", module.main, rest)


def check_output_file(path: str | os.PathLike[str], *, force: bool, flag: str = "--out",
                      suffix: str | None = None) -> None:
    """Refuse an output file that cannot be written, or exists, before any work starts.

    Raises:
        BadInput: wrong suffix; ``path`` is a directory; it exists and ``force`` is not set; its
            parent is a file or cannot be written.
    """
    from pathlib import Path

    out = Path(path)
    if suffix is not None and out.suffix.lower() != suffix:
        raise BadInput(f"{flag} {str(path)!r} must end in {suffix}")
    if out.is_dir():
        raise BadInput(f"{flag} {str(path)!r} is a directory; expected a file path")
    if out.exists() and not force:
        raise BadInput(f"{flag} {str(path)!r} already exists; pass --force to replace it")
    _check_parent_writable(out, flag, path)


def check_output_dir(path: str | os.PathLike[str], *, overwrite: bool, own_marker: str | None = None,
                     flag: str = "--out", overwrite_flag: str = "--overwrite") -> None:
    """Refuse an output directory that is a file, or non-empty and not this tool's own output.

    ``own_marker`` names a file that this tool writes into every output directory; a directory
    holding it is the tool's earlier output and may be replaced without ``overwrite``.

    Raises:
        BadInput: naming ``path`` and the flag that allows replacing it.
    """
    from pathlib import Path

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{flag} {str(path)!r} is a file; expected a directory path")
    own = own_marker is not None and (out / own_marker).is_file()
    if out.is_dir() and any(out.iterdir()) and not (overwrite or own):
        raise BadInput(f"{flag} {str(path)!r} already exists and is not empty; pass {overwrite_flag} to replace it")
    _check_parent_writable(out, flag, path)


def _check_parent_writable(out, flag: str, given) -> None:
    """The nearest existing ancestor of ``out`` must be a writable directory."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{flag} {str(given)!r}: {str(parent)!r} is a file, not a directory")
    import tempfile

    try:  # a real probe: os.access says yes to root on read-only and pseudo file systems (/proc)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise BadInput(f"{flag} {str(given)!r}: cannot write in {str(parent)!r} ({exc.strerror or exc})") from None


def read_json(path: str | os.PathLike[str], what: str = "file") -> object:
    """Parse a JSON file a user pointed at; a missing, torn or non-UTF-8 file is bad input."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{what} {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{what} {str(path)!r} is a directory; expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{what} {str(path)!r} is not valid JSON (truncated or corrupt?): {exc}") from None
