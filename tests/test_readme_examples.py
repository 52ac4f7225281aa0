"""Every ``planner``/``fitting``/``reports`` example of README.md runs as written and exits 0.

The commands are read from the README's ```bash blocks at collection time (the README is
rewritten freely; this test follows it). A command runs through the venv's console script
with the repository first on PYTHONPATH, from the repository root, so relative paths resolve
as they do for a reader of a fresh clone. Commands whose inputs a reader must make first
(``work/...``, ``runs/<id>``, ``pilot.csv``) are left out; ``[optional ...]`` parts are
dropped; ``--out`` files go to a temporary directory.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("planner", "fitting", "reports")
FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".pdf", ".yaml", ".yml", ".txt")
OUTPUT_FLAGS = ("--out",)
TIMEOUT_S = 600


def bash_lines(text: str) -> list[str]:
    """Lines of the ```bash blocks, continuation lines (trailing backslash) joined."""
    lines, block, pending = [], False, ""
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            block = raw.strip().startswith("```bash") and not block
            continue
        if not block:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(line.removeprefix("$ "))
    return lines


def commands(text: str) -> list[list[str]]:
    """The argv of every example of TOOLS, without comments and ``[optional]`` parts."""
    out = []
    for line in bash_lines(text):
        if not line.startswith(tuple(f"{tool} " for tool in TOOLS)):
            continue
        line = re.sub(r"\s\[[^\]]*\]", "", line)
        out.append(shlex.split(line, comments=True))
    return out


def needs_artefacts(argv: list[str]) -> bool:
    """True when an input (placeholder or path) does not exist in a fresh clone."""
    for i, token in enumerate(argv[1:], 1):
        if argv[i - 1] in OUTPUT_FLAGS:
            continue
        if "<" in token or ">" in token:
            return True
        looks_like_path = "/" in token or token.endswith(FILE_SUFFIXES)
        if looks_like_path and not token.startswith("-") and not (ROOT / token).exists():
            return True
    return False


README = (ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else ""
EXAMPLES = [argv for argv in commands(README) if not needs_artefacts(argv)]


def _case(argv: list[str]):
    # fits, PDFs and design simulations take tens of seconds
    marks = [] if argv[0] == "planner" and argv[1:2] != ["design"] else [pytest.mark.slow]
    return pytest.param(argv, id=" ".join(argv)[:120], marks=marks)


def test_the_readme_has_planner_examples_that_need_nothing_made_first():
    planner = [a for a in EXAMPLES if a[0] == "planner"]
    assert len(planner) >= 3, f"expected the README's planning examples, found {planner}"


def test_the_parser_joins_continuations_and_drops_optional_parts():
    text = ("```bash\nplanner compare --ratios 0.5 [--json]   # note\nreports build x \\\n    --out y.pdf\n```\n"
            "```python\nplanner no\n```\n")
    assert commands(text) == [["planner", "compare", "--ratios", "0.5"], ["reports", "build", "x", "--out", "y.pdf"]]
    assert needs_artefacts(["planner", "recommend", "--pilot", "runs/<id>"])
    assert not needs_artefacts(["reports", "build", "docs/reference_runs", "--out", "nowhere/r.pdf"])


@pytest.mark.parametrize("argv", [_case(a) for a in EXAMPLES])
def test_readme_example_runs(argv, tmp_path):
    argv = [str(tmp_path / Path(a).name) if i and argv[i - 1] in OUTPUT_FLAGS else a
            for i, a in enumerate(argv)]
    script = Path(sys.executable).parent / argv[0]
    cmd = [str(script), *argv[1:]] if script.exists() else [sys.executable, "-m", *argv]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               MPLBACKEND="Agg")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout.strip(), "an example that prints nothing answers nothing"
