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

The same machinery decides ``precision: auto`` (and the dtype of pruning forwards) on CPUs:
:func:`resolve_precision` times fp32 against bf16 at the job's own layer shapes (one real
decoder layer and the embeddings / LM head, extrapolated to the model's depth) and caches the
timing per machine and shape.

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
from typing import Any

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


# -- precision by measurement -----------------------------------------------------------------
#
# Whether bf16 beats fp32 on a CPU depends on the chip (AMX, AVX512-BF16, or emulation) AND on
# the model's size: at 30K-400K parameters the dtype conversions outweigh the small matmuls
# and bf16 runs 1.2-2.7x slower, while a 135M-parameter Llama step ran 2-3x faster in bf16 on
# an AMX machine. So ``auto`` times both at the job's own layer shapes, in a fresh subprocess
# at the caller's thread count, and caches the answer per machine and shape.

PRECISION_SECONDS = 2.0
"""Timed seconds per precision measurement (both dtypes interleaved), after one warm-up round."""
BF16_MARGIN = 1.10
"""bf16 must be this much faster than fp32 to be chosen: a tie keeps the exact dtype."""
TIMED_TOKENS = 1024
"""Tokens per timed forward: the job's micro-batch is cut to about this many (times scale
linearly in rows at these sizes), so the probe of a large model costs seconds, not minutes."""
MODES = ("train", "forward")
"""``train``: forward + backward + AdamW step, bf16 weights over fp32 masters (DeepSpeed's bf16
mode); ``forward``: a no-grad forward, bf16 under autocast over fp32 weights (pruning)."""


@dataclass(frozen=True)
class Workload:
    """The shape a precision measurement times: the job's model at its sequence and batch."""

    config: dict
    """The transformers config (``to_dict()``) of the model; the worker builds ONE layer of it."""
    layers: int
    seq: int
    batch: int
    mode: str

    @classmethod
    def of(cls, model_config: Any, seq: int, batch: int, mode: str) -> "Workload":
        """The workload of a transformers config (a loaded model's ``model.config``)."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}; allowed: {', '.join(MODES)}")
        config = {k: v for k, v in model_config.to_dict().items()
                  if k not in ("layer_types", "architectures", "transformers_version", "dtype", "torch_dtype",
                               "_name_or_path", "auto_map")}
        return cls(config, int(model_config.num_hidden_layers), int(seq), int(batch), mode)

    def key(self, threads: int) -> str:
        """Cache key: what the timing depends on (shape, sizes, mode, threads), not the run."""
        c = self.config
        shape = [c.get("model_type"), c.get("hidden_size"), c.get("intermediate_size"),
                 c.get("num_attention_heads"), c.get("num_key_value_heads"), c.get("head_dim"),
                 c.get("vocab_size"), c.get("tie_word_embeddings"), self.layers, self.seq, self.batch,
                 self.mode, threads]
        return json.dumps(shape)


@dataclass(frozen=True)
class PrecisionTiming:
    """Seconds per step (train) or per forward of the whole model in each dtype."""

    fp32_s: float
    bf16_s: float
    threads: int
    source: str
    """``probe`` (measured now) or ``cache`` (measured earlier on this machine)."""

    def describe(self) -> str:
        return (f"fp32 {self.fp32_s:.3g} s, bf16 {self.bf16_s:.3g} s per {self.threads}-thread step at this "
                f"model's shape ({self.source})")


def choose_precision(requested: str, device_type: str, native: bool, timing: PrecisionTiming | None,
                     zero_stage: int | None = None) -> tuple[str, str]:
    """(precision, why): the decision rule, a pure function of what was measured.

    ``zero_stage`` is the training job's (None for pruning forwards, which keep fp32 weights):
    stage 0 would accumulate bf16 gradients, so bf16 needs stage >= 1. On accelerators ``auto``
    takes bf16 where it is native; on a CPU it takes bf16 only where the timing says it is
    faster by :data:`BF16_MARGIN` at the job's shape; an explicit choice is kept.
    """
    if requested != "auto":
        if requested == "bf16" and not native:
            return "bf16", f"bf16 as requested, though this {device_type} emulates it (slower than fp32)"
        return requested, f"{requested} as requested"
    if zero_stage is not None and zero_stage < 1 and (native or device_type == "cpu"):
        where = "on CPU " if device_type == "cpu" else ""
        return "fp32", f"auto: fp32 {where}(bf16 needs ZeRO stage >= 1; stage 0 accumulates bf16 gradients)"
    if device_type != "cpu":
        return ("bf16", f"auto: bf16 (native on this {device_type})") if native else \
            ("fp32", f"auto: fp32 (this {device_type} has no native bf16)")
    if not native:
        return "fp32", "auto: fp32 on CPU (bf16 is emulated on this CPU)"
    if timing is None:
        return "fp32", "auto: fp32 on CPU (no model shape to time bf16 at)"
    speedup = timing.fp32_s / timing.bf16_s
    if speedup > BF16_MARGIN:
        return "bf16", f"auto: bf16 on CPU (measured {speedup:.2f}x faster than fp32: {timing.describe()})"
    return "fp32", f"auto: fp32 on CPU (bf16 measured {speedup:.2f}x of fp32's speed: {timing.describe()})"


def _precision_cache_path() -> Path:
    machine = _cache_path(usable_cores())
    return machine.with_name(machine.name.replace("machine-probe-", "precision-probe-"))


def measure_precision(workload: Workload, threads: int, seconds: float = PRECISION_SECONDS) -> PrecisionTiming:
    """Time fp32 and bf16 for ``workload`` in a fresh subprocess at ``threads`` threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    payload = json.dumps({**asdict(workload), "threads": threads, "seconds": seconds})
    proc = subprocess.run([sys.executable, "-m", "engine.probe", "--precision-worker", payload],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"precision probe worker exited with {proc.returncode}: {proc.stderr.strip()[-400:]}")
    fp32_s, bf16_s = (float(v) for v in proc.stdout.strip().splitlines()[-1].split())
    return PrecisionTiming(fp32_s, bf16_s, threads, "probe")


def precision_timing(workload: Workload, threads: int, *, refresh: bool = False) -> PrecisionTiming:
    """The cached timing of ``workload`` on this machine, measured on first use."""
    path = _precision_cache_path()
    key = workload.key(threads)
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        cache = {}  # unreadable cache: measure again
    if not refresh and isinstance(cache.get(key), list):
        fp32_s, bf16_s = cache[key]
        return PrecisionTiming(float(fp32_s), float(bf16_s), threads, "cache")
    timing = measure_precision(workload, threads)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({**cache, key: [timing.fp32_s, timing.bf16_s]}, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home still gets the measurement, just not cached
    return timing


def resolve_precision(requested: str, device_type: str, zero_stage: int | None,
                      workload: Workload | None = None, *, refresh: bool = False) -> tuple[str, str]:
    """(precision, why) for a job's ``deepspeed.precision`` (or, ``zero_stage`` None, a pruning
    pass's forwards): :func:`choose_precision` on a timing of ``workload`` where it matters
    (``auto`` on a CPU with native bf16), at this process's torch thread count."""
    native = native_bf16(device_type)
    timing = None
    measurable = requested == "auto" and device_type == "cpu" and native and (zero_stage is None or zero_stage >= 1)
    if measurable and workload is not None:
        import torch

        timing = precision_timing(workload, torch.get_num_threads(), refresh=refresh)
    return choose_precision(requested, device_type, native, timing, zero_stage)


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


def _one_layer_model(config: dict) -> Any:
    """The job's model class and shapes with ONE decoder layer (real embeddings and LM head)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    cfg["num_hidden_layers"] = 1
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)).float()


def _steppers(model: Any, seq: int, rows: int, mode: str, bf16: bool) -> tuple[Any, Any]:
    """(whole 1-layer model step, one decoder-layer step) in one dtype; each returns nothing.

    ``train`` mirrors DeepSpeed's bf16 mode: bf16 weights compute, fp32 master copies take the
    AdamW step and are copied back (its conversion cost is part of what is timed).
    """
    import copy

    import torch


    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, m.config.vocab_size, (rows, seq), generator=g)  # [rows, seq]
    hidden = torch.randn(rows, seq, m.config.hidden_size, generator=g)  # [rows, seq, hidden]
    positions = torch.arange(seq)[None]
    layer = m.model.layers[0]
    if mode == "forward":
        def forward_model() -> None:
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                m(input_ids=ids, use_cache=False)

        def forward_layer() -> None:
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                layer(hidden, position_ids=positions, position_embeddings=m.model.rotary_emb(hidden, positions))
        return forward_model, forward_layer
    if bf16:
        m = m.to(torch.bfloat16)
        hidden = hidden.to(torch.bfloat16)
    masters = [p.detach().float().clone() for p in m.parameters()]
    opt = torch.optim.AdamW(masters, lr=1e-5, fused=True)  # as engine.train.recipe.build_engine
    x = hidden.requires_grad_()  # the backward into the previous layer is part of a layer's cost

    def update(params: list) -> None:
        wanted = {id(q) for q in params}
        pairs = [(p, w) for p, w in zip(m.parameters(), masters) if p.grad is not None and id(p) in wanted]
        for p, w in pairs:
            w.grad = p.grad.float()
        opt.step()
        with torch.no_grad():
            for p, w in pairs:
                p.copy_(w)
                p.grad = w.grad = None

    def train_model() -> None:
        # the LM loss as engine.train.objectives.lm_loss computes it (not imported: the probe
        # sits below training and pruning, which both ask it for their precision)
        m(input_ids=ids, labels=ids, use_cache=False).loss.float().backward()
        update(list(m.parameters()))

    def train_layer() -> None:
        out = layer(x, position_ids=positions, position_embeddings=m.model.rotary_emb(x, positions))
        (out[0] if isinstance(out, tuple) else out).float().square().mean().backward()
        update(list(layer.parameters()))
        x.grad = None
    return train_model, train_layer


def _precision_workload(spec: dict) -> tuple[float, float]:
    """Seconds per step of the whole model (1 layer measured + ``layers - 1`` more) in fp32
    and bf16; the dtypes alternate round by round so that a load change hits both alike."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    seq, batch = int(spec["seq"]), int(spec["batch"])
    rows = min(batch, max(1, -(-TIMED_TOKENS // seq)))
    model = _one_layer_model(spec["config"])
    steps = {bf16: _steppers(model, seq, rows, spec["mode"], bf16) for bf16 in (False, True)}
    best = {bf16: [float("inf"), float("inf")] for bf16 in steps}
    t_end, rounds = None, 0
    while rounds < 3 or time.perf_counter() < t_end:
        for bf16, fns in steps.items():
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                if rounds:  # round 0 warms up (allocator, oneDNN kernels)
                    best[bf16][i] = min(best[bf16][i], time.perf_counter() - t0)
        if rounds == 0:
            t_end = time.perf_counter() + float(spec["seconds"])
        rounds += 1
    scale = batch / rows
    per = {bf16: scale * (t_model + (int(spec["layers"]) - 1) * t_layer) for bf16, (t_model, t_layer) in best.items()}
    return per[False], per[True]


def _precision_report(args: list[str]) -> str:
    """``--precision MODEL [SEQ [BATCH [train|forward]]]``: what ``auto`` picks for that model."""
    import torch

    from transformers import AutoConfig

    from data.hub import hub_config
    from engine.models import check_model_source, config_for

    refresh = "--refresh" in args
    args = [a for a in args if a != "--refresh"]
    source = check_model_source(args[0])
    if source.kind == "dir":
        config = AutoConfig.from_pretrained(source.path)
    elif source.kind == "hub":  # its config.json only: the timing needs shapes, not weights
        fields = dict(hub_config(source.hub, source=source.text))
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    else:
        config = config_for(source.preset)
    seq, batch = (int(args[1]) if len(args) > 1 else 512), (int(args[2]) if len(args) > 2 else 4)
    mode = args[3] if len(args) > 3 else "train"
    torch.set_num_threads(best_threads())
    precision, why = resolve_precision("auto", "cpu", 1 if mode == "train" else None,
                                       Workload.of(config, seq, batch, mode), refresh=refresh)
    return f"{args[0]} at {batch} x {seq} tokens ({mode}): {precision}; {why}"


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.probe`` prints the plan; ``--refresh`` measures again;
    ``--precision MODEL [SEQ [BATCH [train|forward]]]`` prints what ``precision: auto`` picks."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--precision"]:
        print(_precision_report(args[1:]))
        return 0
    if args[:1] == ["--worker"]:
        print(f"{_workload(int(args[1]), float(args[2])):.3f}")
        return 0
    if args[:1] == ["--precision-worker"]:
        print("%.6g %.6g" % _precision_workload(json.loads(args[1])))
        return 0
    plan = machine_plan(refresh="--refresh" in args, use_env="--ignore-env" not in args)
    print(plan.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
