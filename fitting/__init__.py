"""prunelaw: fitting."""
