"""scripts/query_stats.py: how much generated queries copy their seed, on a hand-made build."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "query_stats.py"), *map(str, args)],
                          capture_output=True, text=True)


def test_hand_counted_build(tmp_path):
    stages = tmp_path / "b" / "stages"
    stages.mkdir(parents=True)
    write(stages / "corpus.jsonl", [
        {"_id": "a", "title": "Cats", "text": "Cats sleep most of the day."},
        {"_id": "b", "title": None, "text": "Dogs bark at night."},
        {"_id": "c", "title": "", "text": "Birds sing."},
    ])
    write(stages / "generate.jsonl", [
        {"seed_id": "a", "query": "Do cats sleep all day?"},  # {do, cats, sleep, all, day}: cats, sleep, day -> 3/5
        {"seed_id": "b", "query": "dogs bark"},               # 2/2
        {"seed_id": "c", "query": None},                      # unparsed: not counted
    ])
    cand = lambda i, r_ql: {"id": i, "r_ql": r_ql}  # noqa: E731
    write(stages / "rerank.jsonl", [
        {"seed_id": "a", "seed_retrieval_rank": 1, "candidates": [cand("a", 2), cand("b", 1)]},  # QL moves it
        {"seed_id": "b", "seed_retrieval_rank": 3, "candidates": [cand("a", 2), cand("b", 1)]},
    ])
    proc = run(tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.splitlines()[-1].split("|")[1:-1]
    cells = [c.strip() for c in row]
    assert cells[1:] == ["2 / 3", "2", f"{(3 / 5 + 1) / 2:.2f}", f"{(5 + 2) / 2:.1f}", "50.0 %", "50.0 %"]


def test_not_a_build_is_one_line(tmp_path):
    proc = run(tmp_path)
    assert proc.returncode != 0
    assert "finished `gecko build fret`" in proc.stderr and "Traceback" not in proc.stderr
