"""A user's own queries (`corpus.queries`): a search log, tickets or FAQ questions, without labels.

Three layouts, told apart by the file's suffix:
    .jsonl / .json   one object a line with `_id` (or `id`) and `text` (BEIR's queries.jsonl)
    .tsv             id <TAB> text; a first line whose first field is id, _id, qid or query-id is a header
    anything else    one query a line; its id is its line number

Each query becomes a row of `stages/generate.jsonl` with `seed_id: null` and its `query_id`, and from
there it is retrieved for, scored, selected and held out like a generated one (fret/split.py `row_key`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from gecko_lightning.errors import MissingPathError, UserError
from gecko_lightning.paths import resolve_path

from ..config import CorpusConfig

HEADER_IDS = ("id", "_id", "qid", "query-id", "query_id")
GIVEN = "given"  # the task_type of a given query in stage files and manifests


def read_queries(path: str) -> list[tuple[str, str, int]]:
    """(id, text, line number) of every non-blank query of the file, in file order."""
    file = Path(resolve_path(path)).expanduser()
    if not file.is_file():
        raise MissingPathError(f"corpus.queries {path!r}: no such file; give a JSONL (_id, text), a TSV (id, text) "
                               f"or a text file of one query per line")
    lines = file.read_text(encoding="utf-8-sig").splitlines()
    if file.suffix in (".jsonl", ".json"):
        return [q for n, line in enumerate(lines, start=1) if line.strip() for q in [_json_query(line, file, n)]]
    if file.suffix == ".tsv":
        start = 2 if lines and lines[0].split("\t")[0].strip().lower() in HEADER_IDS else 1
        return [_tsv_query(line, file, n) for n, line in enumerate(lines[start - 1 :], start=start) if line.strip()]
    return [(str(n), line.strip(), n) for n, line in enumerate(lines, start=1) if line.strip()]


def _json_query(line: str, file: Path, n: int) -> tuple[str, str, int]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{file}:{n}: not a JSON object ({e.msg}); write one {{\"_id\": ..., \"text\": ...}} per line") from None
    qid = row.get("_id", row.get("id")) if isinstance(row, dict) else None
    text = row.get("text") if isinstance(row, dict) else None
    if qid is None or not isinstance(text, str) or not text.strip():
        raise UserError(f"{file}:{n}: a query needs `_id` (or `id`) and a non-empty `text`, got {line[:80]!r}")
    return str(qid), text.strip(), n


def _tsv_query(line: str, file: Path, n: int) -> tuple[str, str, int]:
    qid, tab, text = line.partition("\t")
    if not tab or not text.strip() or not qid.strip():
        raise UserError(f"{file}:{n}: expected `id<TAB>text`, got {line[:80]!r}")
    return qid.strip(), text.strip(), n


def load_queries(cfg: CorpusConfig, truncate: Callable[[str, int], tuple[str, bool]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows `generate` writes for `cfg.queries`, and their statistics (count, how many were cut)."""
    if "\n" in cfg.queries_task or not cfg.queries_task.strip():
        raise UserError(f"corpus.queries_task must be one non-empty line, got {cfg.queries_task!r}")
    queries = read_queries(cfg.queries)
    if not queries:
        raise UserError(f"corpus.queries {cfg.queries!r} holds no query; give one query per line (or per JSONL object)")
    seen: dict[str, int] = {}
    for qid, _, n in queries:
        if qid in seen:
            raise UserError(f"corpus.queries {cfg.queries!r}: query id {qid!r} appears on lines {seen[qid]} and {n}; "
                            f"ids must be unique")
        seen[qid] = n
    rows, cut = [], 0
    for qid, text, _ in queries:
        text, was_cut = truncate(text, cfg.max_query_tokens)
        cut += was_cut
        rows.append({"seed_id": None, "query_id": qid, "task_type": GIVEN, "task": cfg.queries_task.strip(),
                     "query": text, "raw": None, "failure": None, "fallback": False})
    return rows, {"given_queries": len(rows), "given_queries_cut": cut, "max_query_tokens": cfg.max_query_tokens}
