"""A launch's overall progress: jobs done / running / failed / total and the time left.

On a terminal it is a tqdm bar under the launch's own lines; in a log (stdout not a tty) it is
one plain ``progress:`` line each time a job starts or ends, so a log read hours later still
says how far the grid got. torch-free.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from data.runs import CORRUPT


@dataclass(frozen=True)
class Counts:
    """Where a grid's jobs stand."""

    done: int
    running: int
    failed: int
    total: int
    left_s: float | None
    """Seconds until every job is done at the pace so far; None until a job ended in this launch."""

    @property
    def waiting(self) -> int:
        return self.total - self.done - self.running - self.failed

    def line(self) -> str:
        from tqdm import tqdm

        left = ("time left known after the first job ends" if self.left_s is None
                else f"about {tqdm.format_interval(self.left_s)} left")
        return (f"progress: {self.done}/{self.total} done, {self.running} running, {self.failed} failed, "
                f"{self.waiting} waiting; {left}")


def count(statuses: Mapping[str, str], running: set[str], costs: Mapping[str, float],
          start_left: float, elapsed_s: float) -> Counts:
    """:class:`Counts` from each job's stored status and the jobs this launch holds now
    (``running``: started or queued in one of its batches).

    The time left is cost-weighted (``engine.grid.executor.job_costs``: tokens x parameters,
    so a parent counts for far more than a small child): what is left of the cost, at the pace
    the cost of this launch's finished jobs went. ``start_left``: the cost left when it began.
    """
    done = {r for r, s in statuses.items() if s == "done"}
    failed = {r for r, s in statuses.items() if s in ("failed", CORRUPT) and r not in running}
    # A launch hands a slot a batch run one job after another: only the job its process has
    # started (its record says so) is running; the rest of the batch is still waiting.
    active = {r for r in running if statuses.get(r) == "running"}
    left_cost = sum(costs.get(r, 1.0) for r in statuses if r not in done and r not in failed)
    finished = start_left - left_cost
    left_s = left_cost * elapsed_s / finished if finished > 0 and elapsed_s > 0 else None
    return Counts(len(done), len(active), len(failed), len(statuses), 0.0 if not left_cost else left_s)


class Progress:
    """Says where the launch stands whenever :meth:`refresh` is called (thread-safe).

    ``statuses``: a callable giving every job's stored status; ``bar``: a tqdm bar (default:
    when ``stream`` is a terminal) instead of plain lines through ``echo``.
    """

    def __init__(self, statuses: Callable[[], dict[str, str]], costs: Mapping[str, float],
                 echo: Callable[[str], None], *, bar: bool | None = None, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.statuses, self.costs, self.echo, self.clock = statuses, costs, echo, clock
        self.lock = threading.Lock()
        self.t0 = clock()
        first = statuses()
        self.start_left = sum(costs.get(r, 1.0) for r, s in first.items() if s != "done")
        self.last = ""
        stream = stream or sys.stdout
        self.bar: Any = None
        if bar if bar is not None else stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=len(first), unit="job", file=stream, dynamic_ncols=True,
                            bar_format="{desc} |{bar}| {n_fmt}/{total_fmt}{postfix}")

    def say(self, line: str) -> None:
        """One of the launch's own lines, printed above the bar when there is one."""
        with self.lock:
            if self.bar is None:
                self.echo(line)
                return
            with self.bar.external_write_mode():
                self.echo(line)

    def refresh(self, running: set[str]) -> Counts:
        """Count again; print a line when something changed (or move the bar)."""
        with self.lock:
            counts = count(self.statuses(), running, self.costs, self.start_left, self.clock() - self.t0)
            line = counts.line()
            if self.bar is not None:
                self.bar.n = counts.done
                self.bar.set_description_str(f"{counts.done} done, {counts.running} running, {counts.failed} failed")
                self.bar.set_postfix_str(line.split("; ", 1)[1])
            elif line.split(";")[0] != self.last.split(";")[0]:  # the counts moved, not only the clock
                self.echo(line)
            self.last = line
            return counts

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
