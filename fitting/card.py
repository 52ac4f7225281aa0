"""The law card: the result of a fit *is* the card (one class, like lmfit's ModelResult).

``fitting.fit(data, config)`` returns a :class:`LawCard`; ``card.save(path)`` writes its JSON
(docs/design-contract.md layout) and ``LawCard.load(path)`` reads it back into the same class, so the planner
and the reports use exactly what the fit produced::

    card = fit(load_data("runs/", "p2", method="depth"), FitConfig(n_bootstrap=200))
    card.save("card.json"); card = LawCard.load("card.json")
    card.predict(params_before=8e9, ratio=0.5, tokens=1e9, loss_before=2.1)   # point
    card.band(params_before=8e9, ratio=0.5, tokens=1e9, loss_before=2.1)      # CI of the mean law
    card.prediction_band(params_before=8e9, ratio=0.5, tokens=1e9, loss_before=2.1)  # a new run
    card.d_star(1e-3, params_before=8e9, ratio=0.5)                             # slope criterion
    card.outside_range(params_before=70e9); card.identifiability_notes()

Two kinds of interval, never mixed up: the **confidence interval** (``ci``, ``band``,
``interval``) is the run bootstrap's uncertainty about the *mean law*; the **prediction
interval** (``prediction_band``) adds the run-to-run and point scatter the fit measured, and
is what a *new run* at that point should fall in.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data.cli import BadInput
from data.units import format_count
from fitting.intervals import draw_bounds, percentile_levels  # noqa: F401 (percentile_levels re-exported)
from fitting.laws import Law, get_law
from fitting.sections import (DataInfo, Derived, FitInfo, Identified, Intervals, Scatter,
                               json_float, read_identifiable)
from fitting.criteria import Reference
from fitting.term import TokenTerm

if TYPE_CHECKING:  # pragma: no cover
    from fitting.table import FitData

CARD_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 cards (before prediction intervals and run reports) still load."""
REQUIRED = ("law", "version", "params", "fit", "range", "data")
EDGE_SLACK = 0.01
"""A query within 1% of the card's fitted edge is at the edge, not beyond it: a parent of
134.5M parameters is asked about as "135M", its L0 of 3.19996 as 3.2."""
CI_KIND = ("confidence interval of the mean law: hull of the run bootstrap's percentile interval "
           "(widened for the number of runs) and the leave-one-run-out jackknife-t interval")
PI_KIND = ("prediction interval for a new run: bootstrap of the mean law plus the measured "
           "run-to-run and point scatter")
PI_DRAWS = 16
"""Scatter draws per bootstrap sample in a prediction interval (seeded: cards are reproducible)."""


def beyond_edge(value: float, lo: float, hi: float) -> int:
    """+1 above ``hi``, -1 below ``lo``, 0 inside or within ``EDGE_SLACK`` of an edge: the one
    rule the card's range notes, the planner's range warnings and its verdict all use."""
    if value > hi * (1 + EDGE_SLACK):
        return 1
    if value < lo * (1 - EDGE_SLACK):
        return -1
    return 0


def _rows(values: Any, n: int) -> np.ndarray:
    """``f(samples)`` as ``[n, m]`` (a law broadcasts a scalar query to ``[n]``)."""
    return np.asarray(values, float).reshape(n, -1)


def _opt_str(value: Any) -> str | None:
    """A card's recorded slot value, None for "not recorded" and the catch-alls."""
    return None if value in (None, "", "any", "all") else str(value)


@dataclass(frozen=True)
class LawCard:
    """A fitted law: parameters, intervals, metrics, identifiability, provenance.

    Attributes mirror the card JSON (docs/design-contract.md); its sections are typed, frozen
    objects (``fitting.sections``), read from any card version there: ``ci`` holds ``level``,
    per-parameter ``params`` intervals and ``derived`` decision quantities; ``fit`` how it was
    fitted; ``data`` what it was fitted on; ``runs`` the per-run residual report; ``scatter``
    the run-to-run and point scatter behind prediction intervals; ``identifiable`` one entry
    per parameter; ``diagnosis`` what the fit itself revealed (bounds, degenerate terms, sloppy
    directions). A section given as a plain mapping (a fit builds them so) is read on creation.
    """

    law: Law
    params: dict[str, float]
    version: int
    ci: Intervals
    identifiable: Mapping[str, Identified]
    fit: FitInfo
    metrics: dict[str, float | None]
    range: dict[str, dict[str, float]]
    data: DataInfo
    created: str | None = None
    success: bool = True
    message: str = ""
    objective: float = math.nan
    notes: tuple[str, ...] = ()
    runs: tuple[dict, ...] = ()
    scatter: Scatter = field(default_factory=Scatter)
    diagnosis: tuple[str, ...] = ()
    bootstrap_params: np.ndarray | None = field(default=None, repr=False)
    jackknife_params: np.ndarray | None = field(default=None, repr=False)
    """Leave-one-run-out refits ``[n_runs, P]`` (None: cards written before them, or a run
    whose removal leaves the law unidentifiable): the second half of every interval."""
    path: Path | None = field(default=None, compare=False)
    """The file the card was read from (None: a fit's own result, or a card made in memory)."""
    blob: bytes | None = field(default=None, compare=False, repr=False)
    """That file's bytes, as read (hashed only when :attr:`sha256` is asked for)."""

    @functools.cached_property
    def sha256(self) -> str | None:
        """sha256 of the file's bytes: which exact card an answer or a page came from.

        Computed on first use: hashlib loads OpenSSL, a few ms of the planner's cold start,
        which no planner answer needs (reports do)."""
        import hashlib

        return None if self.blob is None else hashlib.sha256(self.blob).hexdigest()

    def __post_init__(self) -> None:
        for name, section in (("ci", Intervals), ("fit", FitInfo), ("data", DataInfo), ("scatter", Scatter)):
            object.__setattr__(self, name, section.read(getattr(self, name)))
        object.__setattr__(self, "identifiable", read_identifiable(self.identifiable))

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> "LawCard":
        """Read a card JSON; ``BadInput`` names what is wrong."""
        return load_card(path)

    def save(self, path: str | Path, *, with_samples: bool = True, force: bool = True) -> Path:
        """Write the card atomically; ``force=False`` refuses an existing file."""
        return save_card(self, path, with_samples=with_samples, force=force)

    # -- provenance -----------------------------------------------------------------------

    @property
    def family(self) -> str | None:
        """The model family the card was fitted on (None: not recorded, or any)."""
        return _opt_str(self.data.family)

    @property
    def method(self) -> str | None:
        """The pruning method the card was fitted on (None: not recorded, or any)."""
        return _opt_str(self.data.method)

    @property
    def methods(self) -> tuple[str, ...]:
        """Methods the card was fitted on (empty: not recorded, applies to any)."""
        return tuple(m for m in (self.data.method or "").split(",") if m)

    def provenance(self) -> dict[str, Any]:
        """What a user needs to trust (or distrust) the card."""
        data, fit = self.data, self.fit
        boot = self.bootstrap_params
        return {"path": str(self.path), "law": self.law.name, "version": self.version,
                "family": self.family, "method": self.method, "source": data.source,
                "content_hash": data.content_hash, "created": self.created, "n_runs": fit.n_runs,
                "n_points": fit.n_points, "n_bootstrap": 0 if boot is None else len(boot),
                "n_jackknife": 0 if self.jackknife_params is None else len(self.jackknife_params),
                "not_identified": self.not_identified(),
                "identifiability": self.identifiability_notes(), "outlier_runs": self.outliers()}

    # -- values -----------------------------------------------------------------------------

    @property
    def params_array(self) -> np.ndarray:
        """Parameters in ``law.params`` order (``law.predict`` takes this)."""
        return np.array([self.params[name] for name in self.law.params])

    @property
    def level(self) -> float:
        return self.ci.level

    @property
    def units(self) -> int | None:
        """Runs the bootstrap resampled (what :func:`percentile_levels` widens for)."""
        return self.ci.units

    def percentiles(self, level: float | None = None) -> tuple[float, float]:
        """Percentiles of the bootstrap draws bounding a ``level`` interval (default: the card's)."""
        return percentile_levels(self.level if level is None else level, self.units)

    @property
    def intervals(self) -> dict[str, tuple[float, float] | None]:
        """Confidence interval per parameter (None: no bootstrap, or pinned)."""
        return {name: self.ci.params.get(name) for name in self.law.params}

    @property
    def derived(self) -> dict[str, Derived]:
        """Decision quantities at the edge of the data, with their intervals."""
        return dict(self.ci.derived)

    def predict(self, **axes: float | np.ndarray) -> np.ndarray:
        """Point prediction of the target at ``axes``."""
        return self.law.predict(self.params_array, **axes)

    def asymptote(self, **axes: float | np.ndarray) -> np.ndarray:
        """The loss as the token budget grows without bound (the law's own closed form)."""
        return self.law.asymptote(self.params_array, **axes)

    def tokens_for_loss(self, target: float, **axes: float | np.ndarray) -> np.ndarray:
        """Smallest budget reaching ``target`` (NaN at or below the asymptote)."""
        return self.law.tokens_for_loss(self.params_array, target, **axes)

    def d_star(self, slope: float, **axes: float | np.ndarray) -> np.ndarray:
        """Budget where one more 1e9 tokens gains ``slope`` nats (slope criterion)."""
        return self.law.d_star(self.params_array, slope, **axes)

    def optimal_tokens(self, N0: float, rho: float, slope: float) -> float:
        """D* at model size ``N0`` and ratio ``rho`` (the law's size and ratio axes)."""
        return float(np.squeeze(self.d_star(slope, **self._size_ratio(N0, rho))))

    def optimal_tokens_interval(self, N0: float, rho: float, slope: float,
                                level: float | None = None) -> tuple[float, float] | None:
        """Confidence interval of D* over the bootstrap samples."""
        axes = self._size_ratio(N0, rho)
        return self.interval(lambda p: self.law.d_star(p, slope, **axes), level)

    def _size_ratio(self, n0: float, rho: float) -> dict[str, float]:
        if self.law.size_axis is None or self.law.ratio_axis is None:
            raise BadInput(f"optimal tokens at (N0, rho) need a law with size and ratio axes; "
                           f"this card's law is {self.law.name!r}")
        return {self.law.size_axis: n0, self.law.ratio_axis: rho}

    # -- the planner's questions: the law at one parent size and ratio ------------------

    def query(self, size: float, ratio: float, tokens: float | None = None,
              offset: float | None = None) -> dict[str, float]:
        """The law's axes for a parent of ``size`` pruned at ``ratio`` (and, when given, a budget
        of ``tokens`` and the law's ``offset``, P2: the parent's L0)."""
        law = self.law
        at = {law.size_axis: size, law.ratio_axis: ratio}
        if tokens is not None:
            at[law.token_axis] = tokens
        if law.offset and offset is not None:
            at[law.offset] = offset
        return at

    def token_term(self, size: float, ratio: float, offset: float | None) -> TokenTerm:
        """The law at (size, ratio) as ``a + k D^-beta``, with its run-bootstrap and jackknife.

        ``offset`` is the law's offset axis (P2: the parent's L0); None gives a relative term
        (dL above it). The planner's card answers and the report's D* pages both start here, so
        one card gives one D* wherever it is read.
        """
        law = self.law
        at = self.query(size, ratio, offset=0.0 if offset is None else offset)

        def cols(params: np.ndarray) -> np.ndarray:
            k, beta = law.token_scale(params, **at)
            a = np.ravel(law.asymptote(params, **at))
            return np.column_stack([a, np.ravel(k) * np.ones_like(a), np.ravel(beta) * np.ones_like(a)])

        point = cols(self.params_array)[0]
        boot, jack = self.bootstrap_params, self.jackknife_params
        return TokenTerm(float(point[0]), float(point[1]), float(point[2]),
                         None if boot is None or len(boot) == 0 else cols(boot), level=self.level,
                         relative=offset is None, units=self.units,
                         jackknife=None if jack is None or len(jack) == 0 else cols(jack),
                         floor=0.0 if offset is None else float(offset))

    def reference(self, size: float) -> Reference:
        """D_ref of a card-only recover answer: the card's first fitted budget per parameter of
        its largest parent, times ``size`` (the same point of recovery in tokens per parameter)."""
        law = self.law
        tokens, sizes = self.axis_range(law.token_axis), self.axis_range(law.size_axis)
        if tokens is None or not tokens[0] > 0 or sizes is None:
            where = "the card" if self.path is None else repr(str(self.path))
            raise BadInput(f"law card {where} records no {law.token_axis}/{law.size_axis} range; "
                           "the recover criterion needs it (use the slope criterion, or a pilot)")
        per_param = tokens[0] / sizes[1]
        return Reference(tokens=per_param * size, source=(
            f"the law's loss at D_ref = {format_count(per_param * size)} tokens (the card's first fitted budget, "
            f"{per_param:.3g} tokens per parent parameter, times N0)"))

    # -- intervals -------------------------------------------------------------------------

    def interval(self, f: Callable[[np.ndarray], np.ndarray], level: float | None = None,
                 floor: float | None = None, min_finite: float = 1) -> tuple[float, float] | None:
        """Confidence interval of the scalar ``f(params)`` (None without bootstrap samples, or
        with fewer than ``min_finite`` defined); ``floor``: the least value ``f`` can take (a
        loss: the law's offset, L0)."""
        lo, hi = self.bounds(f, level, min_finite=min_finite, floor=floor)
        if lo is None or not (np.isfinite(lo[0]) and np.isfinite(hi[0])):
            return None
        return float(lo[0]), float(hi[0])

    def bounds(self, f: Callable[[np.ndarray], np.ndarray], level: float | None = None,
               min_finite: float = 1, floor: Any = None) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        """Pointwise confidence interval of ``f(params)`` (a vector per parameter row): the
        hull of the bootstrap's expanded percentile and the jackknife-t interval
        (``fitting.intervals``). NaN where too few samples are defined; None without samples."""
        if self.bootstrap_params is None or len(self.bootstrap_params) == 0:
            return None, None
        with np.errstate(all="ignore"):
            boot = _rows(f(self.bootstrap_params), len(self.bootstrap_params))
            point = _rows(f(self.params_array[None]), 1)[0]
            jack = None if self.jackknife_params is None else _rows(f(self.jackknife_params),
                                                                     len(self.jackknife_params))
        return draw_bounds(boot, self.level if level is None else level, self.units,
                           point=point, jack=jack, min_finite=min_finite, floor=floor)

    def band(self, level: float | None = None, **axes: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise confidence band of the mean law at ``axes`` (None without samples)."""
        if self.bootstrap_params is None or len(self.bootstrap_params) < 2:
            return None
        return self.bounds(lambda p: self.law.predict(p, **axes), level, floor=self.loss_floor(**axes))

    def loss_floor(self, **axes: Any) -> Any:
        """The least loss the law can predict at ``axes`` whatever its parameters: its offset
        (P2: L0; every other term is >= 0), or None for a law without one."""
        off = self.law.offset
        return None if off is None or off not in axes else np.ravel(np.asarray(axes[off], float))

    def prediction_band(self, level: float | None = None,
                        **axes: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise prediction interval for a new run at ``axes``.

        The mean law's bootstrap draws (or the point fit without samples) plus normal scatter
        of sd ``scatter.sigma_new_run`` in the fit's space (log: multiplicative), hulled with
        the jackknife-t interval widened by the same scatter.
        """
        sigma = self.scatter.sigma_new_run
        if sigma is None or (self.bootstrap_params is not None and len(self.bootstrap_params) == 0):
            return None  # a bootstrap that could not vary: the mean law's spread is unknown
        space = self.scatter.space
        samples = self.bootstrap_params if self.bootstrap_params is not None else self.params_array[None]
        with np.errstate(all="ignore"):
            mean = _rows(self.law.predict(samples, **axes), len(samples))             # [B, n]
            point = _rows(self.law.predict(self.params_array[None], **axes), 1)[0]
            jack = None if self.jackknife_params is None else _rows(
                self.law.predict(self.jackknife_params, **axes), len(self.jackknife_params))
        noise = np.random.default_rng(0).standard_normal((PI_DRAWS,) + mean.shape) * sigma
        draws = mean * np.exp(noise) if space == "log" else mean + noise
        return draw_bounds(draws.reshape(-1, mean.shape[-1]), self.level if level is None else level,
                           self.units, point=point, jack=jack, scale=space, extra_sd=sigma)

    def points_in(self, runs: str | Path) -> "FitData":
        """The points of run store ``runs`` that this card's fit reads (its law, method, family,
        objective and warm-up rule): equal to the card's data hash when it was fitted there."""
        from fitting.table import load_data

        return load_data(runs, self.law, method=self.data.method or None, family=self.family,
                         objective=self.data.objective, after_warmup=self.data.after_warmup)

    # -- what the card can and cannot say -------------------------------------------------

    def axis_range(self, axis: str | None) -> tuple[float, float] | None:
        """``(min, max)`` of one law axis over the points the fit saw (None: not recorded)."""
        span = self.range.get(axis) if axis is not None else None
        return None if not isinstance(span, dict) else (float(span["min"]), float(span["max"]))

    def outside_range(self, **axes: float) -> list[str]:
        """One message per axis value outside what the fit saw (beyond ``EDGE_SLACK``), saying how far."""
        out = []
        for axis, value in axes.items():
            span = self.range.get(axis)
            if span is None:
                continue
            lo, hi = span["min"], span["max"]
            side = beyond_edge(value, lo, hi)
            if side > 0:
                out.append(f"{axis}={value:.4g} is {value / hi:.3g}x above the fitted max {hi:.4g}")
            elif side < 0:
                out.append(f"{axis}={value:.4g} is {lo / value:.3g}x below the fitted min {lo:.4g}")
        return out

    def not_identified(self) -> list[str]:
        """Names of parameters the data could not identify (pinned in the fit)."""
        return [n for n, r in self.identifiable.items() if not r.identified]

    def identifiability_notes(self) -> list[str]:
        """Every identifiability statement, one line each: pinned, at a bound, degenerate,
        weak (wide bootstrap interval), sloppy directions; first, the simpler law a degenerate
        fit collapsed to. The planner repeats them."""
        from fitting.identify import collapsed_law

        collapse = collapsed_law(self.law, self.identifiable)
        lines = [] if collapse is None else [f"collapsed: {collapse}"]
        for name, r in self.identifiable.items():
            if not r.identified:
                lines.append(f"{name} not identified, fixed at {r.fixed_at}: {r.reason}")
            elif r.bound:
                lines.append(r.bound)
            elif r.weak:
                lines.append(f"{name} {r.reason}")
        return lines + [d for d in self.diagnosis if d not in lines]

    def outliers(self) -> list[str]:
        """Run ids the residual report flags."""
        return [r["run_id"] for r in self.runs if r.get("outlier")]

    # -- rendering -------------------------------------------------------------------------

    def summary(self) -> str:
        """Human-readable report: parameters with intervals, metrics, identifiability."""
        law, level = self.law, self.level
        fit = self.fit
        lines = [f"law {law.name}: {law.formula}",
                 f"fit: {'converged' if self.success else 'NOT converged'} ({self.message}); "
                 f"{fit.n_points} points, {fit.n_runs} runs, objective "
                 f"{self.objective:.6g} (Huber delta={fit.delta or 0:g} on "
                 f"{fit.residuals}, summed)"]
        if fit.n_bootstrap and self.bootstrap_params is not None and not len(self.bootstrap_params):
            lines.append(f"bootstrap: {fit.n_bootstrap} run resamples, too few distinct mixtures of runs to vary: "
                         "none refitted, no intervals (see the note)")
        elif fit.n_bootstrap:
            lines.append(f"bootstrap: {fit.n_bootstrap} run resamples, each refit by the "
                         f"full multi-start; {fit.get('bootstrap_basin_changes', 0)} changed basin")
            if self.units is not None:
                lo, hi = self.percentiles()
                jack = ("" if self.jackknife_params is None else
                        f", hulled with the jackknife-t interval of {len(self.jackknife_params)} "
                        "leave-one-run-out refits")
                lines.append(f"intervals: percentiles {lo:.2f}-{hi:.2f} of the resamples (widened "
                             f"for {self.units} runs: expanded percentile){jack}")
        lines += ["", f"{'param':<8} {'value':>14}  {int(level * 100)}% confidence interval (mean law)"]
        intervals = self.intervals
        for name in law.params:
            ident = self.identifiable.get(name, Identified())
            iv = intervals.get(name)
            if not ident.identified:
                text = f"not identified, fixed at {ident.fixed_at}"
            elif ident.bound:
                text = "AT BOUND (see below)" + (f" [{iv[0]:.6g}, {iv[1]:.6g}]" if iv else "")
            elif ident.weak and iv:
                text = f"[{iv[0]:.6g}, {iv[1]:.6g}] WEAK (see below)"
            elif iv is None:
                text = "(no bootstrap)"
            else:
                text = f"[{iv[0]:.6g}, {iv[1]:.6g}]"
            lines.append(f"{name:<8} {self.params[name]:>14.6g}  {text}")
        for d in self.derived.values():
            span = f"CI [{d.low:.4g}, {d.high:.4g}]" if d.low is not None else "(no bootstrap)"
            if d.pred_low is not None:
                span += f", new run PI [{d.pred_low:.4g}, {d.pred_high:.4g}]"
            lines.append(f"{d.name}: {d.value:.6g} {span} at {d.query}")
        lines.append(f"CI = {CI_KIND}; PI = {PI_KIND}")
        lines.append("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items()
                                             if v is not None))
        flagged = [r for r in self.runs if r.get("outlier")]
        lines += [f"outlier run {r['run_id']}: mean residual {r['mean_residual']:+.4g} "
                  f"(robust z {r['z']:+.1f}); check it, or drop it and refit" for r in flagged]
        lines += [f"identifiability: {n}" for n in self.identifiability_notes()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self, *, with_samples: bool = True) -> dict:
        """The card JSON (docs/design-contract.md layout)."""
        out = {"law": self.law.name, "version": CARD_VERSION, "formula": self.law.formula,
               "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "success": self.success, "message": self.message,
               "params": {k: float(v) for k, v in self.params.items()},
               "objective": json_float(self.objective),
               "ci": {**self.ci, "kind": CI_KIND},
               "identifiable": {k: v.to_dict() for k, v in self.identifiable.items()},
               "diagnosis": list(self.diagnosis), "fit": self.fit.to_dict(),
               "metrics": {k: json_float(v) for k, v in self.metrics.items()},
               "scatter": {**self.scatter, "kind": PI_KIND} if self.scatter else {},
               "runs": list(self.runs), "range": self.range, "data": self.data.to_dict(),
               "notes": list(self.notes)}
        if with_samples and self.bootstrap_params is not None:
            out["bootstrap"] = {"params": list(self.law.params),
                                "samples": self.bootstrap_params.tolist()}
        if with_samples and self.jackknife_params is not None:
            out["jackknife"] = {"params": list(self.law.params), "unit": "run",
                                "samples": self.jackknife_params.tolist()}
        return out


# -- JSON ------------------------------------------------------------------------------------


def card_dict(card: LawCard, *, with_samples: bool = True) -> dict:
    """The card as a JSON-ready dict."""
    return card.to_dict(with_samples=with_samples)


def save_card(card: LawCard, path: str | Path, *, with_samples: bool = True,
              force: bool = True) -> Path:
    """Write the card atomically (a killed write never leaves a torn card)."""
    from data.runs import write_json_atomic

    path = Path(path)
    if path.exists() and not force:
        raise BadInput(f"output {str(path)!r} exists; pass --force to overwrite it")
    write_json_atomic(path, card_dict(card, with_samples=with_samples))
    return path


def _read_json(path: Path) -> tuple[Mapping, bytes]:
    """The card's JSON object and its bytes."""
    try:
        blob = path.read_bytes()
        raw = json.loads(blob.decode())
    except FileNotFoundError:
        raise BadInput(f"law card {str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"law card {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadInput(f"law card {str(path)!r} is not a JSON object")
    return raw, blob


def _with_bounds(law: Law, raw: Mapping) -> dict[str, dict]:
    """The card's ``identifiable``; a version 1 card (written before bounds were checked)
    gets its exponents at a bound marked on load, so an old card cannot claim them."""
    out = {k: dict(v) for k, v in (raw.get("identifiable") or {}).items()}
    if raw["version"] >= 2:
        return out
    from fitting.identify import exponent_bound_notes

    fixed = {k: v.get("fixed_at") for k, v in out.items() if not v.get("identified", True)}
    params = {p: float(raw["params"][p]) for p in law.params}
    for name, note in exponent_bound_notes(law, params, fixed).items():
        out.setdefault(name, {"identified": True}).update(bound=note)
    return out


def load_card(path: str | Path) -> LawCard:
    """Read a card written by :func:`save_card` (or a version 1 card); ``BadInput`` names
    what is wrong."""
    path = Path(path)
    raw, blob = _read_json(path)
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise BadInput(f"law card {str(path)!r} lacks {missing}; is it a prunelaw card?")
    if raw["version"] not in READABLE_VERSIONS:
        raise BadInput(f"law card {str(path)!r} has version {raw['version']!r}; this prunelaw "
                       f"reads {', '.join(map(str, READABLE_VERSIONS))}")
    law = get_law(raw["law"])
    absent = [p for p in law.params if p not in raw["params"]]
    if absent:
        raise BadInput(f"law card {str(path)!r} lacks parameters {absent} of law {law.name!r}")
    boot, jack = _samples(raw.get("bootstrap"), law), _samples(raw.get("jackknife"), law)
    ci, scatter = Intervals.read(raw.get("ci")), Scatter.read(raw.get("scatter"))
    objective = raw.get("objective")
    identifiable = _with_bounds(law, raw)
    return LawCard(law=law, params={p: float(raw["params"][p]) for p in law.params},
                   version=int(raw["version"]), ci=ci,
                   identifiable=identifiable, fit=raw["fit"],
                   metrics=raw.get("metrics", {}), range=raw["range"], data=raw["data"],
                   created=raw.get("created"), success=bool(raw.get("success", True)),
                   message=str(raw.get("message", "")),
                   objective=math.nan if objective is None else float(objective),
                   notes=tuple(raw.get("notes") or ()), runs=tuple(raw.get("runs") or ()),
                   scatter=scatter, diagnosis=tuple(raw.get("diagnosis") or ()),
                   bootstrap_params=boot, jackknife_params=jack, path=path, blob=blob)


def _samples(section: Mapping | None, law: Law) -> np.ndarray | None:
    """A card's ``bootstrap`` / ``jackknife`` samples in ``law.params`` order."""
    if not section:
        return None
    cols = [section["params"].index(p) for p in law.params]
    return np.asarray(section["samples"], dtype=float).reshape(-1, len(section["params"]))[:, cols]
