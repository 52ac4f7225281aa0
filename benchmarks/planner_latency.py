"""Cold-start latency of ``planner recommend --json`` against ``python -c "import numpy"``.

Goals: a cold ``planner recommend ... --json`` takes at most 1.5x the wall time of a cold
``python -c "import numpy"`` (issue 6), and with ``--pilot`` on a 100-point CSV curve at most
2x (issue 13), all measured here, in the same run, interleaved (so machine load hits them
alike), median of ``--repeat`` runs each. The card is a real ``fitting fit`` product
(synthetic P2 curves, run bootstrap) unless ``--law`` names one.

    .venv/bin/python benchmarks/planner_latency.py [--repeat 15] [--law CARD.json]
    .venv/bin/python benchmarks/planner_latency.py --quick     # smoke: 3 repeats, no real timing
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
PILOT_GOAL = 2.0


def make_pilot(path: Path, points: int = 100) -> Path:
    """A 100-point pilot curve (tokens, loss) with a step-0 row, as ``engine train`` logs one."""
    import numpy as np

    tokens = np.geomspace(4e6, 4e9, points - 1)
    # k = 400: the gap from the step-0 loss (4.5) closes over the run, D* (recover 0.9) ~ 2B tokens
    loss = 2.3 + 400.0 * tokens ** -0.35 + 0.002 * np.random.default_rng(0).standard_normal(len(tokens))
    path.write_text("tokens,loss\n0,4.5\n" + "".join(f"{t:.0f},{y:.6f}\n" for t, y in zip(tokens, loss)))
    return path


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
    parser.add_argument("--quick", action="store_true", help="smoke settings: 3 repeats, a 20-sample card")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.bootstrap = 3, 20
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        card = args.law or make_card(Path(tmp) / "card.json", args.bootstrap)
        numpy_cmd = [sys.executable, "-c", "import numpy"]
        script = Path(sys.executable).with_name("planner")  # the console script a user types
        entry = [str(script)] if script.exists() else [sys.executable, "-m", "planner"]
        planner_cmd = entry + ["recommend", "--params", "llama-3.1-8b", "--ratio", "0.5",
                               "--law", str(card), "--json"]
        pilot_cmd = planner_cmd + ["--pilot", str(make_pilot(Path(tmp) / "pilot.csv"))]
        wall(numpy_cmd, env), wall(planner_cmd, env), wall(pilot_cmd, env)  # warm the OS file cache
        base, plan, pilot = [], [], []
        for _ in range(args.repeat):
            base.append(wall(numpy_cmd, env))
            plan.append(wall(planner_cmd, env))
            pilot.append(wall(pilot_cmd, env))
    b, p, q = statistics.median(base), statistics.median(plan), statistics.median(pilot)
    ratio, pilot_ratio = p / b, q / b
    ok = ratio <= GOAL and pilot_ratio <= PILOT_GOAL
    print(f"python -c 'import numpy'        median {b * 1e3:7.1f} ms  (n={args.repeat})")
    print(f"{Path(entry[-1]).name} recommend --json        median {p * 1e3:7.1f} ms  (n={args.repeat}, card {card.name})")
    print(f"  ... --pilot (100 points)      median {q * 1e3:7.1f} ms")
    print(f"ratio planner / import numpy    {ratio:.2f}x   goal <= {GOAL}x   {'PASS' if ratio <= GOAL else 'FAIL'}")
    print(f"ratio pilot / import numpy      {pilot_ratio:.2f}x   goal <= {PILOT_GOAL}x   "
          f"{'PASS' if pilot_ratio <= PILOT_GOAL else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
