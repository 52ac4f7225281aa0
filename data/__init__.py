"""prunelaw data: corpora, token shards, mixtures, model table and the run store.

Kept light on purpose: ``data.runs`` and ``data.models`` are read by torch-free packages.
"""
