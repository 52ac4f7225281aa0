"""Pilot-run calibration: fit the token term ``L(D) = a + k * D**-beta`` on the user's own curve.

A card fitted on small parents is not trusted 10^4x out, but a short pilot on the real model
measures the curve where the decision is made. This module reads a pilot curve (an engine run
directory, a run store holding it, or a CSV/parquet table of ``tokens, loss [, loss_before]``)
and fits the token term at the user's N0 and ratio. ``planner recommend --pilot`` presents the
fit; the engine's online stop (``fitting.online``) runs the same fit on a run's curve so far.

The fit is Bayesian on a grid over ``beta`` (why not a penalised point fit: the answer needs
intervals, and a pilot of the first 5-30 % of a run cannot separate the asymptote from the
curvature; the posterior says how much it cannot):

- given beta the model is linear in (a, k): with flat priors on them and Jeffreys' on the
  noise, the marginal likelihood is ``|X'WX|^-1/2 * RSS_W^-(n-2)/2`` (closed form, no
  optimiser). The noise is taken as relative (sd proportional to the loss, weights
  ``W = 1/L^2``; an assumption, the one the pilot backtest draws from): on relative noise the
  unweighted fit's D* intervals covered 1-2 points less;
- the prior on beta is flat on [0.02, 1.5] (pilot-only mode) or, with a card (pilot + card),
  the mixture ``w K + (1 - w) U`` of the card's own evidence K and that flat prior U. K is the
  card's bootstrap of beta smoothed by a Gaussian kernel (Silverman's width, at least 0.02,
  widened by 0.05 per decade the query lies outside the card: beta drifts with scale). The
  prior weight ``w = 0.5 * 2**-reach``, reach being how many decades the query lies outside
  the card's fitted range: inside it, the card and the flat prior start even; at 8B from
  parents of at most 411K (4.3 decades) the card starts at 0.026. A mixture, not a narrower
  or wider kernel, because the failure it guards against is not a small shift but the card
  being wrong at the user's scale (the bundled cards' 0.41-0.57 against a true 0.2): Bayes
  weighs each component by its marginal likelihood, so a pilot that contradicts the card
  moves the mass to U (the card component's posterior weight falls towards 0) and a short
  pilot that cannot resolve beta keeps the prior's split, borrowing the card only as far as
  the card is trusted there. The result records that posterior weight (``card_weight``).
  ``benchmarks/pilot_backtest.py --synthetic`` measures the coverage this gives (docs/pilot.md).
  Only beta carries over: the card's a and k at the user's N0 are extrapolated 10^4x with
  intervals spanning decades, so a prior on them would only add the card's extrapolation
  error back in;
- samples: beta from the grid posterior (jittered within its cell), sigma^2 from its scaled
  inverse chi-square, (a, k) from their conditional normal; samples with k <= 0 (loss rising
  with tokens) are rejected. The asymptote is not bounded by L0: an under-trained parent
  (the demo's tiny ones) keeps improving past its own loss when post-training goes on.

numpy and the csv module only; pyarrow only when the pilot is a parquet file or a run.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from data.cli import BadInput
from data.units import format_count
from fitting.criteria import Reference
from fitting.table import fit_points
from fitting.term import TokenTerm, percentile

if TYPE_CHECKING:  # pragma: no cover
    from fitting.card import LawCard

PILOT_BETA = (0.02, 1.5)
"""Flat prior support for beta without a card: P2 fits of post-training report 0.1-0.8."""
GRID = 400
N_SAMPLES = 4000
MIN_POINTS = 3
LOSS_COLUMNS = ("loss", "eval_loss")
N0_TOLERANCE = 0.1
"""A pilot parent within 10 % of --params is the same parent (counting conventions differ)."""
RATIO_TOLERANCE = 0.05
CARD_WEIGHT = 0.5
"""Prior probability that the card's beta holds at a query inside the card's range; it halves
with each decade outside (``CardPrior.weight``)."""
DRIFT = 0.05
"""Prior sd of beta's drift per decade outside the card's range: 4 decades out, +-0.2, the
spread of the token exponents published for post-training (0.1-0.8)."""
MIN_WIDTH = 0.02
"""Least kernel width: a tight bootstrap never forbids the pilot from moving beta a little."""
NO_SAMPLES_WIDTH = 0.1
"""Kernel width around a card's point beta when it carries no bootstrap samples."""


@dataclass(frozen=True)
class Pilot:
    """A pilot curve: points with tokens > 0, and what the pilot knows about itself."""

    path: str
    tokens: np.ndarray
    loss: np.ndarray
    loss_start: float | None
    """Eval loss at tokens == 0 (right after pruning), when the pilot has that row."""
    loss_before: float | None
    params_before: float | None
    ratio: float | None
    warmup_left_out: int = 0
    """Evaluations inside the learning-rate warm-up, left out of the fit (``fitting.table.fit_points``)."""

    @property
    def max_tokens(self) -> float:
        return float(self.tokens[-1])


def too_few_points(kept: int, warm: int) -> str:
    """Why a curve cannot be fitted yet ('' when it can)."""
    if kept >= MIN_POINTS:
        return ""
    inside = f" ({warm} more inside the learning-rate warm-up, left out: a longer run gives them)" if warm else ""
    return (f"{kept} evaluation point(s) with tokens > 0{inside}; the token term has 3 parameters, so at least "
            f"{MIN_POINTS} are needed")


# -- reading -----------------------------------------------------------------------------------

def read_pilot(path: str | Path, *, ratio: float | None = None, method: str | None = None) -> Pilot:
    """A pilot from a run directory, a run store (one matching run), a CSV or a parquet file.

    Raises:
        BadInput: missing path, no loss column, fewer than 3 points, NaN, non-monotone tokens,
            a store with no or several runs matching ``ratio``/``method``.
    """
    p = Path(path)
    if not p.exists():
        raise BadInput(f"--pilot {str(p)!r} does not exist; pass a run directory, a run store, or a "
                       "CSV/parquet curve with columns tokens, loss [, loss_before]")
    if p.is_dir():
        return _from_run(_pick_run(p, ratio, method))
    if p.suffix.lower() == ".csv":
        cols = _read_csv(p)
    elif p.suffix.lower() in (".parquet", ".pq"):
        cols = _read_parquet(p)
    else:
        raise BadInput(f"--pilot {str(p)!r}: unknown file type {p.suffix!r}; allowed: .csv, .parquet, "
                       "a run directory or a run store")
    return _from_columns(str(p), cols, {})


def _read_csv(path: Path) -> dict[str, list[str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise BadInput(f"--pilot {str(path)!r} is empty; expected a header with columns tokens, loss")
        cols: dict[str, list[str]] = {name.strip(): [] for name in reader.fieldnames}
        for row in reader:
            for name in reader.fieldnames:
                cols[name.strip()].append((row.get(name) or "").strip())
    return cols


def _read_parquet(path: Path) -> dict[str, list]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own error types for a damaged file
        raise BadInput(f"--pilot {str(path)!r} is not a readable parquet file ({type(exc).__name__})") from None
    return {name: table[name].to_pylist() for name in table.column_names}


def _pick_run(root: Path, ratio: float | None, method: str | None) -> Path:
    """The run directory itself, or the one run of a store matching the query."""
    if (root / "run.json").is_file():
        return root
    runs = sorted(d for d in root.iterdir() if (d / "run.json").is_file()) if root.is_dir() else []
    if not runs:
        raise BadInput(f"--pilot {str(root)!r} is a directory without run.json or */run.json; pass an engine "
                       "run directory, a run store or a CSV/parquet curve")
    if len(runs) == 1:
        return runs[0]
    match = [d for d in runs if _matches(json.loads((d / "run.json").read_text()).get("meta", {}), ratio, method)]
    if len(match) != 1:
        raise BadInput(f"--pilot {str(root)!r} holds {len(runs)} runs and {len(match)} match the query's "
                       f"ratio/method; pass one run directory, e.g. {runs[0]}")
    return match[0]


def _matches(meta: dict, ratio: float | None, method: str | None) -> bool:
    if method is not None and meta.get("method") not in (None, method):
        return False
    got = meta.get("ratio")
    return ratio is None or got is None or abs(float(got) - ratio) <= RATIO_TOLERANCE


def _from_run(run_dir: Path) -> Pilot:
    record = json.loads((run_dir / "run.json").read_text())
    curve = run_dir / "curve.parquet"
    if not curve.is_file():
        raise BadInput(f"--pilot run {str(run_dir)!r} has no curve.parquet yet (no evaluation written)")
    meta = record.get("meta") or {}
    known = {k: meta.get(k) for k in ("loss_before", "params_before", "ratio")}
    return _from_columns(str(run_dir), _read_parquet(curve), known)


def _floats(values: list, name: str, where: str) -> np.ndarray:
    try:
        out = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        bad = next(v for v in values if not _is_float(v))
        raise BadInput(f"--pilot {where}: column {name!r} holds {bad!r}, not a number") from None
    if not np.all(np.isfinite(out)):
        raise BadInput(f"--pilot {where}: column {name!r} holds NaN or inf at row "
                       f"{int(np.argmin(np.isfinite(out))) + 1}; drop or fix that row")
    return out


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _constant(cols: dict, name: str, where: str, known: float | None) -> float | None:
    """A per-curve constant column (loss_before, params_before, ratio), or the run's metadata."""
    if name in cols and any(v not in ("", None) for v in cols[name]):
        values = _floats([v for v in cols[name] if v not in ("", None)], name, where)
        return float(values[0])
    return None if known is None else float(known)


def _from_columns(where: str, cols: dict[str, list], known: dict) -> Pilot:
    loss_col = next((c for c in LOSS_COLUMNS if c in cols), None)
    if loss_col is None or "tokens" not in cols:
        raise BadInput(f"--pilot {where}: needs columns tokens and loss (or eval_loss); has "
                       f"{', '.join(cols) or 'none'}")
    tokens, loss = _floats(cols["tokens"], "tokens", where), _floats(cols[loss_col], loss_col, where)
    if np.any(np.diff(tokens) <= 0):
        i = int(np.argmax(np.diff(tokens) <= 0))
        raise BadInput(f"--pilot {where}: tokens must increase row by row; row {i + 2} has {tokens[i + 1]:g} "
                       f"after {tokens[i]:g}")
    if np.any(tokens < 0) or np.any(loss <= 0):
        raise BadInput(f"--pilot {where}: tokens must be >= 0 and losses > 0 (nats)")
    start = float(loss[0]) if tokens[0] == 0 else None
    lr = _floats(cols["lr"], "lr", where) if "lr" in cols and all(_is_float(v) for v in cols["lr"]) else None
    keep, warm = fit_points(tokens, lr)
    if why := too_few_points(int(keep.sum()), warm):
        raise BadInput(f"--pilot {where}: {why}")
    return Pilot(where, tokens[keep], loss[keep], start,
                 _constant(cols, "loss_before", where, known.get("loss_before")),
                 _constant(cols, "params_before", where, known.get("params_before")),
                 _constant(cols, "ratio", where, known.get("ratio")), warm)


def check_consistent(pilot: Pilot, n0: float, ratio: float) -> None:
    """Exit 2 when the pilot's own N0 or ratio contradicts --params / --ratio."""
    if pilot.params_before is not None and abs(pilot.params_before / n0 - 1) > N0_TOLERANCE:
        raise BadInput(f"--pilot {pilot.path} was run on a parent of {pilot.params_before:.4g} params but --params "
                       f"gives {n0:.4g}; pass the pilot's parent size (or the right pilot)")
    if pilot.ratio is not None and abs(pilot.ratio - ratio) > RATIO_TOLERANCE:
        raise BadInput(f"--pilot {pilot.path} was pruned at ratio {pilot.ratio:.3g} but --ratio is {ratio:g}; "
                       "a pilot calibrates only its own ratio")


def pilot_reference(pilot: Pilot) -> Reference:
    """Where the recoverable gap starts: the pilot's measured loss at tokens == 0, else the
    law's loss at its first evaluation (the token term diverges at D = 0)."""
    if pilot.loss_start is not None:
        return Reference(loss=pilot.loss_start, source=(
            f"the pilot's measured loss right after pruning ({pilot.loss_start:.4f})"))
    return Reference(tokens=float(pilot.tokens[0]), source=(
        f"the law's loss at the pilot's first evaluation ({format_count(pilot.tokens[0])} tokens)"))


# -- the prior on beta --------------------------------------------------------------------------

@dataclass(frozen=True)
class CardPrior:
    """What a card says about beta at the query, and how far the query lies outside the card.

    ``betas`` are the card's token exponents at the query's axes, one per bootstrap sample
    (a card without samples gives its point alone); ``reach`` is how many decades the query
    lies outside the card's fitted range on its worst axis (0 inside; 8B against parents of
    at most 411K is 4.3).
    """

    betas: np.ndarray
    reach: float = 0.0

    @property
    def weight(self) -> float:
        """Prior probability of the card's component: ``CARD_WEIGHT * 2**-reach``."""
        return CARD_WEIGHT * 2.0 ** -max(self.reach, 0.0)

    @property
    def bandwidth(self) -> float:
        """Kernel width: Silverman's (floored) widened by ``DRIFT`` per decade of reach."""
        b = self.betas[np.isfinite(self.betas)]
        base = NO_SAMPLES_WIDTH if len(b) < 2 else max(1.06 * float(np.std(b)) * len(b) ** -0.2, MIN_WIDTH)
        return math.hypot(base, DRIFT * max(self.reach, 0.0))

    def density(self, grid: np.ndarray) -> np.ndarray:
        """The kernel density of the card's betas on ``grid``, normalised to 1 over it."""
        b, h = self.betas[np.isfinite(self.betas)], self.bandwidth
        dens = np.exp(-0.5 * ((grid[:, None] - b[None, :]) / h) ** 2).mean(axis=1)
        return _normalised(dens, grid)


def card_prior(card: "LawCard", **axes: float) -> CardPrior:
    """The card's token exponent at ``axes`` as the prior of a pilot fit.

    ``axes`` are the law's own axis names except the token axis and the offset (e.g. P2:
    ``params_before``, ``ratio``); the reach is the largest ``|log10|`` factor by which one of
    them lies outside the card's fitted range.
    """
    _, beta = card.law.token_scale(card.params_array, **axes)
    boot = card.bootstrap_params
    point = np.atleast_1d(np.asarray(np.squeeze(beta), dtype=float))
    betas = point if boot is None or len(boot) == 0 else np.ravel(card.law.token_scale(boot, **axes)[1])
    finite = np.asarray(betas, dtype=float)[np.isfinite(betas)]
    return CardPrior(finite if len(finite) else point, reach=card_reach(card, **axes))


def card_reach(card: "LawCard", **axes: float) -> float:
    """Decades the query lies outside the card's fitted range, on its worst axis (0 inside)."""
    reach = 0.0
    for axis, value in axes.items():
        span = card.axis_range(axis)
        if span is None or not (value > 0 and span[0] > 0):
            continue
        reach = max(reach, math.log10(value / span[1]), math.log10(span[0] / value))
    return reach


def _normalised(dens: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return dens / (dens.sum() * (grid[1] - grid[0]))


def log_prior(grid: np.ndarray, prior: CardPrior | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The log prior density of beta on ``grid`` and, under a card, each point's card share.

    Without a card: flat on ``PILOT_BETA``. With one: the mixture ``w K + (1 - w) U`` of the
    card's kernel density K and that flat density U (the module docstring says why); the
    second array is ``w K / (w K + (1 - w) U)`` per grid point.
    """
    flat = _normalised(((grid >= PILOT_BETA[0]) & (grid <= PILOT_BETA[1])).astype(float), grid)
    if prior is None:
        with np.errstate(divide="ignore"):
            return np.log(flat), None
    card = prior.weight * prior.density(grid)
    mix = card + (1.0 - prior.weight) * flat
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(mix), np.where(mix > 0, card / mix, 0.0)


# -- the fit -----------------------------------------------------------------------------------

def fit_pilot(pilot: Pilot, *, prior: CardPrior | None = None, loss_before: float | None = None,
              seed: int = 0, level: float = 0.95) -> TokenTerm:
    """The posterior of (a, k, beta) given the pilot; the point is the posterior median.

    ``prior`` switches on the card's mixture prior on beta (see the module docstring); the
    result's ``card_weight`` is then the card component's posterior probability.
    ``loss_before`` is accepted for the record only (see the docstring: it bounds nothing).
    """
    d, y = pilot.tokens, pilot.loss
    lo, hi = _prior_span(prior)
    grid = np.linspace(lo, hi, GRID)
    scale = float(d[-1])  # x = (D / D_max)^-beta keeps X'X well conditioned
    x = (d[None, :] / scale) ** -grid[:, None]                       # [G, n]
    n = len(d)
    wt = (y.min() / y) ** 2                                          # relative noise (docstring)
    ls = _least_squares(x, y, wt)
    rss = np.maximum(ls.rss, 1e-300)
    prior_logp, card_share = log_prior(grid, prior)
    with np.errstate(invalid="ignore", divide="ignore"):
        logp = -0.5 * np.log(ls.det) - 0.5 * (n - 2) * np.log(rss) + prior_logp
    logp = np.where(np.isfinite(logp) & (ls.det > 0), logp, -np.inf)
    if not np.isfinite(logp).any():
        raise BadInput(f"--pilot {pilot.path}: the curve cannot be fitted by L = a + k / D^beta")
    w = np.exp(logp - logp.max())
    rng = np.random.default_rng(seed)
    idx = rng.choice(GRID, size=N_SAMPLES, p=w / w.sum())
    step = grid[1] - grid[0]
    beta = grid[idx] + step * (rng.random(N_SAMPLES) - 0.5)
    # conditional on beta: (a, k_s) ~ N(LS, sigma^2 (X'WX)^-1), sigma^2 ~ RSS_W / chi2(n - 2)
    ls = _least_squares((d[None, :] / scale) ** -beta[:, None], y, wt)
    sigma2 = ls.rss / rng.chisquare(n - 2, N_SAMPLES)
    var_a, var_k, cov = sigma2 * ls.sxx / ls.det, sigma2 * ls.sw / ls.det, -sigma2 * ls.sx / ls.det
    z1, z2 = rng.standard_normal((2, N_SAMPLES))
    l11 = np.sqrt(var_a)
    l21 = cov / l11
    l22 = np.sqrt(np.maximum(var_k - l21 ** 2, 0.0))
    a_s = ls.a + l11 * z1
    k_s = (ls.k + l21 * z1 + l22 * z2) * scale ** beta              # back to k in raw tokens
    ok = (k_s > 0) & np.isfinite(a_s) & np.isfinite(k_s)
    if ok.sum() < 0.05 * N_SAMPLES:
        raise BadInput(f"--pilot {pilot.path}: the loss does not fall with tokens: the pilot gives no "
                       "token term to extrapolate")
    samples = np.column_stack([a_s[ok], k_s[ok], beta[ok]])
    med = [percentile(samples[:, j], 50.0) for j in range(3)]  # np.median imports numpy.ma (~25 ms)
    # the card component's posterior probability: its share of the posterior mass on the grid
    card_weight = None if card_share is None else float(np.sum(w * card_share) / w.sum())
    return TokenTerm(float(med[0]), float(med[1]), float(med[2]), samples, level=level, relative=False,
                     median_point=True, card_weight=card_weight)


@dataclass(frozen=True)
class _Fit:
    """Weighted least squares of ``y = a + k x`` for each row of ``x`` ``[G, n]``."""

    sw: float
    sx: np.ndarray
    sxx: np.ndarray
    det: np.ndarray
    """|X'WX| per row."""
    a: np.ndarray
    k: np.ndarray
    rss: np.ndarray


def _least_squares(x: np.ndarray, y: np.ndarray, wt: np.ndarray) -> _Fit:
    sw = float(wt.sum())
    sx, sxx, sy, sxy = (wt * x).sum(1), (wt * x * x).sum(1), float((wt * y).sum()), (wt * x * y).sum(1)
    det = sw * sxx - sx ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        k = (sw * sxy - sx * sy) / det
        a = (sy - k * sx) / sw
    rss = (wt * (y[None, :] - a[:, None] - k[:, None] * x) ** 2).sum(1)
    return _Fit(sw, sx, sxx, det, a, k, rss)


def _prior_span(prior: CardPrior | None) -> tuple[float, float]:
    """The grid: the pilot's flat support, widened under a card to hold its samples."""
    if prior is None:
        return PILOT_BETA
    b = prior.betas[np.isfinite(prior.betas)]
    return min(PILOT_BETA[0], float(np.min(b)) * 0.8), max(PILOT_BETA[1], float(np.max(b)) * 1.2)
