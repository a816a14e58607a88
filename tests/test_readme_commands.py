"""Every command the README shows runs: a README command that stops working fails CI.

The README's shell blocks are read from README.md itself. The two set-up commands (`make run`,
`make test`) are what `.ci/run` executes on a fresh clone; each `tpccma` command of "The command
line" runs here as written, with smoke sizes appended (argparse keeps the last value of a flag),
in a temporary folder. The full-reproduction block has its own test
(``tests/test_full_reproduction.py``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TPCCMA = Path(sys.executable).with_name("tpccma")
SMOKE_DATA = ["--n-train", "300", "--n-val", "100", "--n-test", "200"]
#: What each README command gets appended to run at smoke size (same code path, small data).
SMOKE = {
    "pretrain": SMOKE_DATA,
    "train": [*SMOKE_DATA, "--steps", "30"],
    "evaluate": [*SMOKE_DATA, "--decoder-steps", "30"],
    # notebook 05's smoke grid into its folder (runs/sweep-smoke): the report resumes these runs
    "sweep": ["--alphas", "0,0.5,1.0", "--seeds", "0", "--param", "smoke=True"],
    "report": ["--param", "smoke=True"],
}


def shell_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(heading, command lines) of every ```bash block; comments and continuations joined."""
    blocks, heading = [], ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^```bash\n(.*?)^```", text, re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("#").strip()
            continue
        joined = match.group(2).replace("\\\n", " ")
        lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in joined.splitlines()]
        blocks.append((heading, [ln for ln in lines if ln and not ln.startswith("#")]))
    return blocks


def _block(heading: str) -> list[str]:
    found = [lines for h, lines in shell_blocks((ROOT / "README.md").read_text()) if h == heading]
    assert found, f"README has no bash block under the heading {heading!r}"
    return found[0]


def test_readme_blocks_are_all_covered():
    """A new shell block in the README needs a test: every block is one of these."""
    covered = {
        "The two commands",
        "The command line",
        "Full reproduction on a GPU machine (internet needed once)",
    }
    headings = [h for h, _ in shell_blocks((ROOT / "README.md").read_text())]
    assert set(headings) == covered, headings


def test_the_two_commands_are_what_ci_runs():
    commands = _block("The two commands")
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_lines = [ln.strip() for ln in ci.splitlines() if not ln.strip().startswith("#")]
    for command in commands:
        assert command in ci_lines, f".ci/run does not run the README's {command!r}"
    makefile = (ROOT / "Makefile").read_text()
    # `make run` sets up the runtime environment (not only the dev one) and runs the main job
    assert re.search(r"^run: setup$", makefile, re.M)
    assert re.search(r"^setup:\n\tbash scripts/setup.sh$", makefile, re.M)
    assert re.search(r"^run:.*\n\t\$\(VENV\)/bin/tpccma report$", makefile, re.M)


@pytest.mark.slow
@pytest.mark.e2e
def test_command_line_block_runs_at_smoke_size(tmp_path):
    """`tpccma pretrain/train/evaluate/sweep/report` exactly as the README shows them."""
    commands = _block("The command line")
    assert commands, "README's command-line block is empty"
    env = {**os.environ, "TPCCMA_RUNS": str(tmp_path / "runs"), "TPCCMA_THREADS": "1"}
    timings = {}
    sweep_runs = tmp_path / "runs" / "sweep-smoke"
    finished_at: dict[str, float] = {}  # done.json mtimes after `tpccma sweep`
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "tpccma", f"README command {line!r} is not a tpccma command"
        sub = argv[1]
        assert sub in SMOKE, f"README command {line!r} has no smoke size in this test"
        started = time.perf_counter()
        done = subprocess.run(
            [str(TPCCMA), *argv[1:], *SMOKE[sub]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        timings[" ".join(argv[:3])] = round(time.perf_counter() - started)
        assert done.returncode == 0, (
            f"{line!r} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        if sub == "sweep":
            finished_at = {str(p): p.stat().st_mtime for p in sweep_runs.glob("*/done.json")}
    print("command timings (s):", timings)
    assert (tmp_path / "runs" / "ft" / "a0.05" / "final.pt").exists()
    assert (tmp_path / "runs" / "eval.csv").stat().st_size > 0
    assert (sweep_runs / "summary.csv").exists()
    assert (tmp_path / "reports" / "index.html").exists()
    # the report's notebook 05 (smoke) resumed the three runs `tpccma sweep` made, redid none
    assert len(finished_at) == 3, finished_at
    assert {str(p): p.stat().st_mtime for p in sweep_runs.glob("*/done.json")} == finished_at


def test_full_reproduction_block_fetches_data_and_weights_before_anything_runs():
    """The fast part of tests/test_full_reproduction.py: how it reads the README's block."""
    from tests.test_full_reproduction import readme_block, split_block

    prepares, p_line, commands = split_block(readme_block())
    assert [c.split("#")[0].split()[2:] for c in prepares] == [
        ["coco", "cifar10"],
        ["clip", "ViT-B-32", "openai"],
    ]
    assert p_line.startswith("P=")
    assert not any(" prepare " in c for c in commands) and any("torchrun" in c for c in commands)
