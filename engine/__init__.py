"""prunelaw: engine."""
