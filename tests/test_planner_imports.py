"""The planner's CLI path stays light: no torch, pandas, scipy, matplotlib or transformers."""

from __future__ import annotations

import json
import subprocess
import sys

from test_planner_cards import write_card

HEAVY = ("torch", "pandas", "scipy", "matplotlib", "transformers", "statsmodels", "deepspeed",
         "datasets", "pyarrow", "yaml")

PROBE = """
import contextlib, io, json, sys
from planner.__main__ import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["recommend", "--params", "8B", "--ratio", "0.5", "--law", sys.argv[1], "--json"])
for sub in (["compare", "--params", "8B", "--ratios", "0.3,0.5", "--tokens", "1B", "--law", sys.argv[1], "--json"],
            ["cards", "--json"]):
    with contextlib.redirect_stdout(io.StringIO()):
        code += main(sub)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[2]))
print(json.dumps({"code": code, "heavy": heavy, "tokens": json.loads(out.getvalue())["tokens"]["value"]}))
"""


def test_cli_path_imports_nothing_heavy(tmp_path):
    card = write_card(tmp_path / "card.json")
    proc = subprocess.run([sys.executable, "-c", PROBE, str(card), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=60,
                          env={"PRUNELAW_CARDS_DIR": str(tmp_path), "PATH": "", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["code"] == 0 and result["tokens"] > 0
    assert result["heavy"] == [], f"planner's CLI path imported {result['heavy']}"


def test_importtime_has_no_heavy_module(tmp_path):
    """``python -X importtime`` of a real recommend: what a user's cold start pays for."""
    card = write_card(tmp_path / "card.json")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "planner", "recommend", "--params", "8B",
                           "--ratio", "0.5", "--law", str(card), "--json"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "numpy" in imported and "planner" in imported  # the probe really saw the imports
    assert not imported & set(HEAVY), imported & set(HEAVY)
