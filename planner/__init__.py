"""prunelaw: planner."""
