"""Corpus reading, seed sampling, truncation, and the atomic JSONL files the stages hand to each other."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import atomic_write
from gecko_lightning.errors import MissingPathError, UserError
from gecko_lightning.paths import resolve_path

from .config import CorpusConfig


def write_json(path: Path, obj: Any) -> None:
    """One JSON document, atomically (see `write_jsonl`)."""
    write_jsonl(path, [obj], indent=2)


def write_jsonl(path: Path, rows: Iterable[Any], indent: int | None = None) -> int:
    """Temp file + rename: a killed build leaves the old file or the new one, never half of one."""
    n = 0

    def write(tmp: Path) -> None:
        nonlocal n
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, indent=indent) + "\n")
                n += 1

    atomic_write(path, write)
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the stage that writes it first (or run all stages)")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number; write a finite number or null")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"key {twice!r} appears twice in one object")
    return dict(pairs)


def _jsonl_rows(path: Path) -> Iterable[tuple[str, Any]]:
    """(location, row) per non-blank line; a bad line is an error naming `file:line`."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{where}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8; "
                                f"save the corpus as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
                json.dumps(row, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{where}: a string holds a lone surrogate escape (\\ud800-\\udfff), "
                                f"which is not text; fix the escape") from None
            except ValueError as e:
                raise UserError(f"{where}: malformed JSON ({e}); one JSON object per line") from None
            yield where, row


def _raw_rows(cfg: CorpusConfig) -> Iterable[tuple[str, Any]]:
    path = Path(resolve_path(cfg.path))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return ((f"{path} row {i}", r) for i, r in enumerate(pq.read_table(path).to_pylist()))
    if path.suffix in (".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise MissingPathError(f"corpus.path {cfg.path!r} does not exist; point it at a JSONL or Parquet corpus")
        return _jsonl_rows(path)
    from datasets import load_dataset  # a Hub dataset name: needs network

    return ((f"{cfg.path} row {i}", r) for i, r in enumerate(load_dataset(cfg.path, split=cfg.split)))


def load_corpus(cfg: CorpusConfig, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows `{"id", "title", "text"}` in file order, the first `cfg.limit` of them.

    A passage whose text is empty or blank is skipped; its location goes into `skipped` (when given)
    so the caller can count and report it. Anything else malformed is an error naming its line.
    """
    rows, seen = [], {}
    for where, raw in _raw_rows(cfg):
        if cfg.limit is not None and len(rows) >= cfg.limit:
            break
        if not isinstance(raw, dict):
            raise UserError(f"{where}: a corpus row must be a JSON object, got {type(raw).__name__}")
        pid = raw.get("_id", raw.get("id"))
        text, title = raw.get("text"), raw.get("title")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) == "":
            raise UserError(f"{where}: needs '_id' (or 'id'), a non-empty string or integer; got {pid!r}")
        if not isinstance(text, str):
            raise UserError(f"{where}: 'text' must be a string, got {type(text).__name__}")
        if title is not None and not isinstance(title, str):
            raise UserError(f"{where}: 'title' must be a string or null, got {type(title).__name__}")
        if str(pid) in seen:
            raise UserError(f"{where}: duplicate passage id {str(pid)!r} (first at {seen[str(pid)]}); ids must be unique")
        seen[str(pid)] = where
        if not text.strip():
            if skipped is not None:
                skipped.append(where)
            continue
        rows.append({"id": str(pid), "title": title or None, "text": text})
    if not rows:
        raise UserError(f"corpus {cfg.path!r} has no passages with text")
    return rows


def truncate_corpus(rows: list[dict[str, Any]], budget: int, truncate: Callable[[str, int], tuple[str, bool]]) -> int:
    """Cut every passage text to `budget` tokens in place; returns how many were cut."""
    cut = 0
    for row in rows:
        row["text"], was_cut = truncate(row["text"], budget)
        cut += was_cut
    return cut


def sample_seeds(rows: list[dict[str, Any]], num_seeds: int | None, seed: int) -> list[str]:
    """Seed passage ids: all of them, or a seeded sample kept in corpus order."""
    ids = [r["id"] for r in rows]
    if num_seeds is None or num_seeds >= len(ids):
        return ids
    chosen = set(random.Random(seed).sample(ids, num_seeds))
    return [i for i in ids if i in chosen]
