"""prunelaw fitting: scaling laws, global fits with run-bootstrap intervals, validation, law cards.

torch-free. Public API (imported lazily so ``import fitting`` stays cheap)::

    from fitting import get_law, load_data, fit, FitConfig, validate, compare, LawCard
    data = load_data("runs/", "p2", method="depth")
    card = fit(data, FitConfig(n_bootstrap=200))          # the fit result is the card
    print(card.summary()); card.save("card.json")
    card = LawCard.load("card.json"); card.predict(params_before=8e9, ratio=0.5, tokens=1e9, loss_before=2.1)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LAWS": "fitting.laws", "Law": "fitting.laws", "get_law": "fitting.laws",
    "optimal_tokens": "fitting.laws", "P2": "fitting.laws", "CHINCHILLA": "fitting.laws",
    "FitData": "fitting.table", "load_data": "fitting.table", "from_arrays": "fitting.table",
    "FitConfig": "fitting.fit", "fit": "fitting.fit",
    "ValidationResult": "fitting.result",
    "validate": "fitting.validate",
    "LawCard": "fitting.card", "load_card": "fitting.card", "save_card": "fitting.card",
    "register": "fitting.laws", "compare": "fitting.compare",
    "card_dict": "fitting.card",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fitting' has no attribute {name!r}")
