"""Follow the law card through ``planner recommend``: the modules it visits and the crossings.

Runs ``planner recommend --params 8B --ratio 0.5 --json`` in-process twice (the first run
imports everything, so the second measures the route, not the imports) under
``sys.setprofile`` and prints:

- rooms: the distinct project modules whose functions run with a card in hand: the card (or
  an object holding it, one attribute deep) among the function's arguments (``self``
  included), its locals when it returns, or its return value;
- crossings: the distinct call transitions between the ``planner`` and the ``fitting``
  packages (a planner function calling a fitting function, or the reverse, counted once per
  caller and callee function), over the whole command; ``calls`` counts every such call.

Usage: ``PYTHONPATH=. python scripts/card_route.py [--verbose]`` from the checkout root.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections import Counter
from types import FrameType
from typing import Any

PACKAGES = ("data", "engine", "fitting", "planner", "reports", "workflow")
ARGV = ["recommend", "--params", "8B", "--ratio", "0.5", "--json"]
CARD_TYPES = ("LawCard", "Card", "CardRef")
"""The card's class and the wrappers older versions of the planner and reports held it in."""


def _package(frame: FrameType) -> str | None:
    top = str(frame.f_globals.get("__name__", "")).split(".")[0]
    return top if top in PACKAGES else None


def _where(frame: FrameType) -> str:
    return f"{frame.f_globals['__name__']}.{frame.f_code.co_name}"


def _is_card(value: Any) -> bool:
    cls = type(value)
    return cls.__name__ in CARD_TYPES and cls.__module__.split(".")[0] in PACKAGES


def _carries_card(value: Any) -> bool:
    """The card itself, or a project object with the card in one of its attributes."""
    if _is_card(value):
        return True
    cls = type(value)
    if cls.__module__.split(".")[0] not in PACKAGES:
        return False
    fields = getattr(value, "__dict__", None) or {
        name: getattr(value, name, None) for name in getattr(cls, "__slots__", ())}
    return any(_is_card(v) for v in fields.values())


def _holds_card(frame: FrameType, event: str, arg: Any) -> bool:
    if event == "call":
        code = frame.f_code
        names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
        return any(_carries_card(frame.f_locals.get(name)) for name in names)
    return _carries_card(arg) or any(_carries_card(v) for v in frame.f_locals.values())


def route() -> tuple[Counter, Counter]:
    """``(rooms, crossings)``: card sightings per module, calls per (caller, callee) function
    pair across the planner/fitting boundary."""
    from planner.__main__ import main

    def run() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            main(ARGV)

    run()
    rooms: Counter = Counter()
    crossings: Counter = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event not in ("call", "return"):
            return
        callee = _package(frame)
        if callee is None:
            return
        if _holds_card(frame, event, arg):
            rooms[frame.f_globals["__name__"]] += 1
        if event == "return":
            return
        caller = frame.f_back
        while caller is not None and _package(caller) is None:  # through stdlib/numpy frames
            caller = caller.f_back
        source = None if caller is None else _package(caller)
        if {source, callee} == {"planner", "fitting"}:
            crossings[(_where(caller), _where(frame))] += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return rooms, crossings


def main(argv: list[str]) -> int:
    rooms, crossings = route()
    print(f"rooms: {len(rooms)}")
    print(f"crossings: {len(crossings)} ({sum(crossings.values())} calls)")
    if "--verbose" in argv:
        for name, calls in sorted(rooms.items()):
            print(f"  room {name} ({calls} calls and returns with the card)")
        for (caller, callee), calls in sorted(crossings.items()):
            print(f"  {caller} -> {callee} ({calls} calls)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
