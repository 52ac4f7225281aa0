"""prunelaw: reports."""
