"""End-to-end workflows across every prunelaw package (the one place allowed to import them all).

Imports flow one way (``planner -> fitting -> data``, ``reports -> fitting, data``,
``engine -> data``); a workflow that chains corpus -> grid -> fit -> report -> plan needs all of
them, so it lives here, above the five packages, and none of them imports it.
``workflow.demo.run_demo`` is what ``engine demo`` (and ``prunelaw demo``) runs.
"""
