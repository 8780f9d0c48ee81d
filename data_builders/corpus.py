"""Corpus reading, seed sampling, truncation, and the atomic JSONL files the stages hand to each other."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import atomic_write
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


def _raw_rows(cfg: CorpusConfig) -> Iterable[dict[str, Any]]:
    path = Path(resolve_path(cfg.path))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix in (".jsonl", ".json") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"corpus.path {cfg.path!r} does not exist")
        return (json.loads(line) for line in open(path, encoding="utf-8") if line.strip())
    from datasets import load_dataset  # a Hub dataset name: needs network

    return load_dataset(cfg.path, split=cfg.split)


def load_corpus(cfg: CorpusConfig) -> list[dict[str, Any]]:
    """Rows `{"id", "title", "text"}` in file order, the first `cfg.limit` of them."""
    rows = []
    for i, raw in enumerate(_raw_rows(cfg)):
        if cfg.limit is not None and len(rows) >= cfg.limit:
            break
        pid = raw.get("_id", raw.get("id"))
        text = raw.get("text")
        if pid is None or not isinstance(text, str):
            raise ValueError(f"corpus row {i} of {cfg.path!r} needs '_id' (or 'id') and 'text'; got keys {sorted(raw)}")
        if text.strip():
            rows.append({"id": str(pid), "title": raw.get("title") or None, "text": text})
    if not rows:
        raise ValueError(f"corpus {cfg.path!r} has no passages with text")
    if len({r["id"] for r in rows}) != len(rows):
        raise ValueError(f"corpus {cfg.path!r} has duplicate ids; passage ids must be unique")
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
