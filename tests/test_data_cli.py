"""`gecko data validate`: counts, distributions, every problem with file:line, exit code."""

from __future__ import annotations

import io
import json
from pathlib import Path

from gecko_lightning.data.cli import main, validate

TINY_FRET = Path(__file__).resolve().parents[1] / "configs" / "assets" / "tiny_fret"


def good(i: int, source: str = "s1", task: str = "t1") -> str:
    return json.dumps({"id": str(i), "source": source, "task": task, "query": "q", "positive": {"text": "p"}})


def test_validate_reports_counts_distribution_and_each_bad_line(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [good(0), good(1, "s2"), '{"id": 2', good(3, task="t2"), json.dumps({"id": "4", "source": "s1"})]
    path.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    assert validate(str(path), out) == 1
    text = out.getvalue()
    assert f"{path}: 3 valid records, 2 invalid" in text
    assert "       2  s1" in text and "       1  s2" in text and "       1  t2" in text
    assert f"error: {path}:3: malformed JSON" in text
    assert f"error: {path}:5: missing field(s) ['task', 'query', 'positive']" in text


def test_validate_clean_folder_exits_zero(capsys):
    assert main(["validate", str(TINY_FRET)]) == 0
    assert "96 valid records, 0 invalid" in capsys.readouterr().out


def test_validate_missing_path_is_an_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_validate_checks_the_manifest_count_and_warns_on_duplicate_ids(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "shard-00000.jsonl").write_text("\n".join([good(0), good(1), good(1)]) + "\n")
    (folder / "manifest.json").write_text(json.dumps({"schema_version": 1, "records": 5}))
    out = io.StringIO()
    assert validate(str(folder), out) == 1
    text = out.getvalue()
    assert f"error: {folder}/manifest.json: says 5 records, the shards hold 3" in text
    assert "warning: 1 ids occur more than once, e.g. '1'" in text


def test_validate_names_an_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    out = io.StringIO()
    assert validate(str(path), out) == 1
    assert f"error: {path}: holds no records; check that the build or conversion that wrote it finished" in out.getvalue()


def test_validate_goes_on_past_a_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join([good(0).encode(), good(1).encode().replace(b'"q"', b'"q\xe9"'), good(2).encode()]) + b"\n")
    column = path.read_bytes().split(b"\n")[1].index(b"\xe9") + 1  # reference: find the byte ourselves
    offset = path.read_bytes().index(b"\xe9")
    out = io.StringIO()
    assert validate(str(path), out) == 1
    text = out.getvalue()
    assert f"{path}: 2 valid records, 1 invalid" in text
    assert f"error: {path}:2: byte 0xe9 at column {column} is not UTF-8 (file offset {offset})" in text
