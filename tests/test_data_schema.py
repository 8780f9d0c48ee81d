"""The record schema: nothing coerced, every bad row named by file:line, files readable by others."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gecko_lightning.data.schema import (
    ReadStats, Record, SchemaError, iter_records, read_records, write_manifest, write_records,
)

TINY_FRET = Path(__file__).resolve().parents[1] / "configs" / "assets" / "tiny_fret"
GOOD = {"id": "r0", "source": "s", "task": "t", "query": "q", "positive": {"text": "p", "title": None},
        "negative": None, "symmetric": False, "meta": {}}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_valid_records_read_back_as_their_json(tmp_path):
    """The reference is the JSON itself: each record's fields equal the parsed line, defaults filled."""
    rows = [GOOD, {**GOOD, "id": "r1", "symmetric": True, "meta": {"label": "x"}, "negative": {"text": "n", "title": "T"}}]
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in rows])
    records, stats = read_records(path)
    assert [r.to_dict() for r in records] == rows and stats.skipped == []


@pytest.mark.parametrize("field, raw, message", [
    ("symmetric", '"false"', "'symmetric' must be true or false, got \"false\""),
    ("symmetric", "1", "'symmetric' must be true or false, got 1"),
    ("symmetric", "NaN", "NaN is not a JSON number"),
    ("id", "Infinity", "Infinity is not a JSON number"),
    ("id", "7", "'id' must be a non-empty string, got 7"),
    ("query", "-Infinity", "-Infinity is not a JSON number"),
    ("meta", "0", "'meta' must be an object or null, got 0"),
])
def test_wrong_types_and_nonstandard_numbers_are_errors(tmp_path, field, raw, message):
    line = json.dumps({k: v for k, v in GOOD.items() if k != field})[:-1] + f', "{field}": {raw}}}'
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(SchemaError) as e:
        list(iter_records(path))
    assert str(e.value).startswith(f"{path}:2: ") and message in str(e.value)


@pytest.mark.parametrize("key, hint", [
    ("qeury", " (did you mean 'query'?)"),
    ("extra_key", ""),
])
def test_unknown_top_level_key_is_an_error_that_points_to_meta(tmp_path, key, hint):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({**GOOD, key: "x"})])
    with pytest.raises(SchemaError) as e:
        list(iter_records(path))
    assert str(e.value) == f"{path}:1: unknown field '{key}'{hint}; extra fields belong under 'meta'"


def test_unknown_passage_key_and_repeated_key_are_errors(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        json.dumps({**GOOD, "positive": {"text": "p", "tilte": "T"}}),
        json.dumps(GOOD)[:-1] + ', "id": "other"}',
    ])
    stats = ReadStats()
    assert list(iter_records(path, on_error="skip", stats=stats)) == []
    assert stats.skipped == [
        f"{path}:1: unknown field 'positive.tilte' (did you mean 'positive.title'?); extra fields belong under 'meta'",
        f"{path}:2: malformed JSON (key 'id' appears twice in one object)",
    ]


def test_validate_rejects_what_fit_would_misread(tmp_path):
    from gecko_lightning.data.cli import validate

    path = write_lines(tmp_path / "d.jsonl", [json.dumps({**GOOD, "symmetric": "false"})])
    assert validate(str(path), out=(out := __import__("io").StringIO())) == 1
    assert f"error: {path}:1: 'symmetric' must be true or false" in out.getvalue()


def non_utf8_file(tmp_path: Path, bad_line: int = 50) -> tuple[Path, int]:
    """A record file whose line `bad_line` holds a latin-1 'é'; returns the path and that byte's file offset."""
    lines = [json.dumps({**GOOD, "id": f"r{i}", "query": "q " * 40}) for i in range(1, 61)]
    data = bytearray("\n".join(lines).encode() + b"\n")
    start = sum(len(line) + 1 for line in lines[: bad_line - 1])
    offset = data.index(b'"query"', start) + len('"query": "')
    data[offset] = 0xE9
    path = tmp_path / "d.jsonl"
    path.write_bytes(bytes(data))
    return path, offset


def test_non_utf8_byte_is_located_by_line_and_file_offset(tmp_path):
    path, offset = non_utf8_file(tmp_path)
    data = path.read_bytes()
    line = data[:offset].count(b"\n") + 1  # the reference: count newlines, do not trust the reader
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    with pytest.raises(SchemaError) as e:
        list(iter_records(path))
    assert str(e.value) == (
        f"{path}:{line}: byte 0xe9 at column {column} is not UTF-8 (file offset {offset}); save the file as UTF-8"
    )


def test_non_utf8_line_is_skipped_and_the_rest_is_read(tmp_path):
    path, _ = non_utf8_file(tmp_path)
    records, stats = read_records(path, on_error="skip")
    assert [r.id for r in records] == [f"r{i}" for i in range(1, 61) if i != 50]
    assert len(stats.skipped) == 1 and stats.skipped[0].startswith(f"{path}:50: byte 0xe9")


def test_malformed_json_message_says_at_once(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"id": "unterminated'])
    with pytest.raises(SchemaError) as e:
        list(iter_records(path))
    assert str(e.value) == f"{path}:1: malformed JSON (Unterminated string starting at column 8)"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_shards_and_manifest_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_records([Record.from_dict(GOOD)], tmp_path / "shard-00000.jsonl")
        write_manifest(tmp_path, records=1)
        (tmp_path / "plain.txt").write_text("")  # the reference: a file that open() creates under this umask
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("shard-00000.jsonl", "manifest.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_the_shipped_record_sets_still_read():
    assets = TINY_FRET.parent
    for folder in ("tiny_fret", "tiny_snli", "tiny_banking77"):
        records, stats = read_records(assets / folder)
        assert records and stats.skipped == [], folder


def test_an_empty_gzip_shard_is_an_error_not_zero_records(tmp_path):
    """Found by tests/test_fuzz_inputs.py: a .gz cut to 0 bytes read as an empty shard, so a folder
    that lost one shard's content would train on the others without a word."""
    write_records([Record.from_dict(GOOD)], tmp_path / "shard-00000.jsonl.gz")
    (tmp_path / "shard-00001.jsonl.gz").write_bytes(b"")
    records, stats = read_records(tmp_path, on_error="skip")
    assert len(records) == 1
    assert stats.skipped == [
        f"{tmp_path / 'shard-00001.jsonl.gz'}:1: the file is empty, which is not gzip data; write the shard again"
    ]


def test_an_unknown_key_with_a_line_break_stays_one_line(tmp_path):
    """Found by tests/test_fuzz_inputs.py: the key was printed raw, splitting the message in two."""
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({**GOOD, "\n": "x"})])
    with pytest.raises(SchemaError) as e:
        list(iter_records(path))
    assert str(e.value) == f"{path}:1: unknown field '\\n'; extra fields belong under 'meta'"
