"""The training record: the one contract between `data_builders/` and the trainer.

A record is one (task, query, positive, negative) example. Builders and converters
write records with `write_records` + `write_manifest`; DataModules read them with
`iter_records`. Every check runs on read, and every error names the file and line.

On disk a dataset is either a single file or a folder of shards plus `manifest.json`:
    shard-00000.jsonl | .jsonl.gz | .parquet
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SHARD_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
OnError = Literal["raise", "skip"]


class SchemaError(ValueError):
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
        """Validate a parsed JSON object; raise `SchemaError` naming `where` on any problem."""
        if not isinstance(d, dict):
            raise SchemaError(f"{where}: expected a JSON object, got {type(d).__name__}")
        missing = [k for k in ("id", "source", "task", "query", "positive") if k not in d]
        if missing:
            raise SchemaError(f"{where}: missing field(s) {missing}")
        for key in ("source", "task"):
            if not isinstance(d[key], str):
                raise SchemaError(f"{where}: field '{key}' must be a string, got {d[key]!r}")
        if not isinstance(d["query"], str) or not d["query"].strip():
            raise SchemaError(f"{where}: empty or non-string 'query'")
        positive = _passage(d["positive"], "positive", where)
        if positive is None:
            raise SchemaError(f"{where}: 'positive' must not be null")
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise SchemaError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
        return cls(
            id=str(d["id"]),
            source=d["source"],
            task=d["task"],
            query=d["query"],
            positive=positive,
            negative=_passage(d.get("negative"), "negative", where),
            symmetric=bool(d.get("symmetric", False)),
            meta=meta,
        )


def _passage(p: Any, name: str, where: str) -> Passage | None:
    if p is None:
        return None
    if isinstance(p, str):  # a bare string is a passage without title
        p = {"text": p}
    if not isinstance(p, dict):
        raise SchemaError(f"{where}: '{name}' must be an object with 'text', got {type(p).__name__}")
    text = p.get("text")
    if not isinstance(text, str) or not text.strip():
        raise SchemaError(f"{where}: empty or missing '{name}.text'")
    title = p.get("title")
    if title is not None and not isinstance(title, str):
        raise SchemaError(f"{where}: '{name}.title' must be a string or null, got {title!r}")
    return Passage(text=text, title=title or None)


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
        raise FileNotFoundError(f"dataset path {str(path)!r} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(SHARD_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no record shards ({', '.join(SHARD_SUFFIXES)}) in folder {str(path)!r}")
    return files


def _raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object or SchemaError) for one shard."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            if isinstance(row.get("meta"), str):  # written as JSON text, see write_records
                row["meta"] = json.loads(row["meta"])
            yield i, row
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                yield i, SchemaError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})")


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
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_records(records: Iterable[Record | dict], path: str | os.PathLike) -> int:
    """Write one shard atomically; the format follows the suffix. Returns the count written."""
    path = Path(path)
    rows = [r.to_dict() if isinstance(r, Record) else Record.from_dict(r).to_dict() for r in records]

    def write(tmp: Path) -> None:
        if path.name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            for r in rows:  # parquet needs one type per column: store meta as JSON text
                r["meta"] = json.dumps(r["meta"])
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            return
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    if not path.name.endswith(SHARD_SUFFIXES):
        raise ValueError(f"record file {str(path)!r} must end with one of {SHARD_SUFFIXES}")
    atomic_write(path, write)
    return len(rows)


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
    manifest = json.loads(path.read_text())
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(f"{path}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    return manifest
