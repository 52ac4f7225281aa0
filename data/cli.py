"""The CLI contract shared by every prunelaw command (DESIGN.md).

Exit 0 on success, 2 on bad input with one clear line on stderr, 1 on anything else with a
message instead of a bare traceback. Light: no heavy imports.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence


class BadInput(Exception):
    """A user error: the message is one line naming the bad value and what is allowed."""


def run_cli(prog: str, main: Callable[[Sequence[str] | None], int | None],
            argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` under the exit-code contract; returns the exit code."""
    try:
        code = main(argv)
    except BadInput as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the contract forbids bare tracebacks
        if os.environ.get("PRUNELAW_DEBUG"):
            traceback.print_exc()
        print(f"{prog}: failed: {type(exc).__name__}: {exc} (set PRUNELAW_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return int(code or 0)


def dispatch(prog: str, description: str, commands: dict[str, tuple[str, str]],
             argv: Sequence[str] | None = None) -> int:
    """Route ``prog SUBCOMMAND ...`` to ``module.main(rest)``, importing only that module.

    ``commands`` maps a subcommand to ``(module path, one-line help)``. Importing lazily keeps
    light commands (the planner, fitting) free of the heavy ones' imports.
    """
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        width = max(len(name) for name in commands)
        lines = [f"usage: {prog} {{{','.join(commands)}}} ...", "", description, "", "commands:"]
        lines += [f"  {name:<{width}}  {text}" for name, (_, text) in commands.items()]
        lines += ["", f"Run '{prog} COMMAND --help' for a command's options and examples."]
        print("\n".join(lines))
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in commands:
        print(f"{prog}: error: unknown command {name!r}; allowed: {', '.join(commands)}", file=sys.stderr)
        return 2
    module = importlib.import_module(commands[name][0])
    return run_cli(f"{prog} {name}", module.main, rest)
