#!/usr/bin/env bash
# Install prunelaw into ./.venv (or $PRUNELAW_VENV): the CPU build of torch where no NVIDIA
# GPU is visible (constraints/cpu.txt), PyPI's CUDA build where one is (constraints/cuda.txt,
# the same torch/deepspeed/transformers versions). Re-running it is safe.
set -euo pipefail
cd "$(dirname "$0")"
venv="${PRUNELAW_VENV:-.venv}"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "install.sh: NVIDIA GPU found: installing the CUDA build of torch (constraints/cuda.txt)"
  "$venv/bin/python" -m pip install -q -c constraints/cuda.txt -e ".[engine,eval,dev]"
else
  echo "install.sh: no GPU: installing the CPU build of torch (constraints/cpu.txt)"
  "$venv/bin/python" -m pip install -q -c constraints/cpu.txt -e ".[engine,eval,dev]"
fi
"$venv/bin/python" - <<'PY'
import torch, deepspeed, transformers
import lm_eval  # noqa: F401  (engine eval: the eval extra)
print(f"install.sh: torch {torch.__version__}, deepspeed {deepspeed.__version__}, "
      f"transformers {transformers.__version__}, cuda={torch.cuda.is_available()}")
PY
echo "install.sh: done. Commands live in $venv/bin (engine, data, fitting, planner, reports)."
