"""Typed, frozen results (statsmodels/lmfit style). A fit's result is its card (``fitting.card.LawCard``)."""

from __future__ import annotations

from dataclasses import dataclass

from fitting.sections import json_float


@dataclass(frozen=True)
class ValidationResult:
    """One held-out extrapolation: fit on ``train``, metrics on ``test``.

    ``split`` says what was held out; ``reduced`` names parameters the train part could not
    identify (they were pinned: the validated law is the reduced one), empty when none.
    """

    by: str
    success: bool
    message: str
    split: str
    n_train: int
    n_test: int
    metrics: dict[str, float]
    params: dict[str, float]
    reduced: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"by": self.by, "success": self.success, "message": self.message,
                "split": self.split, "n_train": self.n_train, "n_test": self.n_test,
                "reduced_law": list(self.reduced),
                "metrics": {k: json_float(v) for k, v in self.metrics.items()},
                "params": {k: float(v) for k, v in self.params.items()}}


__all__ = ["ValidationResult"]
