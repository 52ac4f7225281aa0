"""Cold-start latency of ``planner recommend --json`` against ``python -c "import numpy"``.

Goals: a cold ``planner recommend --params 8B --ratio 0.5 --json`` takes at most 1.5x the wall
time of a cold ``python -c "import numpy"``, and with ``--pilot`` on a 100-point CSV curve
(pilot + card prior) at most 2x, all measured here, in the same run, interleaved (so machine
load hits them alike), median of ``--repeat`` runs each. The card is the one a user gets: the
bundled card the planner selects itself (``planner/cards/``, with its bootstrap and jackknife
samples, whose intervals are the costly part), unless ``--law`` names another.

    .venv/bin/python benchmarks/planner_latency.py [--repeat 15] [--law CARD.json]
    .venv/bin/python benchmarks/planner_latency.py --quick     # smoke: 3 repeats, no real timing
"""

from __future__ import annotations

import argparse
import json
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


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def card_of(cmd: list[str], env: dict[str, str]) -> str:
    """The card the timed command answers from, and its samples (a card without them is not the
    path a user's cold start takes)."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    card = json.loads(proc.stdout)["card"]
    return f"{Path(card['path']).name}: {card['n_bootstrap']} bootstrap, {card['n_jackknife']} jackknife samples"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--law", type=Path, help="card to use (default: the bundled card the planner selects)")
    parser.add_argument("--quick", action="store_true", help="smoke settings: 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 3
    # the user's environment, less any override of the bundled cards directory
    env = {**{k: v for k, v in os.environ.items() if k != "PRUNELAW_CARDS_DIR"}, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        numpy_cmd = [sys.executable, "-c", "import numpy"]
        script = Path(sys.executable).with_name("planner")  # the console script a user types
        entry = [str(script)] if script.exists() else [sys.executable, "-m", "planner"]
        planner_cmd = entry + ["recommend", "--params", "8B", "--ratio", "0.5", "--json"]
        planner_cmd += ["--law", str(args.law)] if args.law else []
        card = card_of(planner_cmd, env)
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
    print(f"{Path(entry[-1]).name} recommend --json        median {p * 1e3:7.1f} ms  (n={args.repeat}, card {card})")
    print(f"  ... --pilot (100 points)      median {q * 1e3:7.1f} ms")
    print(f"ratio planner / import numpy    {ratio:.2f}x   goal <= {GOAL}x   {'PASS' if ratio <= GOAL else 'FAIL'}")
    print(f"ratio pilot / import numpy      {pilot_ratio:.2f}x   goal <= {PILOT_GOAL}x   "
          f"{'PASS' if pilot_ratio <= PILOT_GOAL else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
