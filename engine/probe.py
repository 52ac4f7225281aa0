"""How to spend this machine's cores: threads per process and jobs in parallel, by measurement.

Why a probe and not ``cores // procs``: on small shared CPUs (2-vCPU cloud machines) torch
with 2 OpenMP threads can be many times *slower* than with 1 for the model sizes a CPU grid
trains (a 0.33M-parameter Llama step took 4.3 s at 2 threads and 0.18 s at 1 on one such
machine), while two single-thread processes side by side each run at nearly full speed. Which
way a given machine goes cannot be read off ``os.cpu_count()``, so a few seconds of a
representative workload decide it once, and the answer is cached per machine.

The workload is a tiny transformer-sized MLP step (matmuls of a ``[2048 x 128]`` activation,
forward + backward), run in fresh subprocesses so that OpenMP starts with the thread count
under test. Three settings are timed: one process at 1 thread, one process at every core,
and one single-thread process per core at once (aggregate throughput).

torch-free at import: ``engine grid plan`` and ``--help`` never pay for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROBE_SECONDS = 1.5
"""Timed seconds per worker: long enough to swamp timer noise, short enough to be paid once."""
CACHE_VERSION = 2


@dataclass(frozen=True)
class MachinePlan:
    """What the probe chose, and the measurements behind it (iterations per second)."""

    cores: int
    single_threads: int
    """OMP threads for a process that runs alone (one training job, one prune)."""
    grid_threads: int
    """OMP threads per process when a grid runs several jobs side by side."""
    grid_parallel: int
    """Jobs a grid runs at once (each ``grid_threads`` threads)."""
    rate_1: float
    rate_all: float
    rate_parallel: float
    """Aggregate rate of ``cores`` single-thread processes running together."""
    source: str
    """``probe`` (measured now), ``cache`` (measured earlier on this machine) or ``env``."""

    def describe(self) -> str:
        """One line for the user: what was chosen and why."""
        if self.source == "env":
            return (f"OMP_NUM_THREADS={self.single_threads} is set: {self.grid_parallel} job(s) at a time, "
                    f"{self.grid_threads} thread(s) each (unset it to let the machine probe decide)")
        return (f"{self.cores} cores; 1 process x 1 thread {self.rate_1:.0f} it/s, 1 x {self.cores} threads "
                f"{self.rate_all:.0f} it/s, {self.cores} x 1 thread {self.rate_parallel:.0f} it/s in all -> "
                f"grid: {self.grid_parallel} job(s) at a time x {self.grid_threads} thread(s); a lone job: "
                f"{self.single_threads} thread(s) ({self.source})")


def usable_cores() -> int:
    """Cores this process may run on (affinity masks and taskset count, not the host's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_path(cores: int) -> Path:
    import importlib.metadata as md

    try:
        torch_version = md.version("torch")
    except md.PackageNotFoundError:
        torch_version = "none"
    key = hashlib.sha256(f"{CACHE_VERSION}|{cores}|{_cpu_model()}|{torch_version}|{platform.node()}".encode())
    base = Path(os.environ.get("PRUNELAW_CACHE", Path.home() / ".cache" / "prunelaw"))
    return base / f"machine-probe-{key.hexdigest()[:16]}.json"


def _worker_command(threads: int, seconds: float) -> list[str]:
    return [sys.executable, "-m", "engine.probe", "--worker", str(threads), str(seconds)]


def _run_workers(threads: int, count: int, seconds: float) -> float:
    """Aggregate iterations/s of ``count`` simultaneous workers at ``threads`` threads each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(_worker_command(threads, seconds), stdout=subprocess.PIPE, text=True,
                              env=env)
             for _ in range(count)]
    rates = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode:
            raise RuntimeError(f"machine probe worker exited with {proc.returncode}")
        rates.append(float(out.strip().splitlines()[-1]))
    return sum(rates)


def choose(cores: int, rate_1: float, rate_all: float, rate_parallel: float, source: str) -> MachinePlan:
    """The plan the three measurements imply (a pure function: tested without timing anything).

    A lone process takes the faster of 1 and ``cores`` threads. A grid runs one single-thread
    job per core when more threads do not speed one process up (then side-by-side processes
    can only add throughput; the parallel measurement itself is the one a busy machine
    distorts most), or when side by side beats one job on every core by more than 10%;
    otherwise one job at a time with every core.
    """
    single = cores if rate_all > rate_1 else 1
    if cores > 1 and (rate_all <= rate_1 or rate_parallel > 1.1 * rate_all):
        return MachinePlan(cores, single, 1, cores, rate_1, rate_all, rate_parallel, source)
    return MachinePlan(cores, single, single, 1, rate_1, rate_all, rate_parallel, source)


def measure(cores: int, seconds: float = PROBE_SECONDS) -> MachinePlan:
    """Time the three settings now (a few seconds; each worker is a fresh process)."""
    rate_1 = _run_workers(1, 1, seconds)
    rate_all = _run_workers(cores, 1, seconds) if cores > 1 else rate_1
    rate_parallel = _run_workers(1, cores, seconds) if cores > 1 else rate_1
    return choose(cores, rate_1, rate_all, rate_parallel, "probe")


def _from_env(cores: int) -> MachinePlan | None:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value.isdigit() or int(value) < 1:
        return None
    threads = int(value)
    return MachinePlan(cores, threads, threads, max(1, cores // threads), 0.0, 0.0, 0.0, "env")


def machine_plan(*, refresh: bool = False, use_env: bool = True) -> MachinePlan:
    """The cached plan for this machine, measuring it on first use (or with ``refresh``).

    A user's ``OMP_NUM_THREADS`` wins (``use_env``): they asked for it, and it is printed.
    """
    cores = usable_cores()
    if use_env and (plan := _from_env(cores)):
        return plan
    path = _cache_path(cores)
    if not refresh and path.is_file():
        try:
            return MachinePlan(**{**json.loads(path.read_text()), "source": "cache"})
        except (OSError, ValueError, TypeError):
            pass  # unreadable cache: measure again
    plan = measure(cores)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(asdict(plan), indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home still gets the measured plan, just not cached
    return plan


def best_threads() -> int:
    """Threads for a process that runs alone (``engine prune``, one ``engine train``)."""
    return machine_plan().single_threads


def set_torch_threads() -> int:
    """Apply :func:`best_threads` to torch in this process; returns the count."""
    import torch

    threads = best_threads()
    torch.set_num_threads(threads)
    return threads


def native_bf16(device_type: str) -> bool:
    """The device computes bf16 in hardware (CUDA: Ampere and later; CPU: AVX512-BF16 or AMX)."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(requested: str, device_type: str, zero_stage: int) -> tuple[str, str]:
    """(precision to train in, why) for a job's ``deepspeed.precision``.

    ``auto`` takes bf16 on accelerators that compute it natively and fp32 on every CPU: on
    AVX2-only CPUs bf16 is emulated and about 3x slower than fp32 at 5M parameters, and even
    with AVX512-BF16 it measured 1.2-2.7x slower than fp32 for the 30K-400K-parameter models
    CPU grids train (conversions outweigh the small matmuls; README throughput table). ZeRO
    stage 0 would accumulate bf16 gradients. An explicit choice is kept, with a warning when it
    is the slow one.
    """
    native = native_bf16(device_type)
    if requested != "auto":
        if requested == "bf16" and (device_type == "cpu" or not native):
            return "bf16", (f"bf16 as requested, though on this {device_type} it is slower than fp32 "
                            "for small models (precision: auto would pick fp32)")
        return requested, f"{requested} as requested"
    if device_type == "cpu":
        return "fp32", ("auto: fp32 on CPU (bf16 is " + ("native here but measured slower for small models"
                                                       if native else "emulated on this CPU") + ")")
    if not native:
        return "fp32", f"auto: fp32 (this {device_type} has no native bf16)"
    if zero_stage < 1:
        return "fp32", "auto: fp32 (bf16 needs ZeRO stage >= 1; stage 0 accumulates bf16 gradients)"
    return "bf16", f"auto: bf16 (native on this {device_type})"


# -- the timed workload (runs in the probe's subprocesses) ------------------------------------

def _workload(threads: int, seconds: float) -> float:
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 128, generator=g)  # [tokens, hidden] of a 16 x 128 micro-batch
    w1 = torch.randn(128, 384, generator=g, requires_grad=True)
    w2 = torch.randn(384, 128, generator=g, requires_grad=True)

    def step() -> None:
        y = torch.nn.functional.silu(x @ w1) @ w2
        y.square().mean().backward()
        w1.grad = w2.grad = None

    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.probe`` prints the plan; ``--refresh`` measures again."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--worker"]:
        print(f"{_workload(int(args[1]), float(args[2])):.3f}")
        return 0
    plan = machine_plan(refresh="--refresh" in args, use_env="--ignore-env" not in args)
    print(plan.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
