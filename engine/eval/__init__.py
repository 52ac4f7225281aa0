"""``engine eval``: lm-evaluation-harness on any model the engine saves, with an offline task.

``harness`` runs ``lm_eval.simple_evaluate`` on an ``HFLM`` built from the loaded model;
``tasks`` writes the ``corpus_ppl`` perplexity tasks from the corpus's held-out split; ``store``
records results in the run store. Nothing here imports lm_eval or torch at module level.
"""
