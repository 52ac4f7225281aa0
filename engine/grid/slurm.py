"""The SLURM executor of ``engine grid``: one job array per generation of a grid.

``engine grid launch GRID.yaml --executor slurm`` writes one sbatch script per generation
(pretraining parents first, then their children), submits each as a job array (one array
task per pending job, each task a ``deepspeed`` launch of that job) and records the array id
and task index of every run, so that ``engine grid status`` can merge ``squeue`` with the
run store and ``engine grid cancel`` can cancel exactly what was submitted.

Submission is race-free with the trainer: arrays are submitted *held*, the SLURM ids are
recorded, and only then released, so no task can start (and write its run.json) while the
executor is still writing the record. The executor owns ``runs/<run_id>/slurm.json``; it
also adds a ``slurm`` key to run.json (the run store of docs/design-contract.md) through ``RunStore.update``.

Requeue safety: scripts carry ``--requeue`` and ``--open-mode=append``; a requeued (preempted)
task re-runs the same job file, and the trainer resumes from the run's last checkpoint
(``engine.train.recipe.decide``), truncating the curve to the checkpoint's step so no
``(run_id, step)`` row is ever duplicated.

``SlurmExecutor`` is the ``slurm`` entry of ``engine.grid.executor``'s registry: it is built
from :class:`SlurmOptions` and shares the job ordering (:func:`engine.grid.executor.generations`)
and the status rules with every other executor.

Nothing here imports torch: the grid CLI stays fast and this module works on login nodes.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from data.cli import BadInput
from data.runs import RunStore, write_json_atomic
from engine.grid.executor import JobState, Plan, Submission, generations, job_order, job_states

LEDGER = "slurm.json"
"""Per-run record of its SLURM submissions (``runs/<run_id>/slurm.json``), executor-owned."""
SCRIPTS_DIR = "_slurm"
"""Sub-directory of the run store for sbatch scripts and the scheduler's own logs."""
PORT_BASE, PORT_SPAN = 20000, 40000
"""MASTER_PORT = PORT_BASE + SLURM_JOB_ID % PORT_SPAN: distinct for tasks sharing a node."""

# squeue state -> what `engine grid status` shows. Terminal states (COMPLETED, FAILED,
# CANCELLED, TIMEOUT, ...) linger in squeue for MinJobAge seconds; they are left out so the
# run store (done/failed, written by the trainer) speaks for finished runs.
QUEUE_STATES: dict[str, str] = {
    "PENDING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued",
    "RESV_DEL_HOLD": "queued", "CONFIGURING": "running", "RUNNING": "running",
    "COMPLETING": "running", "SIGNALING": "running", "STAGE_OUT": "running",
    "RESIZING": "running", "SUSPENDED": "suspended", "STOPPED": "suspended",
}

# Placeholders handed to ``job_command`` and turned into shell variables in the script:
# the job file, hostfile and rendezvous are only known inside the running array task.
_VARS = {"@@JOB_FILE@@": "JOB_FILE", "@@HOSTFILE@@": "HOSTFILE",
         "@@MASTER_ADDR@@": "MASTER_ADDR", "@@MASTER_PORT@@": "MASTER_PORT"}


# Values written verbatim into ``#SBATCH`` lines: checked here, so a typo fails at launch with
# one line instead of as an sbatch error (or, for --time, a job killed at the default limit).
LAUNCHERS = ("deepspeed", "slurm")
DEFAULT_CPUS_PER_GPU = 8

_FORMATS: tuple[tuple[str, str, str], ...] = (
    ("time", r"(\d+-)?\d+(:\d{1,2}){0,2}|\d+-\d+|UNLIMITED|INFINITE",
     "MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (e.g. 4:00:00)"),
    ("mem", r"\d+[KMGT]?", "a size in MB or with K/M/G/T (e.g. 64G)"),
    ("partition", r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*", "partition name(s), comma-separated"),
    ("account", r"[A-Za-z0-9_.-]+", "an account name (letters, digits, '_', '.', '-')"),
)


# Each ``--sbatch-extra`` becomes one ``#SBATCH`` line of a script bash runs: a newline in it
# would start a shell command, so it must be exactly one option with a plain value.
_SBATCH_OPTION = re.compile(r"--[A-Za-z][A-Za-z0-9-]*(?:[= ][A-Za-z0-9_.,:=/@+%-]+)?")
# Paths written into ``#SBATCH --output=`` / ``--chdir=`` lines: sbatch splits those lines at
# whitespace and a newline would end the comment, so such paths are refused, not quoted.
_SBATCH_PATH_BAD = re.compile(r"[\s\"'\\%#$`;&|<>]")


def check_sbatch_path(path: Path, what: str) -> None:
    """Refuse a path that an ``#SBATCH`` line cannot hold literally.

    Raises:
        BadInput: naming the path and the characters it may not contain.
    """
    bad = _SBATCH_PATH_BAD.search(str(path))
    if bad:
        raise BadInput(f"{what} {str(path)!r} contains {bad.group()!r}, which an #SBATCH line cannot hold; "
                       "use a path without whitespace, quotes, '%', '#', '$', '`', ';', '&', '|', '<', '>' "
                       "or a backslash")


@dataclass
class SlurmOptions:
    """What each array task asks SLURM for (``engine grid launch --executor slurm`` flags)."""

    partition: str | None = None
    """``--partition``; None uses the cluster's default partition."""
    gpus_per_job: int = 0
    """GPUs per job, over all its nodes (0: CPU jobs). Must divide evenly by ``nodes_per_job``."""
    nodes_per_job: int = 1
    """Nodes per job; more than one builds a deepspeed hostfile from the allocation."""
    procs_per_node: int | None = None
    """Training processes per node; None: one per GPU, or 1 on CPU."""
    cpus_per_task: int | None = None
    """``--cpus-per-task`` of each SLURM task, as given (exclusive with ``cpus_per_gpu``)."""
    cpus_per_gpu: int | None = None
    """CPUs per GPU (data loading, the launcher, NCCL's proxy threads); None: 8 when GPUs are
    asked for, unless ``cpus_per_task`` is given. SLURM's default of one CPU per task would
    starve every rank of a node behind one core."""
    launcher: str = "deepspeed"
    """``deepspeed``: one launcher task per node, which starts the other nodes' ranks over
    pdsh/ssh (a hostfile); ``slurm``: ``srun`` starts every rank as its own SLURM task, for
    clusters that refuse ssh between compute nodes."""
    mem: str | None = None
    """``--mem`` per node (e.g. ``64G``); None: the cluster default."""
    time: str | None = None
    """``--time`` wall-clock limit per task (e.g. ``4:00:00``); None: the partition default."""
    account: str | None = None
    """``--account`` to charge; None: the user's default account."""
    max_parallel: int | None = None
    """At most this many tasks of one array run at once (``--array=0-N%M``); None: no cap."""
    dry_run: bool = False
    """Write and print the scripts, submit nothing (for clusters this machine cannot reach)."""
    sbatch_extra: list[str] = field(default_factory=list)
    """Verbatim extra ``#SBATCH`` options, e.g. ``--qos=high`` or ``--constraint=a100``."""

    def __post_init__(self) -> None:
        for name in ("gpus_per_job", "nodes_per_job", "procs_per_node", "cpus_per_task", "cpus_per_gpu",
                     "max_parallel"):
            value = getattr(self, name)
            low = 0 if name == "gpus_per_job" else 1
            if value is not None and value < low:
                raise BadInput(f"--{name.replace('_', '-')}={value} must be >= {low}")
        if self.gpus_per_job % self.nodes_per_job:
            raise BadInput(f"--gpus-per-job={self.gpus_per_job} must be a multiple of "
                           f"--nodes-per-job={self.nodes_per_job} (the same GPU count on every node)")
        if self.launcher not in LAUNCHERS:
            raise BadInput(f"--launcher={self.launcher!r} is not allowed; allowed: {', '.join(LAUNCHERS)}")
        if self.cpus_per_gpu is not None and (self.cpus_per_task is not None or not self.gpus_per_job):
            raise BadInput(f"--cpus-per-gpu={self.cpus_per_gpu} needs --gpus-per-job and no --cpus-per-task "
                           "(give CPUs per GPU, or per task)")
        for name, pattern, allowed in _FORMATS:
            value = getattr(self, name)
            if value is not None and not re.fullmatch(pattern, str(value)):
                raise BadInput(f"--{name}={value!r} is not valid; allowed: {allowed}")
        for extra in self.sbatch_extra:
            if not _SBATCH_OPTION.fullmatch(extra):
                raise BadInput(f"--sbatch-extra={extra!r} is not one sbatch option; allowed: --name=value or "
                               f"'--name value' (one option per flag; value of letters, digits and _.,:=/@+%-; "
                               f"no spaces, newlines or shell metacharacters), e.g. --sbatch-extra=--qos=high")

    @property
    def gpus_per_node(self) -> int:
        return self.gpus_per_job // self.nodes_per_job

    @property
    def procs(self) -> int:
        """Processes the deepspeed launcher starts on each node."""
        return self.procs_per_node or self.gpus_per_node or 1

    @property
    def tasks_per_node(self) -> int:
        """SLURM tasks per node: the deepspeed launcher alone, or one per rank under srun."""
        return self.procs if self.launcher == "slurm" else 1

    @property
    def cpus_per_slurm_task(self) -> int | None:
        """``--cpus-per-task``: as given, else CPUs per GPU times the GPUs each task drives.

        Written as ``--cpus-per-task`` rather than SLURM's ``--cpus-per-gpu``: the deepspeed
        launcher is one task driving every GPU of its node, and SLURM refuses both options together.
        """
        if self.cpus_per_task is not None or not self.gpus_per_job:
            return self.cpus_per_task
        per_gpu = self.cpus_per_gpu or DEFAULT_CPUS_PER_GPU
        return per_gpu * (max(1, self.gpus_per_node // self.procs) if self.launcher == "slurm" else self.gpus_per_node)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the SLURM executor's flags to ``engine grid launch`` (and friends)."""
    group = parser.add_argument_group("SLURM executor (--executor slurm)")
    group.add_argument("--partition", help="partition to submit to (default: the cluster's default)")
    group.add_argument("--gpus-per-job", type=int, default=0, metavar="G",
                       help="GPUs per job over all its nodes; 0 runs CPU jobs (default 0)")
    group.add_argument("--nodes-per-job", type=int, default=1, metavar="K",
                       help="nodes per job; >1 builds a deepspeed hostfile from the allocation (default 1)")
    group.add_argument("--procs-per-node", type=int, default=None, metavar="P",
                       help="training processes per node (default: one per GPU, or 1 on CPU)")
    group.add_argument("--cpus-per-task", type=int, default=None, metavar="C",
                       help="CPUs per SLURM task (default: --cpus-per-gpu, or the cluster default on CPU)")
    group.add_argument("--cpus-per-gpu", type=int, default=None, metavar="C",
                       help=f"CPUs per GPU (default {DEFAULT_CPUS_PER_GPU} when --gpus-per-job is given)")
    group.add_argument("--launcher", choices=LAUNCHERS, default="deepspeed",
                       help="deepspeed: its launcher per node, pdsh/ssh to the other nodes (default); "
                            "slurm: srun starts every rank, no ssh between nodes")
    group.add_argument("--mem", default=None, help="memory per node, e.g. 64G (default: cluster default)")
    group.add_argument("--time", default=None, metavar="T", help="time limit per job, e.g. 4:00:00")
    group.add_argument("--account", default=None, metavar="A", help="account to charge")
    group.add_argument("--max-parallel", type=int, default=None, metavar="M",
                       help="run at most M jobs of an array at once (--array=...%%M)")
    group.add_argument("--dry-run", action="store_true",
                       help="write the sbatch scripts and print them; submit nothing")
    group.add_argument("--sbatch-extra", action="append", default=[], metavar="OPT",
                       help="extra sbatch option, repeatable; write it with '=': --sbatch-extra=--qos=high")


# -- the sbatch script --------------------------------------------------------------------------

def _shell_word(arg: str) -> str:
    """Quote one argument for bash; placeholders inside it become ``${VAR}`` expansions."""
    if not any(key in arg for key in _VARS):
        return shlex.quote(arg)
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    for key, var in _VARS.items():
        escaped = escaped.replace(key, "${%s}" % var)
    return f'"{escaped}"'


def srun_command(opts: SlurmOptions) -> list[str]:
    """``srun`` starting every rank of the job as its own task (``--launcher slurm``).

    Each rank maps SLURM's ids to the variables torch.distributed reads (env:// rendezvous),
    as DeepSpeed's own launcher would have set them; no ssh between nodes is needed.
    """
    ranks = ("export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS; "
             'exec "$0" -m engine.train --config "$1"')
    cpus = opts.cpus_per_slurm_task
    # srun does not inherit --cpus-per-task from sbatch since SLURM 22.05: give it again
    return ["srun", "--nodes", str(opts.nodes_per_job), "--ntasks-per-node", str(opts.procs),
            *(["--cpus-per-task", str(cpus)] if cpus else []), "--kill-on-bad-exit=1", "--export=ALL",
            "bash", "-c", ranks, sys.executable, "@@JOB_FILE@@"]


def launch_line(opts: SlurmOptions) -> str:
    """The launch every array task runs, with its per-task values as shell variables."""
    from engine.grid.spec import job_command

    if opts.launcher == "slurm":
        argv = srun_command(opts)
    else:
        multi = opts.nodes_per_job > 1
        argv = job_command(["@@JOB_FILE@@"], opts.procs, hostfile="@@HOSTFILE@@" if multi else None,
                           master_addr="@@MASTER_ADDR@@", master_port="@@MASTER_PORT@@")
    segments: list[list[str]] = []
    for arg in map(str, argv):  # one line per flag and its values, for the reader
        if not segments or arg.startswith("--") or arg == "bash":
            segments.append([])
        segments[-1].append(_shell_word(arg))
    return " \\\n    ".join(" ".join(seg) for seg in segments)


def _sbatch_lines(opts: SlurmOptions, name: str, n_tasks: int, log: Path, workdir: Path) -> list[str]:
    """The ``#SBATCH`` header: resources, then the requeue-safety options, then extras."""
    cap = f"%{opts.max_parallel}" if opts.max_parallel else ""
    lines = [f"#SBATCH --job-name={name}", f"#SBATCH --array=0-{n_tasks - 1}{cap}",
             f"#SBATCH --nodes={opts.nodes_per_job}",
             f"#SBATCH --ntasks-per-node={opts.tasks_per_node}"
             + ("          # one per rank, started by srun" if opts.launcher == "slurm"
                else "          # the deepspeed launcher; it starts the ranks")]
    if opts.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={opts.gpus_per_node}")
    for flag, value in (("cpus-per-task", opts.cpus_per_slurm_task), ("mem", opts.mem), ("time", opts.time),
                        ("partition", opts.partition), ("account", opts.account)):
        if value is not None:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += ["#", "# Preemption-safe: a preempted task goes back to the queue instead of failing,",
              "# and appends to its logs, so every attempt's output is kept.",
              "#SBATCH --requeue", "#SBATCH --open-mode=append",
              f"#SBATCH --output={log}", f"#SBATCH --chdir={workdir}",
              "# A child whose parents failed is cancelled instead of waiting forever.",
              "#SBATCH --kill-on-invalid-dep=yes"]
    lines += [f"#SBATCH {extra}" for extra in opts.sbatch_extra]
    return lines


def _task_table(jobs: list[Any], job_files: dict[str, Path]) -> list[str]:
    """``case`` arms mapping an array index to its run id and job file."""
    arms = [f"    {i}) RUN_ID={shlex.quote(job.run_id)}; JOB_FILE={shlex.quote(str(job_files[job.run_id]))} ;;"
            for i, job in enumerate(jobs)]
    return (['case "$SLURM_ARRAY_TASK_ID" in', *arms,
             '    *) echo "prunelaw: no job for array task $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac"])


def _rendezvous(opts: SlurmOptions, runs_dir: Path) -> list[str]:
    """Master address/port, and for multi-node jobs the deepspeed hostfile."""
    lines = ["# Rendezvous: the allocation's first node is the master; the port is derived from",
             "# the job id so that tasks sharing a node never collide.",
             'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
             f"MASTER_PORT=$(( {PORT_BASE} + SLURM_JOB_ID % {PORT_SPAN} ))"]
    if opts.launcher == "slurm":
        return lines + ["export MASTER_ADDR MASTER_PORT  # srun passes the environment to every rank"]
    if opts.nodes_per_job > 1:
        lines += ["# Multi-node: one hostfile line per node of the allocation, \"host slots=P\";",
                  "# deepspeed starts the other nodes' ranks over pdsh/ssh from the first node.",
                  f'HOSTFILE={shlex.quote(str(runs_dir))}/"$RUN_ID"/hostfile-"$SLURM_JOB_ID"',
                  f'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\\$/ slots={opts.procs}/" > "$HOSTFILE"']
    return lines


NCCL_ENV: tuple[tuple[str, str, str], ...] = (
    ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1",
     "a rank that fails or times out aborts the job instead of leaving the others hung to --time"),
    ("NCCL_ASYNC_ERROR_HANDLING", "1", "the same for torch before 2.2"),
    ("NCCL_DEBUG", "WARN", "NCCL's own warnings in the task log"),
)


def _nccl(opts: SlurmOptions, runs_dir: Path) -> list[str]:
    """NCCL settings of GPU jobs; under the deepspeed launcher they also reach the other nodes'
    ranks through a DeepSpeed environment file (pdsh passes only NCCL_* on its own)."""
    if not opts.gpus_per_job:
        return []
    lines = ["# NCCL: set here, kept if already exported (e.g. NCCL_SOCKET_IFNAME / NCCL_IB_HCA for",
             "# the cluster's fabric: ask its admins)."]
    for name, value, why in NCCL_ENV:
        lines.append(f'export {name}="${{{name}:-{value}}}"  # {why}')
    if opts.launcher == "deepspeed" and opts.nodes_per_job > 1:
        names = " ".join(name for name, _, _ in NCCL_ENV)
        lines += [f'export DS_ENV_FILE={shlex.quote(str(runs_dir))}/"$RUN_ID"/deepspeed_env-"$SLURM_JOB_ID"',
                  f'for v in {names}; do echo "$v=${{!v}}"; done > "$DS_ENV_FILE"']
    return lines + [""]


def _zero_config(jobs: list[Any], opts: SlurmOptions) -> list[str]:
    """The DeepSpeed batch, ZeRO and precision settings each task runs with (comment lines),
    from the one function that builds the DeepSpeed JSON."""
    from engine.train.dsconfig import build_ds_config

    world = opts.procs * opts.nodes_per_job
    keys = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
            "zero_optimization", "bf16", "fp16")
    device = "cuda" if opts.gpus_per_node else "cpu"  # where a ZeRO stage 'auto' will resolve
    lines = [f"# DeepSpeed config of each task at world size {world} (precision 'auto' is resolved on the node):"]
    for i, job in enumerate(jobs):
        # the keys shown do not depend on the sequence length (only the LR schedule's steps do)
        config = build_ds_config(job.config, world, job.config.data.seq_len or 1, device)
        lines.append(f"#   {i}) " + json.dumps({k: config[k] for k in keys if k in config}))
    return lines


def render_script(jobs: list[Any], job_files: dict[str, Path], opts: SlurmOptions, *, name: str,
                  runs_dir: Path, log: Path, workdir: Path, note: str) -> str:
    """The sbatch script of one array: one task per job of ``jobs`` (in that order).

    Args:
        jobs: grid jobs of one generation; task ``i`` runs ``jobs[i]``.
        job_files: run id -> resolved job YAML (from ``write_job_files``).
        opts: resources and limits of each task.
        name: SLURM job name.
        runs_dir: absolute run-store root (per-run logs go to ``<runs_dir>/<run_id>/``).
        log: the scheduler's own log pattern (``%A_%a``: array id and task index).
        workdir: directory the tasks run in (relative paths in job files resolve from it).
        note: header comment lines (what this array is, how it was submitted).
    """
    out = ["#!/bin/bash", "# " + "-" * 90, *[f"# {line}" for line in note.splitlines()], "# " + "-" * 90,
           "#", f"# Resources: each array task is one grid job on {opts.nodes_per_job} node(s), "
           f"{opts.gpus_per_node} GPU(s) and {opts.procs} process(es) per node.",
           *_sbatch_lines(opts, name, len(jobs), log, workdir), "",
           "set -euo pipefail", "",
           "# Environment: sbatch exports the submitting shell's (activate the venv before",
           "# launching); the launcher below is called by absolute path, so PATH is left alone.",
           "",
           "# Which job this task runs; its output goes next to its run in the store.",
           *_task_table(jobs, job_files),
           f'LOG={shlex.quote(str(runs_dir))}/"$RUN_ID"/slurm-"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}".out',
           'echo "prunelaw: task $SLURM_ARRAY_TASK_ID runs $RUN_ID (attempt $(( ${SLURM_RESTART_COUNT:-0} + 1 ))),'
           ' log $LOG"',
           'mkdir -p "$(dirname "$LOG")"', 'exec >>"$LOG" 2>&1',
           'echo "prunelaw: $(date -u +%FT%TZ) job $SLURM_JOB_ID on $SLURM_JOB_NODELIST,'
           ' attempt $(( ${SLURM_RESTART_COUNT:-0} + 1 ))"', "",
           *_rendezvous(opts, runs_dir), "", *_nccl(opts, runs_dir), *_zero_config(jobs, opts), "",
           "# Launch. A requeued task finds the run's checkpoint and resumes from it; the curve",
           "# is cut back to the checkpoint's step first, so no step is logged twice.",
           launch_line(opts), ""]
    return "\n".join(out)


# -- talking to SLURM ---------------------------------------------------------------------------

def _require(tool: str, hint: str) -> str:
    """Path of a SLURM client tool, or a BadInput that says what to do instead."""
    path = shutil.which(tool)
    if path is None:
        raise BadInput(f"{tool!r} not found on PATH: this machine is not a SLURM login node; {hint}")
    return path


def _slurm(argv: list[str], *, what: str) -> str:
    """Run a SLURM client command; its refusal of our request (bad partition, account, time,
    ...) is bad input and passes SLURM's own words through, anything else is an error."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return proc.stdout
    lines = [ln.split("error: ", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.strip()]
    message = "; ".join(lines) or f"exit status {proc.returncode}"
    if any(k in message.lower() for k in ("unable to contact", "connection refused", "timed out")):
        raise RuntimeError(f"{what}: {message}")
    raise BadInput(f"{what} refused by SLURM: {message}")


def sbatch(script: Path, *, dependency: list[str] | None = None) -> str:
    """Submit ``script`` held; returns the array job id (released later by :func:`release`)."""
    argv = [_require("sbatch", "use --dry-run to write the sbatch script and submit it on the cluster"),
            "--parsable", "--hold"]
    if dependency:
        argv.append("--dependency=afterok:" + ":".join(dependency))
    out = _slurm(argv + [str(script)], what=f"sbatch {script.name}")
    return out.strip().split(";")[0]  # --parsable prints "id" or "id;cluster"


def release(job_ids: list[str]) -> None:
    """Let held arrays start (their records are written)."""
    if job_ids:
        _slurm([_require("scontrol", "cannot release"), "release", ",".join(job_ids)], what="scontrol release")


def scancel(job_ids: list[str]) -> None:
    """Cancel jobs or array tasks (``123`` or ``123_4``)."""
    if job_ids:
        _slurm([_require("scancel", "cannot cancel from here"), *job_ids], what="scancel")


def squeue(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{"<array>_<task>": (STATE, reason)}`` of those of ``job_ids`` SLURM still knows."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    proc = subprocess.run(["squeue", "--array", "--noheader", "--format=%i|%T|%r",
                           "--jobs=" + ",".join(sorted(set(job_ids)))],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # every id has left the queue ("Invalid job id specified")
        if "invalid job id" in proc.stderr.lower():
            return {}
        raise RuntimeError(f"squeue failed: {proc.stderr.strip()}")
    table: dict[str, tuple[str, str]] = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            table[parts[0]] = (parts[1], parts[2])
    return table


# -- the executor's records ---------------------------------------------------------------------

def read_record(runs_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The run's latest SLURM submission (``slurm.json``), or None if never submitted."""
    path = Path(runs_dir) / run_id / LEDGER
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_record(store: RunStore, run_id: str, record: dict[str, Any]) -> None:
    """Record a submission in ``slurm.json`` and under run.json's ``slurm`` key.

    A run that does not exist yet gets a run.json with status ``pending``; an existing one
    only gains the ``slurm`` key, so the trainer's status and meta are left as they are.
    """
    previous = read_record(store.root, run_id)
    history = (previous or {}).pop("history", []) + ([previous] if previous else [])
    write_json_atomic(store.run_dir(run_id) / LEDGER, {**record, "history": history[-20:]})
    if store.exists(run_id):
        store.update(run_id, slurm=record)
    else:
        store.write(run_id, {"status": "pending", "reason": None, "slurm": record})


def active_tasks(runs_dir: Path, run_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """run id -> (``<array>_<task>``, squeue state, reason) for runs SLURM is still running
    or holding (terminal states are dropped: the run store reports how a run ended)."""
    records = {rid: rec for rid in run_ids if (rec := read_record(runs_dir, rid))}
    table = squeue([rec["job_id"] for rec in records.values()])
    out: dict[str, tuple[str, str, str]] = {}
    for run_id, rec in records.items():
        state, reason = table.get(rec["job_id"], ("", ""))
        if state in QUEUE_STATES:
            out[run_id] = (rec["job_id"], state, reason)
    return out


def queue_states(runs_dir: str | Path) -> dict[str, str]:
    """run id -> ``queued`` / ``running`` / ``suspended`` for runs SLURM still holds.

    Runs that were never submitted, or whose task has left the queue, are absent: their
    run.json status (pending / running / done / failed) is the truth for them.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return {}
    ids = sorted(p.parent.name for p in runs_dir.glob(f"*/{LEDGER}"))
    return {rid: QUEUE_STATES[state] for rid, (_, state, _) in active_tasks(runs_dir, ids).items()}


# -- launch / cancel ----------------------------------------------------------------------------

@dataclass
class Array:
    """One generation of the grid as one job array (before and after submission)."""

    jobs: list[Any]
    script: Path
    dependency: list[str]
    """``<array>_<task>`` ids of the parents this array waits for (afterok)."""
    job_id: str | None = None


def _grid_name(grid: Any) -> str:
    return str(getattr(grid, "name", None) or Path(getattr(grid, "path", None) or "grid").stem)


def _note(grid: Any, index: int, arrays: int, n_jobs: int, script: Path, dry_run: bool) -> str:
    """Header comment of a script: what it is and how it is (to be) submitted."""
    lines = [f"prunelaw grid {_grid_name(grid)!r}: generation {index + 1} of {arrays}, {n_jobs} job(s), "
             "one SLURM array task per job.",
             f"Written by `engine grid launch {getattr(grid, 'path', '')} --executor slurm` "
             f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."]
    if index == 0:
        lines.append(f"Submit: P0=$(sbatch --parsable {script})" if arrays > 1 else f"Submit: sbatch {script}")
    else:
        lines.append(f"Submit after generation {index}: sbatch --dependency=afterok:$P{index - 1} {script}")
        if not dry_run:
            lines.append("(engine grid launch submitted it with afterok on the exact parent tasks.)")
    return "\n".join(lines)


def plan_arrays(grid: Any, todo: list[Any], runs_dir: Path, opts: SlurmOptions,
                active: dict[str, str]) -> list[Array]:
    """Write the job files and one sbatch script per generation of ``todo``.

    ``active``: run id -> SLURM task of jobs already queued or running (children wait for them).
    """
    from engine.grid.spec import write_job_files

    files = {Path(p).parent.name: Path(p).resolve() for p in write_job_files(grid, runs_dir)}
    gens = generations(todo)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name, arrays = _grid_name(grid), []
    for index, jobs in enumerate(gens):
        script = runs_dir / SCRIPTS_DIR / f"{name}-gen{index}-{stamp}.sbatch"
        text = render_script(jobs, files, opts, name=f"prunelaw-{name}", runs_dir=runs_dir,
                             log=runs_dir / SCRIPTS_DIR / f"{name}-%A_%a.out", workdir=Path.cwd(),
                             note=_note(grid, index, len(gens), len(jobs), script, opts.dry_run))
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
        script.chmod(0o755)
        waits = sorted({active[j.depends] for j in jobs if j.depends in active})
        arrays.append(Array(jobs=jobs, script=script, dependency=waits))
    return arrays


def submit_arrays(arrays: list[Array], store: RunStore, grid: Any) -> None:
    """Submit every array held, record each task in the run store, then release them all.

    Children depend on their parents' exact tasks (``afterok:<array>_<task>``). If anything
    fails half-way, what was submitted is cancelled, so no orphan array is left behind.
    """
    task_of: dict[str, str] = {}
    try:
        for index, array in enumerate(arrays):
            waits = sorted(set(array.dependency) | {task_of[j.depends] for j in array.jobs if j.depends in task_of})
            array.dependency = waits
            array.job_id = sbatch(array.script, dependency=waits)
            for task, job in enumerate(array.jobs):
                task_of[job.run_id] = f"{array.job_id}_{task}"
                write_record(store, job.run_id, {
                    "array_job_id": array.job_id, "task_id": task, "job_id": task_of[job.run_id],
                    "generation": index, "dependency": waits,
                    "grid": str(Path(getattr(grid, "path", "")).resolve()),
                    "script": str(array.script),
                    "log": str(store.run_dir(job.run_id) / f"slurm-{array.job_id}_{task}.out"),
                    "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        release([a.job_id for a in arrays if a.job_id])
    except BaseException:
        scancel([a.job_id for a in arrays if a.job_id])
        raise


class SlurmExecutor:
    """Submits a grid as SLURM job arrays, one per generation (see the module docstring)."""

    name: ClassVar[str] = "slurm"
    Options: ClassVar[type] = SlurmOptions
    add_arguments = staticmethod(add_arguments)

    def __init__(self, options: SlurmOptions | None = None) -> None:
        self.options = options or SlurmOptions()

    @property
    def procs(self) -> int:
        return self.options.procs * self.options.nodes_per_job

    def check(self, grid: Any, runs: Path, launching: bool = False) -> None:
        """Every job valid at this world size; when ``launching`` (and not a dry run), ``sbatch``
        is on PATH. The shards are not checked: they live on the cluster's file system.
        """
        from engine.grid.spec import validate

        check_sbatch_path(Path(runs).resolve(), "--runs")
        check_sbatch_path(Path.cwd(), "the current directory (the jobs' working directory)")
        validate(grid, runs, self.procs)
        if launching and not self.options.dry_run:
            _require("sbatch", "use --dry-run to write the sbatch script and submit it on the cluster")

    def _active(self, grid: Any, runs: Path) -> dict[str, tuple[str, str, str]]:
        if self.options.dry_run:
            return {}
        return active_tasks(Path(runs).resolve(), [j.run_id for j in grid.jobs])

    def plan(self, grid: Any, runs: Path) -> Plan:
        """Jobs not done and not already queued or running under SLURM, in the shared order."""
        store, active = RunStore(runs), self._active(grid, runs)
        todo, skipped = [], {}
        for job in job_order(grid.jobs):
            if store.status(job.run_id) == "done":
                skipped[job.run_id] = "done"
            elif job.run_id in active:
                task, state, _ = active[job.run_id]
                skipped[job.run_id] = f"already {QUEUE_STATES[state]} as SLURM task {task}"
            else:
                todo.append(job)
        return Plan(grid, Path(runs), todo, skipped, held={rid: task for rid, (task, _, _) in active.items()})

    def submit(self, plan: Plan, echo: Callable[[str], None] = print) -> Submission:
        """Submit the plan's jobs (held, recorded, then released); returns at once.

        Done jobs are never resubmitted, jobs SLURM still holds are not submitted twice; a
        killed job (cancelled, timed out, node failure) is submitted again and resumes.
        """
        t0 = time.perf_counter()
        grid, runs_dir = plan.grid, Path(plan.runs).resolve()
        store, name = RunStore(runs_dir), _grid_name(grid)
        result = Submission(self.name, waits=True)
        for run_id, why in plan.skipped.items():
            if why.startswith("already"):
                echo(f"{run_id}: {why}; not resubmitted")
        if not plan.todo:
            n_done = sum(store.status(j.run_id) == "done" for j in grid.jobs)
            echo(f"{name}: {n_done} of {len(grid.jobs)} jobs are done and the rest are already "
                 f"queued or running: nothing submitted" if n_done < len(grid.jobs)
                 else f"{name}: all {n_done} jobs are done: nothing submitted")
        else:
            arrays = plan_arrays(grid, plan.todo, runs_dir, self.options, plan.held)
            if self.options.dry_run:
                for array in arrays:
                    echo(f"# ===== {array.script} ({len(array.jobs)} job(s)) =====")
                    echo(array.script.read_text())
                echo(f"# dry run: {len(arrays)} script(s) written under {runs_dir / SCRIPTS_DIR}, nothing submitted")
            else:
                submit_arrays(arrays, store, grid)
                result.launches = len(arrays)
                for array in arrays:
                    after = f", after {','.join(array.dependency)}" if array.dependency else ""
                    echo(f"submitted array {array.job_id}: {len(array.jobs)} job(s){after}; script {array.script}")
                    for task, job in enumerate(array.jobs):
                        result.handles[job.run_id] = f"{array.job_id}_{task}"
                        echo(f"  {array.job_id}_{task}  {job.run_id}  log "
                             f"{store.run_dir(job.run_id) / f'slurm-{array.job_id}_{task}.out'}")
        queued = {**plan.held, **result.handles}
        result.statuses = {j.run_id: "queued" if j.run_id in queued else store.status(j.run_id) for j in grid.jobs}
        result.seconds = time.perf_counter() - t0
        return result

    def status(self, grid: Any, runs: Path) -> list[JobState]:
        """The run store merged with ``squeue`` (queued / running / suspended tasks)."""
        runs = Path(runs)
        active = active_tasks(runs.resolve(), [j.run_id for j in grid.jobs]) if runs.is_dir() else {}
        return job_states(grid, runs, {rid: (QUEUE_STATES[state], task) for rid, (task, state, _) in active.items()})

    def cancel(self, grid: Any, runs: Path, echo: Callable[[str], None] = print) -> list[str]:
        """Cancel this grid's tasks still queued or running; returns the tasks cancelled."""
        _require("squeue", "there is no SLURM queue to cancel from on this machine")
        active = active_tasks(Path(runs).resolve(), [j.run_id for j in grid.jobs])
        if not active:
            echo(f"{_grid_name(grid)}: nothing queued or running under SLURM; nothing cancelled")
            return []
        tasks = sorted(task for task, _, _ in active.values())
        scancel(tasks)
        for run_id, (task, state, _) in sorted(active.items()):
            echo(f"cancelled {task} ({QUEUE_STATES[state]})  {run_id}")
        return tasks
