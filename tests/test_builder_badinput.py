"""Bad input to `gecko build fret`: one clear line naming the file and line, nothing dropped silently,
a corrupt cache never deleted, a damaged shard never reused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_builders.llm.cache import LLMCache
from data_builders.config import CorpusConfig, load_config
from data_builders.corpus import load_corpus
from data_builders.fret.runner import run
from gecko_lightning.errors import UserError

REPO = Path(__file__).resolve().parents[1]
GOOD = [{"_id": f"p{i}", "title": "T", "text": f"passage number {i} about things"} for i in range(6)]


def _write(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return path


@pytest.mark.parametrize("bad,message", [
    (b'{"_id": "x", "text": "a"', r"corpus.jsonl:5: malformed JSON"),
    (b'{"_id": "x", "text": "caf\xe9"}', r"corpus.jsonl:5: byte 0xe9 at column 26 is not UTF-8"),
    (b'{"_id": "x", "text": NaN}', r"corpus.jsonl:5: malformed JSON \(NaN is not a JSON number"),
    (b'["x", "text"]', r"corpus.jsonl:5: a corpus row must be a JSON object, got list"),
    (b'{"_id": "p1", "text": "again"}', r"corpus.jsonl:5: duplicate passage id 'p1' \(first at .*corpus.jsonl:2\)"),
    (b'{"_id": true, "text": "a"}', r"corpus.jsonl:5: needs '_id'"),
    (b'{"_id": "x", "text": 3}', r"corpus.jsonl:5: 'text' must be a string, got int"),
])
def test_a_bad_corpus_line_is_named_by_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path / "corpus.jsonl", GOOD[:4] + [bad] + GOOD[4:])
    with pytest.raises(UserError, match=message):
        load_corpus(CorpusConfig(path=str(path)))


def test_empty_passages_are_counted_and_located_in_the_manifest(tmp_path):
    rows = [dict(r) for r in json.loads("[" + ",".join(
        (REPO / "configs/assets/tiny_corpus/corpus.jsonl").read_text().splitlines()) + "]")]
    for i in (3, 10, 11):
        rows[i]["text"] = "  " if i != 10 else ""
    corpus = _write(tmp_path / "corpus.jsonl", rows)
    cfg = load_config(REPO / "configs/data/fret_fake.yaml", {"corpus.path": str(corpus), "output_dir": str(tmp_path / "b")})
    run(cfg)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["empty_passages_skipped"] == 3
    assert [loc.rsplit(":", 1)[1] for loc in manifest["empty_passages_first"]] == ["4", "11", "12"]
    assert manifest["stages"]["generate"]["corpus_passages"] == len(rows) - 3


@pytest.mark.parametrize("damage", ["garbage", "half"])
def test_a_corrupt_cache_is_a_clear_error_and_is_never_deleted(tmp_path, damage):
    path = tmp_path / "llm_cache.sqlite"
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 500)
    else:
        cache = LLMCache(path)
        for n in range(20):
            cache.put_many({f"k{n}-{i}": "x" * 400 for i in range(50)})
        cache._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cache.close()
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = path.read_bytes()
    with pytest.raises(UserError, match=rf"LLM cache {path} is not a readable SQLite database .*mv {path} {path}.bad"):
        cache = LLMCache(path)
        cache.get_many([f"k{n}-{i}" for n in range(20) for i in range(50)])
        cache.put_many({"new": 1})
    assert path.read_bytes() == before


def test_a_truncated_shard_is_rebuilt_from_the_cache_not_reused(tmp_path):
    cfg = load_config(REPO / "configs/data/fret_fake.yaml", {"output_dir": str(tmp_path / "b")})
    first = run(cfg)
    shard = next((tmp_path / "b").glob("shard-*.jsonl"))
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    again = run(cfg)
    assert not again["export"].get("skipped")
    assert again["generate"]["llm_calls"] == 0 and again["rerank"]["llm_calls"] == 0
    assert shard.read_bytes() == whole
    assert run(cfg)["export"].get("skipped")  # whole again: reused
    assert first["export"]["records"] == again["export"]["records"]


def test_cli_reports_a_bad_corpus_line_in_one_line_exit_2(tmp_path):
    path = _write(tmp_path / "corpus.jsonl", GOOD[:4] + [b'{"_id": "x", "text": "a"'])
    proc = subprocess.run([sys.executable, "-m", "gecko_lightning", "build", "fret", "--config", "configs/data/fret_fake.yaml",
                           f"--corpus.path={path}", "--output_dir", str(tmp_path / "b")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"gecko build: error: {path}:5: malformed JSON (Expecting ',' delimiter: line 1 column 25 (char 24)); "
                      "one JSON object per line"] or (len(errors) == 1 and f"{path}:5: malformed JSON" in errors[0])
    assert "Traceback" not in proc.stderr
