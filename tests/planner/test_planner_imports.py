"""The planner's CLI path stays light: no torch, pandas, scipy, matplotlib or transformers.

Every probe runs the planner as a user does, on the bundled cards (``planner/cards/``): they
carry bootstrap and jackknife samples, so the card's intervals (``fitting.intervals``) run in
full; a card without them skipped the code that once imported scipy.stats.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HEAVY = ("torch", "pandas", "scipy", "matplotlib", "transformers", "statsmodels", "deepspeed",
         "datasets", "pyarrow", "yaml")
BUNDLED = Path(__file__).resolve().parents[2] / "planner" / "cards"

PROBE = """
import contextlib, io, json, sys
from planner.__main__ import main
answers = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    answers.append({"code": code, "answer": json.loads(out.getvalue()) if "--json" in argv else None})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))
print(json.dumps({"answers": answers, "heavy": heavy}))
"""


def _env() -> dict[str, str]:
    """The user's environment, without an override of the bundled cards directory."""
    env = {k: v for k, v in os.environ.items() if k != "PRUNELAW_CARDS_DIR"}
    return {**env, "OMP_NUM_THREADS": "1"}


def _pilot_csv(path: Path) -> Path:
    tokens = np.geomspace(4e6, 4e9, 40)
    loss = 2.3 + 400.0 * tokens ** -0.35 + 0.002 * np.random.default_rng(0).standard_normal(len(tokens))
    path.write_text("tokens,loss\n0,4.5\n" + "".join(f"{t:.0f},{y:.6f}\n" for t, y in zip(tokens, loss)))
    return path


def test_recommend_on_a_bundled_card_imports_nothing_heavy(tmp_path):
    """Card mode (the README's first command), pilot + card, compare and cards, in one process."""
    pilot = _pilot_csv(tmp_path / "pilot.csv")
    argvs = [["recommend", "--params", "8B", "--ratio", "0.5", "--json"],
             ["recommend", "--params", "8B", "--ratio", "0.5", "--pilot", str(pilot), "--json"],
             ["compare", "--params", "8B", "--ratios", "0.3,0.5", "--tokens", "1B", "--json"],
             ["cards", "--json"]]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    card_mode, pilot_mode = result["answers"][0]["answer"], result["answers"][1]["answer"]
    assert [a["code"] for a in result["answers"]] == [0, 0, 0, 0]
    # the answer came from a bundled card with the samples whose intervals once pulled scipy in
    assert Path(card_mode["card"]["path"]).parent == BUNDLED
    assert card_mode["card"]["n_jackknife"] > 0 and card_mode["card"]["n_bootstrap"] > 0
    # at 8B the card is not credible: its D* interval is still computed, under "extrapolation"
    extrapolated = card_mode["tokens"] or card_mode["extrapolation"]["tokens"]
    assert extrapolated["low"] < extrapolated["value"] < extrapolated["high"]
    assert pilot_mode["mode"] == "pilot+card" and pilot_mode["tokens"]["low"] is not None
    assert result["heavy"] == [], f"planner's CLI path imported {result['heavy']}"


def test_importtime_of_the_console_path_has_no_heavy_module():
    """``python -X importtime -m planner recommend``: every module a user's cold start pays for."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "planner", "recommend", "--params", "8B",
                           "--ratio", "0.5", "--json"], capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert Path(json.loads(proc.stdout)["card"]["path"]).parent == BUNDLED
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "numpy" in imported and "planner" in imported  # the probe really saw the imports
    assert not imported & set(HEAVY), imported & set(HEAVY)
