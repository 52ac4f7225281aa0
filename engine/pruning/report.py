"""``PruneReport``: what every pruning method returns (docs/design-contract.md vocabulary).

``ratio`` is the achieved fraction of parameters removed, ``1 - params_after / params_before``,
where ``params_after`` counts the parameters the method kept (the non-zero ones in docs/design-contract.md's
sense: sparse methods subtract masked entries, structured methods count stored entries), so
sparse and structured methods are measured the same way; tied embeddings count once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PruneReport:
    """The outcome of one pruning call.

    ``masks`` and ``model`` are in-memory objects and are left out of :meth:`to_dict`.
    """

    method: str
    """Registry name (``depth``, ``width``, ``2:4``, ...)."""
    ratio_target: float
    """The ratio that was asked for."""
    ratio: float
    """Achieved ratio: ``1 - params_after / params_before``."""
    params_before: int
    """N0: total parameters of the parent (tied embeddings once)."""
    params_after: int
    """N: parameters the pruned model keeps, same convention (stored entries minus those a
    sparse mask zeroed; structured methods: every stored entry)."""
    nonembed_before: int
    """Parent parameters without input embedding and LM head."""
    nonembed_after: int
    """Kept parameters without input embedding and LM head."""
    nonzero_after: int
    """Literal count of non-zero entries after pruning (equals ``params_after`` unless some
    kept entries happen to be exactly zero, e.g. zero-initialised Qwen biases)."""
    choices: dict[str, Any] = field(default_factory=dict)
    """What was kept: layers, heads/neurons/channels per layer, resulting shapes."""
    seconds: float = 0.0
    """Wall time of the pruning itself (scoring + surgery), not of loading or saving."""
    loss_before: float | None = None
    """L0: the parent's eval loss (None unless eval data were given)."""
    loss_after: float | None = None
    """Eval loss right after pruning (None unless eval data were given)."""
    total_after: int | None = None
    """Stored parameters of the pruned model, zeros included (None: not measured)."""
    notes: list[str] = field(default_factory=list)
    """Human-readable remarks (e.g. why the achieved ratio differs from the target)."""
    masks: dict[str, Any] | None = None
    """Sparse methods: parameter name -> bool mask (True = kept). Not serialised here."""
    model: Any = None
    """The pruned model object (pruned in place or rebuilt). Not serialised."""
    recon: dict[str, Any] | None = None
    """Local reconstruction after pruning (engine.pruning.recon), when it ran: granularity,
    calibration size, steps, lr, time, per-submodel errors, ``loss_after_prune`` and
    ``loss_after_recon``. Then ``loss_after`` is the reconstructed model's loss."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of everything except ``masks`` and ``model``."""
        return {
            "method": self.method,
            "ratio_target": float(self.ratio_target),
            "ratio": float(self.ratio),
            "params_before": int(self.params_before),
            "params_after": int(self.params_after),
            "nonembed_before": int(self.nonembed_before),
            "nonembed_after": int(self.nonembed_after),
            "nonzero_after": int(self.nonzero_after),
            "total_after": None if self.total_after is None else int(self.total_after),
            "choices": self.choices,
            "seconds": float(self.seconds),
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "notes": list(self.notes),
            **({} if self.recon is None else {"recon": self.recon,
                                              "loss_after_prune": self.recon.get("loss_after_prune"),
                                              "loss_after_recon": self.recon.get("loss_after_recon")}),
        }
