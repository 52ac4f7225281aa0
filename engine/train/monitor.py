"""The recipe's curves through DeepSpeed's own monitor (``engine.monitor``, a ``MonitorMaster``).

``monitor: {tensorboard: true, csv: true, wandb: true}`` in a job file turns on DeepSpeed's
writers (sections built by ``engine.train.dsconfig``); this module sends them the recipe's
numbers on the token axis the run store uses, so the curves users open in TensorBoard, a
spreadsheet or W&B are the ones ``curve.parquet`` holds:

- ``Train/Tokens/train_loss`` and ``Train/Tokens/lr`` after every optimizer step;
- ``Eval/Tokens/eval_loss`` and ``Eval/Tokens/eval_loss.<domain>`` at every eval point.

DeepSpeed adds its own ``Train/Samples/lr`` on the samples axis. Only rank 0 writes
(``MonitorMaster`` checks the rank itself).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from data.runs import DOMAIN_PREFIX
from engine.train.config import JobConfig
from engine.train.dsconfig import monitor_dir, wandb_installed
from engine.train.protocols import Engine

Event = tuple[str, float, int]
"""DeepSpeed's event: (tag, value, x); x is the run's consumed tokens here."""


def announce(job: JobConfig, is_main: bool) -> None:
    """One line saying where the monitor writes, and that W&B is off when it is not installed."""
    if not is_main or not job.monitor.enabled:
        return
    if job.monitor.wandb and not wandb_installed():
        print(f"[engine.train] {job.run_id}: monitor.wandb is set but the wandb package is not "
              "installed: W&B logging is off (pip install wandb)", file=sys.stderr, flush=True)
    if job.monitor.tensorboard or job.monitor.csv:
        print(f"[engine.train] {job.run_id}: monitor files in {monitor_dir(job)}", flush=True)


def _write(engine: Engine, events: list[Event]) -> None:
    monitor = getattr(engine, "monitor", None)
    if monitor is not None and monitor.enabled:
        monitor.write_events(events)


def write_step(engine: Engine, tokens: int, train_loss: float, lr: float) -> None:
    """The train loss of one optimizer step and the lr it used."""
    _write(engine, [("Train/Tokens/train_loss", train_loss, tokens), ("Train/Tokens/lr", lr, tokens)])


def write_eval(engine: Engine, row: Mapping[str, Any]) -> None:
    """An eval row of the curve: the mean eval loss and one curve per domain."""
    tags = [key for key in row if key == "eval_loss" or key.startswith(DOMAIN_PREFIX)]
    _write(engine, [(f"Eval/Tokens/{key}", float(row[key]), int(row["tokens"])) for key in tags])


def rewind_csv(engine: Engine, tokens: int) -> None:
    """A resumed run's CSV files continue where its checkpoint was, as the curve does.

    The killed process wrote rows past the checkpoint, which the resumed one writes again; and
    DeepSpeed's ``csvMonitor`` writes a header whenever a process first writes a file. So rows
    with step > ``tokens`` are dropped (atomically) and the monitor is told the files already
    have their header. TensorBoard needs nothing: its reader keeps the last value per step.
    """
    csv_monitor = getattr(getattr(engine, "monitor", None), "csv_monitor", None)
    log_dir = getattr(csv_monitor, "log_dir", None)
    if csv_monitor is None or not csv_monitor.enabled or not log_dir:
        return
    import csv
    import io
    from pathlib import Path

    from data.runs import write_bytes_atomic

    for path in sorted(Path(log_dir).glob("*.csv")):
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        kept = rows[:1] + [r for r in rows[1:] if r and r[0] != "step" and float(r[0]) <= tokens]
        text = io.StringIO(newline="")
        csv.writer(text).writerows(kept)
        write_bytes_atomic(path, text.getvalue().encode())
        if path.stem not in csv_monitor.filenames:
            csv_monitor.filenames.append(path.stem)


def close(engine: Engine) -> None:
    """Flush and close the writers: several jobs share one process (``engine train`` lists,
    grid workers), and each job's TensorBoard file and W&B run must end with the job."""
    monitor = getattr(engine, "monitor", None)
    if monitor is None or not monitor.enabled:
        return
    tb = getattr(monitor, "tb_monitor", None)
    if tb is not None and tb.summary_writer is not None:
        tb.summary_writer.close()
    if getattr(monitor, "wandb_monitor", None) is not None:
        import wandb

        wandb.finish()
