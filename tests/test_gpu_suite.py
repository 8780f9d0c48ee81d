"""benchmarks/gpu_suite.sh: the script parses, and `--dry-run` (tiny BERT, CPU) walks every row's
code path and writes the table with every row. Figures are not checked: timings live in docs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "gpu_suite.sh"
ROWS = [
    "eager: ours", "eager: sentence-transformers MNRL",
    "compile: ours, torch.compile", "compile: sentence-transformers MNRL",
    "length grouping: ours", "length grouping: ours, length grouping", "length grouping: sentence-transformers MNRL",
    "GradCache: ours, uncached", "GradCache: ours, GradCache",
    "plain, one device: 3 steps", "DeepSpeed ZeRO-2: ", "DeepSpeed ZeRO-3: ",
]


def test_suite_script_parses():
    assert subprocess.run(["bash", "-n", str(SUITE)]).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(subprocess.run(["which", "timeout"], capture_output=True).returncode != 0, reason="needs coreutils timeout")
def test_dry_run_writes_every_row(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, DEEPSPEED_WHEELS="")
    res = subprocess.run(["bash", str(SUITE), "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = (tmp_path / "gpu_suite.md").read_text()
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.removesuffix("3 steps") if r.startswith("DeepSpeed") else r for r in rows] == ROWS, table
    measured = [line for line in table.splitlines() if not line.startswith(("| DeepSpeed", "| row", "|---")) and line.startswith("|")]
    assert all("skipped" not in line for line in measured), table  # on CPU only the DeepSpeed rows may skip
    assert "DeepSpeed ZeRO-2: 3 steps | - |" in table and "no CUDA GPU" in table


def test_unknown_flag_is_refused():
    res = subprocess.run(["bash", str(SUITE), "--fast"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "usage: bash benchmarks/gpu_suite.sh [--dry-run]" in res.stderr
