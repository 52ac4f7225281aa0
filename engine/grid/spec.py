"""Grid specs: a YAML cross product expanded into fully resolved, re-runnable job configs.

A grid is ``parents x methods x ratios x objectives x inits x seeds`` at one token budget.
Parents are HF directories, or presets pretrained by the grid itself (init random, objective
lm, no pruning, saved with ``save_pretrained``); a child names such a parent ``run:<id>``, so
job ids (a hash of the resolved config) do not depend on where the run store lives.

Example ``grids/tiny.yaml``::

    name: tiny
    data: {shards: shards/tiny}
    parents:
      - {name: s, preset: tiny-llama-s, tokens: 200K}
    methods: [width, depth]
    ratios: {width: [0.25, 0.5], depth: [0.125, 0.25]}
    objectives: [lm]
    tokens: 100K
    train: {deepspeed: {micro_batch: 8}, eval: {points: 8}}

torch-free: ``engine grid plan`` validates every job in well under a second.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.cli import BadInput
from data.hub import random_init_name
from data.models import MODELS
from engine.train.config import (
    RUN_PREFIX, DataConfig, JobConfig, default_run_id, dump_job, from_dict, job_from_dict,
)
from engine.train.net import free_port

JOB_FILE = "job.yaml"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A grid name: it becomes a directory under runs/ and part of SLURM job names."""
MAX_JOBS = 5000
"""Most jobs one grid may expand to: a typo in a seed or ratio list fails here, not on a cluster."""
GRID_OWNED = ("parent", "tokens", "data", "run_id", "runs_dir", "family", "method", "ratio", "init",
              "objective", "seed", "save_model")
"""Job keys the grid sets itself; ``train:``/``pretrain:`` may set any other JobConfig key."""


@dataclass
class ParentSpec:
    """One parent of the grid."""

    name: str
    """Short label, used in run ids and as ``parent`` in the metadata."""
    preset: str = ""
    """A ``data.models`` preset pretrained by the grid (set ``tokens``)..."""
    path: str = ""
    """...or an existing HF directory (``save_pretrained`` / ``engine model fetch``), or a hub id
    ``org/name[@revision]`` (planned from its config.json alone; see ``data.hub``)."""
    tokens: int | str = 0
    """Pretraining token budget (preset parents only)."""
    family: str = ""
    """Family in the metadata; empty takes the preset's (``tiny``)."""
    seed: int = 0
    """Pretraining seed."""

    def __post_init__(self) -> None:
        if bool(self.preset) == bool(self.path):
            raise BadInput(f"parent {self.name!r}: give exactly one of preset or path")
        if self.preset and self.preset.lower() not in MODELS:
            raise BadInput(f"parent {self.name!r}: unknown preset {self.preset!r}; presets: {', '.join(sorted(MODELS))}")
        if self.preset and not self.tokens:
            raise BadInput(f"parent {self.name!r}: a preset parent needs its pretraining tokens")


@dataclass
class GridSpec:
    """The YAML document of a grid (every key documented; unknown keys are rejected)."""

    name: str
    """Grid name: the default run store is ``runs/<name>``."""
    data: dict[str, Any]
    """``DataConfig`` of every job (``shards:`` directory, optional seq_len, weights)."""
    parents: list[dict[str, Any]]
    """``ParentSpec`` entries."""
    methods: list[str]
    ratios: list[float] | dict[str, list[float]]
    """Target ratios for every method, or per method (``{width: [0.25, 0.5], "2:4": [0.4]}``)."""
    tokens: int | str
    """Post-training token budget of every pruned job (one long run serves smaller budgets)."""
    objectives: list[str] = field(default_factory=lambda: ["lm"])
    inits: list[str] = field(default_factory=lambda: ["pruned"])
    seeds: list[int] = field(default_factory=lambda: [0])
    runs: str = ""
    """Default run store (``--runs`` overrides); empty means ``runs/<name>``."""
    train: dict[str, Any] = field(default_factory=dict)
    """JobConfig overrides for the post-training jobs (optim, deepspeed, eval, kd, recon, ...)."""
    pretrain: dict[str, Any] = field(default_factory=dict)
    """JobConfig overrides for the parents' pretraining jobs."""
    method_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-method ``prune_args`` (e.g. ``{"2:4": {tolerance: 0.3}}``: 2:4 reaches one fixed,
    model-dependent ratio, so a tolerance lets one target serve parents of several sizes)."""
    exclude: list[dict[str, Any]] = field(default_factory=list)
    """Combinations left out of the cross product, each ``{parent: NAME, method: M, ratios: [R, ...]}``
    (any subset of the keys; a job matching every key given is dropped): a ratio a method cannot
    reach on one parent's shape, which ``engine grid plan`` refuses otherwise."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise BadInput(f"name {self.name!r} must be a plain name (letters, digits, '.', '_', '-'; "
                           f"no '/' or '..'): it names the run store runs/<name>")
        for key in ("parents", "methods", "objectives", "inits", "seeds"):
            value = getattr(self, key)
            if not isinstance(value, list) or not value:
                raise BadInput(f"{key}: {value!r} must be a non-empty list (an empty one drops every job)")
        if not self.ratios:
            raise BadInput(f"ratios: {self.ratios!r} must be a non-empty list or mapping method -> list")
        names = {p.get("name") for p in self.parents if isinstance(p, dict)}
        for i, rule in enumerate(self.exclude):
            if (not isinstance(rule, dict) or not rule or set(rule) - set(EXCLUDE_KEYS)
                    or not isinstance(rule.get("ratios", []), list)):
                raise BadInput(f"exclude[{i}]: {rule!r} must be a mapping with some of the keys "
                               f"{', '.join(EXCLUDE_KEYS)} (e.g. {{parent: s, method: width, ratios: [0.15]}})")
            unknown_parent = "parent" in rule and rule["parent"] not in names
            unknown_method = "method" in rule and rule["method"] not in self.methods
            if unknown_parent or unknown_method:  # a typo would exclude nothing, silently
                raise BadInput(f"exclude[{i}]: {rule!r} names no parent or method of this grid; "
                               f"parents: {', '.join(sorted(map(str, names)))}; methods: {', '.join(self.methods)}")


EXCLUDE_KEYS = ("parent", "method", "ratios")


def _excluded(spec: GridSpec, parent: str, method: str, ratio: float) -> bool:
    """Whether an ``exclude`` rule of the grid drops this (parent, method, ratio)."""
    return any(rule.get("parent", parent) == parent and rule.get("method", method) == method
               and ratio in rule.get("ratios", [ratio]) for rule in spec.exclude)


@dataclass
class Job:
    """One resolved job of a grid."""

    config: JobConfig
    kind: str
    """``parent`` (pretraining, saved for its children) or ``post`` (prune + post-train)."""
    depends: str | None = None
    """run_id of the parent job this one loads, if the grid pretrains it."""
    parent_name: str = ""
    """The grid's label of the parent this job is (parent jobs) or prunes (post jobs)."""

    @property
    def run_id(self) -> str:
        return self.config.run_id


@dataclass
class Grid:
    """An expanded grid: ``jobs`` lists parents first, then the post-training jobs."""

    path: Path
    spec: GridSpec
    parents: list[ParentSpec]
    jobs: list[Job]

    @property
    def name(self) -> str:
        return self.spec.name

    def default_runs(self) -> Path:
        return Path(self.spec.runs or Path("runs") / self.spec.name)


def _overrides(raw: dict[str, Any], where: str) -> dict[str, Any]:
    owned = sorted(set(raw) & set(GRID_OWNED))
    if owned:
        raise BadInput(f"{where}: key(s) {', '.join(owned)} are set by the grid itself; "
                       f"allowed: {', '.join(f.name for f in dataclasses.fields(JobConfig) if f.name not in GRID_OWNED)}")
    return raw


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _parent_source(path: str) -> str:
    """A path parent made absolute; a hub id (no such local path) kept as written."""
    from data.hub import parse_hub_id

    if not Path(path).expanduser().exists() and parse_hub_id(path) is not None:
        return path
    return _absolute(path)


def _make(base: dict[str, Any], where: str, **fields: Any) -> JobConfig:
    try:
        return job_from_dict({**base, **fields})
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


def _parent_jobs(spec: GridSpec, parents: list[ParentSpec], data: dict[str, Any]) -> dict[str, Job]:
    """name -> pretraining Job for every preset parent."""
    jobs = {}
    for p in parents:
        if p.preset:
            cfg = _make(_overrides(spec.pretrain, "pretrain"), f"parent {p.name}", parent=random_init_name(p.preset),
                        tokens=p.tokens, data=data, family=p.family, seed=p.seed, init="random",
                        save_model=True)
            cfg.run_id = default_run_id(cfg, head=p.name)
            jobs[p.name] = Job(cfg, "parent", parent_name=p.name)
    return jobs


def expand(spec: GridSpec, path: Path) -> Grid:
    """All jobs of ``spec``; raises BadInput naming the first invalid one."""
    parents = [from_dict(ParentSpec, p, f"parents[{i}]") for i, p in enumerate(spec.parents)]
    ratios = _ratios(spec)
    count = sum(bool(p.preset) for p in parents) + len(parents) * sum(len(r) for r in ratios.values()) * len(
        spec.objectives) * len(spec.inits) * len(spec.seeds)
    if count > MAX_JOBS:  # counted before expanding: each job costs a config hash
        raise BadInput(f"the grid expands to {count} jobs; at most {MAX_JOBS} "
                       f"(parents x methods x ratios x objectives x inits x seeds)")
    data = dataclasses.asdict(from_dict(DataConfig, spec.data, "data"))
    data["shards"] = _absolute(data["shards"])
    pre = _parent_jobs(spec, parents, data)
    train = _overrides(spec.train, "train")
    posts = []
    for p in parents:
        parent = f"{RUN_PREFIX}{pre[p.name].run_id}" if p.name in pre else _parent_source(p.path)
        family = p.family or (MODELS[p.preset.lower()].family if p.preset else "")
        for method in spec.methods:
            for ratio in (r for r in ratios[method] if not _excluded(spec, p.name, method, r)):
                for objective in spec.objectives:
                    for init in spec.inits:
                        for seed in spec.seeds:
                            cfg = _make(train, f"job {p.name}/{method}/{ratio}/{objective}/{init}/s{seed}",
                                        parent=parent, tokens=spec.tokens, data=data, family=family,
                                        method=method, ratio=ratio, objective=objective, init=init, seed=seed,
                                        prune_args={**train.get("prune_args", {}), **spec.method_args.get(method, {})})
                            cfg.run_id = default_run_id(cfg, head=p.name)
                            posts.append(Job(cfg, "post", pre[p.name].run_id if p.name in pre else None, p.name))
    jobs = list(pre.values()) + posts
    _check_unique(jobs)
    return Grid(path, spec, parents, jobs)


def _ratios(spec: GridSpec) -> dict[str, list[float]]:
    """method -> target ratios (a list applies to every method)."""
    if isinstance(spec.ratios, list):
        return {m: spec.ratios for m in spec.methods}
    if not isinstance(spec.ratios, dict):
        raise BadInput(f"ratios must be a list or a mapping method -> list; got {spec.ratios!r}")
    missing = [m for m in spec.methods if m not in spec.ratios]
    extra = [m for m in spec.ratios if m not in spec.methods]
    if missing or extra:
        raise BadInput(f"ratios mapping must name exactly the methods {', '.join(spec.methods)}; "
                       f"missing: {', '.join(missing) or '-'}, unknown: {', '.join(extra) or '-'}")
    return {m: list(spec.ratios[m]) for m in spec.methods}


def _check_unique(jobs: list[Job]) -> None:
    seen: dict[str, int] = {}
    for job in jobs:
        if job.run_id in seen:
            raise BadInput(f"two jobs resolve to the same run id {job.run_id!r}: repeated values in the grid?")
        seen[job.run_id] = 1


def load_grid(path: str | os.PathLike[str]) -> Grid:
    """Read, validate and expand a grid YAML.

    Raises:
        BadInput: missing file, bad YAML, unknown/missing keys, or any invalid job.
    """
    from engine.yamlfile import load_yaml

    path = Path(path)
    raw = load_yaml(path, "grid file")
    try:
        return expand(from_dict(GridSpec, raw, "grid"), path)
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None


def validate(grid: Grid, runs_dir: str | os.PathLike[str], procs: int = 1) -> None:
    """Every check possible before anything runs: parents (directory, architecture, tokenizer,
    every method and ratio reachable on their shape), sequence length, token budget.

    Raises:
        BadInput: naming the first bad job.
    """
    from engine.grid.parents import check_parents
    from engine.train.sources import check_budget, check_parent, check_seq_len, job_seq_len

    check_parents(grid)
    runs = Path(runs_dir)
    if runs.exists() and not runs.is_dir():
        raise BadInput(f"--runs {str(runs_dir)!r} is a file; expected a run-store directory")
    by_id = {j.run_id: j for j in grid.jobs}
    for job in grid.jobs:
        cfg = dataclasses.replace(job.config, runs_dir=str(runs_dir))
        if job.depends:  # positions of a grid-pretrained parent: those of its preset
            cfg = dataclasses.replace(cfg, parent=by_id[job.depends].config.parent)
        try:
            seq_len = job_seq_len(cfg)
            check_parent(cfg, known_runs=by_id)
            if seq_len is not None:
                check_seq_len(cfg, seq_len)
                check_budget(cfg, procs, seq_len)
        except BadInput as exc:
            raise BadInput(f"job {job.run_id}: {exc}") from None


def check_shards(grid: Grid) -> None:
    """The grid's token shards must exist before anything is planned or launched.

    Raises:
        BadInput: naming the missing directory and the commands that make it.
    """
    shards = Path(grid.spec.data.get("shards", ""))
    if (shards / "manifest.json").is_file():
        return
    raise BadInput(f"data.shards {str(shards)!r} of grid {str(grid.path)!r} has no token shards; make them with "
                   f"'data corpus build --out work/corpus && data tokenizer train --corpus work/corpus "
                   f"--out work/tok && data prepare --corpus work/corpus --tokenizer work/tok --seq-len {grid.spec.data.get('seq_len') or 256} "
                   f"--out {shards}' (or run 'engine demo', which builds its own)")


def write_job_files(grid: Grid, runs_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``<runs_dir>/<run_id>/job.yaml`` for every job, parents first; returns the paths.

    The files are complete job configs: ``engine train --config FILE`` re-runs any one alone.
    """
    runs = Path(runs_dir).resolve()
    paths = []
    for job in grid.jobs:
        job.config.runs_dir = str(runs)
        paths.append(dump_job(job.config, runs / job.run_id / JOB_FILE))
    return paths


def find_launcher() -> str:
    """The ``deepspeed`` launcher: $PRUNELAW_DEEPSPEED, then PATH, then beside this Python.

    Raises:
        BadInput: none found.
    """
    override = os.environ.get("PRUNELAW_DEEPSPEED")
    if override is not None:
        if shutil.which(override) is None:
            raise BadInput(f"PRUNELAW_DEEPSPEED={override!r} is not an executable deepspeed launcher")
        return str(shutil.which(override))
    found = shutil.which("deepspeed") or shutil.which("deepspeed", path=str(Path(sys.executable).parent))
    if found is None:
        raise BadInput("no 'deepspeed' launcher on PATH (install the engine extra: pip install 'prunelaw[engine]')")
    return found


def job_command(job_files: list[str | os.PathLike[str]], procs: int, hostfile: str | None = None,
                master_addr: str | None = None, master_port: int | None = None,
                devices: tuple[int, ...] | None = None) -> list[str]:
    """The exact command that runs ``job_files`` in order in one launcher invocation.

    ``--num_gpus`` is the process count per node, on CPU too (DeepSpeed's CPU accelerator
    takes it as is); ``devices`` (local GPUs, one per process) replace it with ``--include
    localhost:i,j``. ``--no_local_rank``: workers read LOCAL_RANK from the environment.
    """
    place = ["--include", "localhost:" + ",".join(map(str, devices))] if devices else ["--num_gpus", str(procs)]
    cmd = [find_launcher(), *place]
    if hostfile:
        cmd += ["--hostfile", str(hostfile), "--no_ssh_check"]
    if master_addr:
        cmd += ["--master_addr", master_addr]
    cmd += ["--master_port", str(master_port or free_port()), "--no_local_rank", "--module", "engine.train",
            "--config", *[str(p) for p in job_files]]
    return cmd
