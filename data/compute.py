"""Accelerators and the compute -> GPU-hours -> cost conversion (torch-free).

One cost model for the engine (``engine grid plan --estimate``) and the planner: both import
this module, which sits below them in the import graph (engine -> data, planner -> data).

Peak numbers are dense BF16 tensor-core FLOP/s from the vendors' data sheets (the sparse
"2x" figures are not used: training kernels are dense, 2:4 masks included). The H200 has the
H100's compute die, so the same peak; it differs in memory (141 GB HBM3e). Memory is the
card's HBM in GiB as the driver reports it (the A100 entry is the 80 GB part). Prices are
indicative on-demand cloud prices per GPU-hour in USD (late 2025); pass ``--price`` for yours.
"""

from __future__ import annotations

from dataclasses import dataclass

from data.cli import BadInput

DEFAULT_GPU = "h100"
DEFAULT_MFU = 0.4
"""Model FLOPs utilisation typical of a well-tuned dense LLM training job (35-45 %)."""
MFU_RANGE = (0.01, 0.9)
"""Plausible model FLOPs utilisation: below 1 % is a stalled job, above 90 % no dense training
run sustains (the best published LLM runs report 40-60 %)."""
PRICE_RANGE = (0.0, 1000.0)
"""USD per GPU-hour: free (an owned cluster) up to well beyond any on-demand price."""
FLOPS_PER_PARAM_TOKEN = 6.0
"""Forward + backward of a dense decoder: ~6 FLOPs per parameter per token (Kaplan et al.)."""
FORWARD_FLOPS_PER_PARAM_TOKEN = 2.0
"""A forward pass alone (a KD teacher, calibration, evaluation): ~2 FLOPs per parameter per token."""


@dataclass(frozen=True)
class Gpu:
    """One accelerator type."""

    name: str
    peak_flops: float
    """Dense BF16 FLOP/s."""
    price: float
    """Indicative USD per GPU-hour."""
    memory_gib: float
    """Device memory (HBM) in GiB."""


GPUS: dict[str, Gpu] = {
    "h100": Gpu("h100", 989e12, 2.50, 80.0),
    "h200": Gpu("h200", 989e12, 3.50, 141.0),
    "a100": Gpu("a100", 312e12, 1.50, 80.0),
}


@dataclass(frozen=True)
class Compute:
    """The cost of some training FLOPs on one accelerator type."""

    flops: float
    gpu: str
    peak_flops: float
    mfu: float
    gpu_hours: float
    price_per_gpu_hour: float
    cost_usd: float
    formula: str = "6 * params_after * tokens"
    """Which parameters are counted: a sparse model on dense kernels costs 6 * params_before."""

    def to_dict(self) -> dict[str, float | str]:
        return {"flops": self.flops, "flops_formula": self.formula, "gpu": self.gpu,
                "peak_flops": self.peak_flops, "mfu": self.mfu, "gpu_hours": self.gpu_hours,
                "price_per_gpu_hour": self.price_per_gpu_hour, "cost_usd": self.cost_usd}


def get_gpu(name: str) -> Gpu:
    """Raises BadInput naming the known accelerators."""
    key = name.strip().lower()
    if key not in GPUS:
        raise BadInput(f"unknown --gpu {name!r}; allowed: {', '.join(GPUS)}")
    return GPUS[key]


def flops_cost(flops: float, gpu: Gpu, mfu: float = DEFAULT_MFU, price: float | None = None,
               formula: str = "flops") -> Compute:
    """GPU-hours to run ``flops`` at ``mfu`` of ``gpu``'s peak, and their price.

    Raises:
        BadInput: ``mfu`` outside :data:`MFU_RANGE` or ``price`` outside :data:`PRICE_RANGE`.
    """
    check_mfu(mfu)
    price = gpu.price if price is None else check_price(price)
    hours = flops / (gpu.peak_flops * mfu) / 3600.0
    return Compute(flops, gpu.name, gpu.peak_flops, mfu, hours, price, hours * price, formula)


def compute_cost(params_after: float, tokens: float, gpu: Gpu, mfu: float = DEFAULT_MFU,
                 price: float | None = None, formula: str = "6 * params_after * tokens") -> Compute:
    """``6 N D`` FLOPs, GPU-hours at ``mfu`` of peak, and their price.

    ``params_after`` is whichever count the kernels really multiply (``formula`` names it).
    """
    return flops_cost(FLOPS_PER_PARAM_TOKEN * params_after * tokens, gpu, mfu, price, formula)


def check_mfu(mfu: float) -> float:
    """``mfu`` within :data:`MFU_RANGE`, else BadInput naming the range."""
    lo, hi = MFU_RANGE
    if not lo <= mfu <= hi:  # NaN fails both comparisons
        raise BadInput(f"bad --mfu {mfu!r}: model FLOPs utilisation must be in [{lo:g}, {hi:g}], e.g. 0.4")
    return mfu


def check_price(price: float) -> float:
    """``price`` within :data:`PRICE_RANGE`, else BadInput naming the range."""
    lo, hi = PRICE_RANGE
    if not lo <= price <= hi:
        raise BadInput(f"bad --price {price!r}: USD per GPU-hour must be in [{lo:g}, {hi:g}], e.g. 2.5")
    return price
