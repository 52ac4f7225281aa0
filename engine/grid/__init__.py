"""Grids of prune + post-train jobs: a YAML spec, its expansion, and executors.

``engine.grid.spec`` (load_grid, write_job_files, job_command) expands a grid into job files;
``engine.grid.executor`` is the interface every executor meets (``check -> plan -> submit ->
status -> cancel``), its registry, the one job ordering and the retry and status rules;
``engine.grid.local`` runs jobs through the ``deepspeed`` launcher on this machine,
``engine.grid.slurm`` submits them as SLURM job arrays; ``engine.grid.lock`` keeps two launches
off one store; ``engine.grid.status`` renders tables.
"""
