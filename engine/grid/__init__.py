"""Grids of prune + post-train jobs: a YAML spec, its expansion, and executors.

``engine.grid.spec`` (load_grid, write_job_files, job_command) is the API both executors use:
``engine.grid.local`` runs jobs through the ``deepspeed`` launcher on this machine,
``engine.grid.slurm`` submits them as SLURM job arrays. ``engine.grid.status`` renders tables.
"""
