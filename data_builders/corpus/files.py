"""The atomic JSON and JSONL files that stages hand to each other."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import atomic_write


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
