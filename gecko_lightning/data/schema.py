"""The training record: the one contract between `data_builders/` and the trainer.

A record is one (task, query, positive, negative) example. Builders and converters
write records with `write_records` + `write_manifest`; DataModules read them with
`iter_records`. Every check runs on read, and every error names the file and line.

On disk a dataset is either a single file or a folder of shards plus `manifest.json`:
    shard-00000.jsonl | .jsonl.gz | .parquet
"""

from __future__ import annotations

import difflib
import gzip
import json
import logging
import os
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from gecko_lightning.errors import MissingPathError, UserError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# A FRet build's candidate-list passages: every passage its records' `meta.candidates` name, once, as
# {"id", "title", "text"} lines. A subfolder, so `dataset_files` never reads it as a shard.
LIST_PASSAGES = "candidates/passages.jsonl"
SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
OnError = Literal["raise", "skip"]
FIELDS = ("id", "source", "task", "query", "positive", "negative", "symmetric", "meta")
REQUIRED = ("id", "source", "task", "query", "positive")
PASSAGE_FIELDS = ("text", "title")


class SchemaError(UserError):
    """A record that breaks the schema; the message starts with `file:line`."""


@dataclass
class Passage:
    text: str
    title: str | None = None


@dataclass
class Record:
    id: str
    source: str
    task: str
    query: str
    positive: Passage
    negative: Passage | None = None
    symmetric: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "<record>") -> Record:
        """Validate a parsed JSON object; raise `SchemaError` naming `where` on any problem.

        Nothing is coerced: each field must already have its type, and an unknown key is an
        error (a misspelt 'qeury' would otherwise train on nothing); extras belong under `meta`.
        """
        if not isinstance(d, dict):
            raise SchemaError(f"{where}: expected a JSON object, got {_show(d)}")
        _check_keys(d, FIELDS, where)
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise SchemaError(f"{where}: missing field(s) {missing}")
        for key in ("id", "query"):
            if not isinstance(d[key], str) or not d[key].strip():
                raise SchemaError(f"{where}: '{key}' must be a non-empty string, got {_show(d[key])}")
        for key in ("source", "task"):
            if not isinstance(d[key], str):
                raise SchemaError(f"{where}: '{key}' must be a string, got {_show(d[key])}")
        positive = _passage(d["positive"], "positive", where)
        if positive is None:
            raise SchemaError(f"{where}: 'positive' must not be null")
        symmetric = d.get("symmetric", False)
        if not isinstance(symmetric, bool):
            raise SchemaError(f"{where}: 'symmetric' must be true or false, got {_show(symmetric)}")
        meta = d.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise SchemaError(f"{where}: 'meta' must be an object or null, got {_show(meta)}")
        return cls(
            id=d["id"], source=d["source"], task=d["task"], query=d["query"], positive=positive,
            negative=_passage(d.get("negative"), "negative", where), symmetric=symmetric, meta=meta or {},
        )


def _show(value: Any) -> str:
    """A value as it looks in the JSON file, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_keys(d: dict, allowed: tuple[str, ...], where: str, prefix: str = "") -> None:
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise SchemaError(f"{where}: unknown field {prefix + key!r}{hint}; extra fields belong under 'meta'")


def _passage(p: Any, name: str, where: str) -> Passage | None:
    if p is None:
        return None
    if isinstance(p, str):  # a bare string is a passage without title
        p = {"text": p}
    if not isinstance(p, dict):
        raise SchemaError(f"{where}: '{name}' must be an object with 'text', got {_show(p)}")
    _check_keys(p, PASSAGE_FIELDS, where, prefix=f"{name}.")
    text = p.get("text")
    if not isinstance(text, str) or not text.strip():
        raise SchemaError(f"{where}: '{name}.text' must be a non-empty string, got {_show(text)}")
    title = p.get("title")
    if title is not None and not isinstance(title, str):
        raise SchemaError(f"{where}: '{name}.title' must be a string or null, got {_show(title)}")
    return Passage(text=text, title=title or None)


class _NotJSON(Exception):
    """Raised inside json.loads by the strict hooks below."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number; write a finite number or null")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) < len(pairs):  # json.loads alone would keep the last value without a word
        keys = [k for k, _ in pairs]
        repeated = next(k for k in keys if keys.count(k) > 1)
        raise _NotJSON(f"key {repeated!r} appears twice in one object")
    return d


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json_line(text: str, where: str) -> Any:
    """Strict JSON of one line: NaN/Infinity, a repeated key or a lone surrogate is a `SchemaError` at `where`.

    Python's json accepts all three, and each would silently become a wrong value downstream.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        # e.msg may end in "at" ("Unterminated string starting at"): say the column once.
        raise SchemaError(f"{where}: malformed JSON ({e.msg.removesuffix(' at')} at column {e.colno})") from None
    except _NotJSON as e:
        raise SchemaError(f"{where}: malformed JSON ({e})") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise SchemaError(f"{where}: malformed JSON (a \\u escape makes a lone surrogate, which is not text)") from None
    return value


def decode_lines(path: Path, stream: IO[bytes]) -> Iterator[tuple[int, str | SchemaError]]:
    """(line number, text without its line end) of each line of a binary stream, or a `SchemaError` for
    a line that is not UTF-8.

    Decoding line by line names the real line and byte (a text-mode reader reports a position in its
    read buffer) and lets the lines after a bad one still be read. A gzip stream that breaks off ends
    with one error for the line where it broke.
    """
    n, offset = 0, 0
    while True:
        try:
            raw = stream.readline()
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            yield n + 1, SchemaError(f"{path}:{n + 1}: the gzip data is cut short or corrupt ({e}); the rest of the file is unreadable")
            return
        if not raw:
            return
        n += 1
        try:
            # utf-8-sig drops the byte-order mark that Windows editors put at the start of a file.
            line: str | SchemaError = raw.decode("utf-8-sig" if n == 1 else "utf-8").removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError as e:
            line = SchemaError(
                f"{path}:{n}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8 "
                f"(file offset {offset + e.start}); save the file as UTF-8"
            )
        offset += len(raw)
        yield n, line


@dataclass
class ReadStats:
    """What a read saw; `skipped` lists `file:line: reason` for every dropped row."""

    records: int = 0
    skipped: list[str] = field(default_factory=list)
    sources: Counter = field(default_factory=Counter)
    tasks: Counter = field(default_factory=Counter)


def dataset_files(path: str | os.PathLike) -> list[Path]:
    """The shard files of a dataset: the file itself, or the sorted shards of a folder."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(
            f"dataset path {str(path)!r} does not exist; fix the path, or build/convert the data first"
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SHARD_SUFFIXES))
    if not files:
        raise MissingPathError(f"no record shards ({', '.join(SHARD_SUFFIXES)}) in folder {str(path)!r}")
    return files


def _raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object or SchemaError) for one shard."""
    if path.name.endswith(".parquet"):
        yield from _parquet_rows(path)
        return
    gz = path.name.endswith(".gz")
    if gz and path.stat().st_size == 0:  # gzip reads 0 bytes as an empty stream: a lost shard would pass
        yield 1, SchemaError(f"{path}:1: the file is empty, which is not gzip data; write the shard again")
        return
    with (gzip.open if gz else open)(path, "rb") as f:
        for i, line in decode_lines(path, f):
            if isinstance(line, str) and line.strip():
                try:
                    line = parse_json_line(line, f"{path}:{i}")
                except SchemaError as e:
                    line = e
            if not isinstance(line, str):
                yield i, line


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise SchemaError(f"{path}: not a readable parquet file ({e}); write it again") from None
    for i, row in enumerate(rows, start=1):
        if isinstance(row.get("meta"), str):  # written as JSON text, see write_records
            try:
                row["meta"] = parse_json_line(row["meta"], f"{path}:{i}: meta")
            except SchemaError as e:
                yield i, e
                continue
        yield i, row


def iter_records(
    path: str | os.PathLike, on_error: OnError = "raise", stats: ReadStats | None = None
) -> Iterator[Record]:
    """Read and validate every record of a file or folder.

    `on_error="raise"` stops at the first bad row; `"skip"` logs it, counts it in
    `stats.skipped` and goes on. Nothing is dropped without a trace.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    stats = stats if stats is not None else ReadStats()
    for file in dataset_files(path):
        for line, raw in _raw_rows(file):
            try:
                if isinstance(raw, SchemaError):
                    raise raw
                rec = Record.from_dict(raw, where=f"{file}:{line}")
            except SchemaError as e:
                if on_error == "raise":
                    raise
                log.warning("skipping bad record: %s", e)
                stats.skipped.append(str(e))
                continue
            stats.records += 1
            stats.sources[rec.source] += 1
            stats.tasks[rec.task] += 1
            yield rec


def read_records(path: str | os.PathLike, on_error: OnError = "raise") -> tuple[list[Record], ReadStats]:
    stats = ReadStats()
    return list(iter_records(path, on_error, stats)), stats


def atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file 0600; give it the mode open() would, so others can read the shards.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            e.filename = str(path)  # a failed write names no file, or the temp one: the user knows `path`
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_records(records: Iterable[Record | dict], path: str | os.PathLike) -> int:
    """Write one shard atomically; the format follows the suffix. Returns the count written."""
    path = Path(path)
    # Records are checked like dicts: a writer must never produce what the reader rejects.
    rows = [Record.from_dict(r.to_dict() if isinstance(r, Record) else r, f"{path}: record #{k}").to_dict()
            for k, r in enumerate(records, start=1)]
    lines = [_json_text(r, f"{path}: record {r['id']!r}") for r in rows]

    def write(tmp: Path) -> None:
        if path.name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            for r in rows:  # parquet needs one type per column: store meta as JSON text
                r["meta"] = _json_text(r["meta"], f"{path}: record {r['id']!r}")
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            return
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)

    if not path.name.endswith(SHARD_SUFFIXES):
        raise ValueError(f"record file {str(path)!r} must end with one of {SHARD_SUFFIXES}")
    atomic_write(path, write)
    return len(rows)


def _json_text(value: Any, where: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError as e:  # NaN or Infinity somewhere in meta
        raise SchemaError(f"{where}: {e}; store a finite number or null") from None


def write_manifest(folder: str | os.PathLike, **fields: Any) -> Path:
    """Write `manifest.json` atomically, adding the schema version and shard list."""
    folder = Path(folder)
    manifest = {"schema_version": SCHEMA_VERSION, **fields}
    manifest.setdefault("shards", [p.name for p in dataset_files(folder)])
    out = folder / MANIFEST
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n"))
    return out


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's manifest, or {} for a plain file or a folder without one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: not a readable manifest ({e}); restore it or build the data again") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise SchemaError(f"{path}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    return manifest
