"""Cold-start latency of ``planner recommend --json`` against ``python -c "import numpy"``.

Goal (issue 6): a cold ``planner recommend ... --json`` takes at most 1.5x the wall time of a
cold ``python -c "import numpy"``, both measured here, in the same run, interleaved (so machine
load hits both alike), median of ``--repeat`` runs each. The card is a real ``fitting fit``
product (synthetic P2 curves, run bootstrap) unless ``--law`` names one.

    .venv/bin/python benchmarks/planner_latency.py [--repeat 15] [--law CARD.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 1.5


def make_card(path: Path, n_bootstrap: int) -> Path:
    """Fit P2 to synthetic curves with fitting itself and save the card (not timed)."""
    from dataclasses import replace

    from fitting.card import save_card
    from fitting.fit import FitConfig, fit
    from fitting.synthetic import p2_curves

    data = replace(p2_curves(noise=0.01, points=8), family="llama3", method="depth")
    return save_card(fit(data, FitConfig(n_bootstrap=n_bootstrap)), path)


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--law", type=Path, help="card to use (default: fit one from synthetic curves)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap samples in the fitted card")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        card = args.law or make_card(Path(tmp) / "card.json", args.bootstrap)
        numpy_cmd = [sys.executable, "-c", "import numpy"]
        script = Path(sys.executable).with_name("planner")  # the console script a user types
        entry = [str(script)] if script.exists() else [sys.executable, "-m", "planner"]
        planner_cmd = entry + ["recommend", "--params", "llama-3.1-8b", "--ratio", "0.5",
                               "--law", str(card), "--json"]
        wall(numpy_cmd, env), wall(planner_cmd, env)  # warm the OS file cache for both
        base, plan = [], []
        for _ in range(args.repeat):
            base.append(wall(numpy_cmd, env))
            plan.append(wall(planner_cmd, env))
    b, p = statistics.median(base), statistics.median(plan)
    ratio = p / b
    print(f"python -c 'import numpy'        median {b * 1e3:7.1f} ms  (n={args.repeat})")
    print(f"{Path(entry[-1]).name} recommend --json        median {p * 1e3:7.1f} ms  (n={args.repeat}, card {card.name})")
    print(f"ratio planner / import numpy    {ratio:.2f}x   goal <= {GOAL}x   {'PASS' if ratio <= GOAL else 'FAIL'}")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
