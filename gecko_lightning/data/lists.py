"""Candidate lists: what a FRet record knows beyond its positive, for the distillation term.

A FRet record's `meta.candidates` holds every passage the embedder retrieved for its query, each with
the LLM's scores (`ql`, `rc`). The build writes those passages once per build to `LIST_PASSAGES`
(schema.py), so a record names them by id instead of repeating their text. Here a source's records
become list columns (`candidate_list`), the passages file is read once into an id map
(`ListPassages`), and each training row gets its list back as passages and teacher scores
(`list_texts`), positive first: `margin_mse` takes its margins from slot 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import LIST_PASSAGES, Passage, SchemaError
from gecko_lightning.errors import UserError

TEACHER_SCORES = ("ql", "rc")


def candidate_list(meta: dict[str, Any]) -> tuple[list[str] | None, list[float | None] | None, list[float | None] | None]:
    """(ids, QL scores, RC scores) of a record's candidates, its positive first, the rest in the build's
    order; (None, None, None) for a record without a list or whose positive is not in it."""
    cands = meta.get("candidates")
    positive = meta.get("positive_id")
    if not isinstance(cands, list) or not cands or not all(isinstance(c, dict) and "id" in c for c in cands):
        return None, None, None
    first = [c for c in cands if c["id"] == positive]
    if not first:
        return None, None, None
    ordered = first + [c for c in cands if c["id"] != positive]
    return [c["id"] for c in ordered], [c.get("ql") for c in ordered], [c.get("rc") for c in ordered]


@dataclass
class ListPassages:
    """The passages a source's lists name: id -> Passage, read once at setup."""

    by_id: dict[str, Passage]
    path: Path

    @classmethod
    def read(cls, dataset: str, name: str) -> ListPassages:
        path = Path(dataset) / LIST_PASSAGES
        if not path.is_file():
            raise UserError(
                f"data source {name!r}: its records carry candidate lists, but {path} is missing (a build from "
                f"before lists were kept, or a single shard file); re-export it with 0 LLM calls: "
                f"gecko build fret --from {dataset} --output_dir {dataset}-lists")
        by_id = {}
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                try:
                    row = json.loads(line)
                    by_id[row["id"]] = Passage(text=row["text"], title=row.get("title") or None)
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise SchemaError(f"{path}:{n}: not a passage line with 'id' and 'text' ({e}); re-export the build") from None
        return cls(by_id, path)

    def get(self, pid: str) -> Passage:
        try:
            return self.by_id[pid]
        except KeyError:
            raise SchemaError(f"{self.path}: candidate {pid!r} named by a record is missing; re-export the build") from None


def list_texts(row: dict[str, Any], passages: ListPassages | None, list_size: int | None,
               teacher_score: str) -> tuple[list[Passage], list[float]]:
    """A table row's list as (passages, teacher scores), at most `list_size`, positive first; empty when
    lists are not attached or the row has none. A candidate without the chosen score is left out."""
    if passages is None or row["list_ids"] is None or row[f"list_{teacher_score}"][0] is None:
        return [], []  # no list, or no score for the positive that margins are taken from
    pairs = [(pid, score) for pid, score in zip(row["list_ids"], row[f"list_{teacher_score}"]) if score is not None]
    if list_size is not None:
        pairs = pairs[:list_size]
    return [passages.get(pid) for pid, _ in pairs], [float(score) for _, score in pairs]
