"""DeepSpeed post-training: typed job configs, the recipe, objectives, evaluation, resume.

``python -m engine.train --config A.yaml [B.yaml ...]`` is the worker each launcher process
runs (``engine train`` and the grid executors spawn it through ``deepspeed``). Importing this
package is cheap: torch, transformers and deepspeed load only inside the recipe.
"""
