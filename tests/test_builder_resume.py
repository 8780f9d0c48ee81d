"""Crash safety: kill -9 a build midway, re-run it, and get the uninterrupted output without repeating calls."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_builders import cli
from gecko_lightning.data.schema import read_manifest

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "configs" / "data" / "fret_fake.yaml"


def cached_calls(db: Path) -> int:
    """Rows in an LLM cache file that another process may be writing; 0 before it exists."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


def kill_midway(cmd: list[str], db: Path, env: dict[str, str] | None = None, after_calls: int = 60) -> int:
    """Start a build, SIGKILL it once `db` holds `after_calls` cached calls; returns the calls cached by then.

    The cache must survive intact (SQLite integrity check), and the build must not have finished first.
    """
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while cached_calls(db) < after_calls and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed; raise fake_delay_s"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    return cached_calls(db)


@pytest.mark.slow
def test_kill_minus_9_then_resume_gives_identical_output(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(reference)]) == 0
    total = sum(read_manifest(reference)["llm_calls"].values())

    # A slow fake LLM (0.2 s per batch) so the kill lands in the middle of the LLM stages.
    cmd = [sys.executable, "-m", "gecko_lightning", "build", "fret", "--config", str(FAKE), "--output_dir", str(resumed),
           "--llm.fake_delay_s=0.2", "--llm.gen_batch_size=4"]
    done = kill_midway(cmd, resumed / "llm_cache.sqlite")
    assert 0 < done < total

    assert cli.main(["fret", "--config", str(FAKE), "--output_dir", str(resumed)]) == 0
    manifest = read_manifest(resumed)
    assert sum(manifest["llm_calls"].values()) == total - done  # finished calls were not repeated
    assert (resumed / "shard-00000.jsonl").read_text() == (reference / "shard-00000.jsonl").read_text()
    assert not list(resumed.glob(".*")), "a temp file was left behind"
