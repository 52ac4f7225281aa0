"""prunelaw planner: post-training token budgets, predicted losses and costs from law cards.

torch-, pandas-, scipy- and matplotlib-free; see ``planner.recommend`` and ``planner.compare``
for the library functions and ``planner.cli.*`` for the commands and their --json schemas.
"""
