"""Readers for local evaluation files: BEIR folders, STS pair files, classification splits.

Every reader raises `EvalDataError` naming the file (and line) and the fix, because a silent
skip here turns into a wrong number in a paper table.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gecko_lightning.data.schema import SchemaError, decode_lines, parse_json_line
from gecko_lightning.errors import UserError


class EvalDataError(UserError):
    """An evaluation file is missing or malformed; the message names the path and the fix."""


@dataclass
class BeirSet:
    """A BEIR retrieval set: corpus doc id -> (title, text), query id -> text, qrels query -> doc -> grade;
    tasks: query id -> the task its query was written for (`metadata.task`, as a FRet build's test split
    writes it), for the queries that carry one."""

    name: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    tasks: dict[str, str] = field(default_factory=dict)


@dataclass
class PairSet:
    """Sentence pairs with gold similarity scores (STS)."""

    name: str
    s1: list[str]
    s2: list[str]
    scores: list[float]


@dataclass
class LabelSet:
    """Texts with class labels, one split."""

    path: Path
    texts: list[str]
    labels: list[str]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; a byte that is not UTF-8 is an error naming its line."""
    with path.open("rb") as f:
        for n, line in decode_lines(path, f):
            if isinstance(line, SchemaError):
                raise EvalDataError(str(line)) from None
            yield n, line


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line, parsed strictly (no NaN, no repeated key)."""
    if not path.is_file():
        raise EvalDataError(f"{path} not found: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    rows = []
    for n, line in _lines(path):
        if line.strip():
            try:
                row = parse_json_line(line, f"{path}:{n}")
            except SchemaError as e:
                raise EvalDataError(f"{e}; fix or remove that line") from None
            if not isinstance(row, dict):
                raise EvalDataError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append((n, row))
    return rows


def _string(row: dict[str, Any], key: str, where: str, nonempty: bool = False, nullable: bool = False) -> str:
    """row[key], which must already be a string: an id written as a number is not silently turned into one."""
    if key not in row:
        raise EvalDataError(f"{where}: no '{key}' field; each row needs a string '{key}'")
    value = row[key]
    if value is None and nullable:
        return ""
    if not isinstance(value, str) or (nonempty and not value):
        kind = "a non-empty string" if nonempty else "a string"
        raise EvalDataError(f"{where}: '{key}' must be {kind}, got {json.dumps(value)[:60]}")
    return value


def _beir_rows(path: Path, what: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """_id -> (line, row) of corpus.jsonl or queries.jsonl; ids must be unique strings."""
    rows: dict[str, tuple[int, dict[str, Any]]] = {}
    for n, row in _read_jsonl(path):
        doc_id = _string(row, "_id", f"{path}:{n}", nonempty=True)
        if doc_id in rows:
            raise EvalDataError(f"{path}:{n}: _id {doc_id!r} is already on line {rows[doc_id][0]}; ids must be unique")
        rows[doc_id] = (n, row)
    if not rows:
        raise EvalDataError(f"{path} holds no {what}")
    return rows


def _qrels_rows(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """(line, query id, doc id, grade) of a qrels TSV: query-id, corpus-id, integer score; an optional header."""
    for n, line in _lines(path):
        row = line.split("\t")
        if not line.strip() or (n == 1 and row[0] == "query-id"):
            continue
        if len(row) != 3 or not row[0] or not row[1]:
            raise EvalDataError(f"{path}:{n}: has {len(row)} columns, expected query-id<TAB>corpus-id<TAB>score")
        yield n, row[0], row[1], _grade(row[2], path, n)


def read_qrels(path: Path, queries: tuple[Path, Container[str]] | None = None,
               corpus: tuple[Path, Container[str]] | None = None) -> dict[str, dict[str, int]]:
    """qrels TSV -> query -> doc -> grade; each (query, doc) once, at least one grade > 0.

    With `queries` and `corpus` as (file, ids), every row must name a known query and document: a
    judged document missing from the corpus would count as relevant and never retrieved, lowering
    nDCG silently.
    """
    qrels: dict[str, dict[str, int]] = {}
    first: dict[tuple[str, str], int] = {}
    for n, query, doc, grade in _qrels_rows(path):
        for column, name, known in (("query-id", query, queries), ("corpus-id", doc, corpus)):
            if known is not None and name not in known[1]:
                raise EvalDataError(f"{path}:{n}: {column} {name!r} is not in {known[0]}; fix the id or add it there")
        if (query, doc) in first:
            raise EvalDataError(f"{path}:{n}: {query!r} -> {doc!r} is graded again (first on line {first[query, doc]}); keep one row")
        first[query, doc] = n
        qrels.setdefault(query, {})[doc] = grade
    if not any(g > 0 for rel in qrels.values() for g in rel.values()):
        raise EvalDataError(f"{path}: no row has a score > 0, so no query has a relevant document to find")
    return qrels


def _grade(value: str, path: Path, line: int) -> int:
    """An integer relevance grade; '1.0' is 1, but '1.5', 'nan' or 'inf' cannot be one."""
    number = _float(value)
    if number is None or not math.isfinite(number) or not number.is_integer():
        raise EvalDataError(f"{path}:{line}: score {value!r} is not an integer grade; qrels scores are 0, 1, 2, ...")
    return int(number)


def load_beir(folder: str | Path, split: str = "test") -> BeirSet:
    """Read corpus.jsonl, queries.jsonl and qrels/<split>.tsv; keep only queries that have qrels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalDataError(f"BEIR folder {folder} not found; pass a folder holding corpus.jsonl, queries.jsonl, qrels/{split}.tsv")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise EvalDataError(f"qrels file {qrels_path} not found: a BEIR folder needs qrels/<split>.tsv (query-id, corpus-id, score)")
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    corpus = {i: (_string(r, "title", f"{corpus_path}:{n}", nullable=True) if "title" in r else "",
                  _string(r, "text", f"{corpus_path}:{n}"))
              for i, (n, r) in _beir_rows(corpus_path, "documents").items()}
    rows = _beir_rows(queries_path, "queries")
    queries = {i: _string(r, "text", f"{queries_path}:{n}") for i, (n, r) in rows.items()}
    qrels = read_qrels(qrels_path, (queries_path, queries), (corpus_path, corpus))
    tasks = {i: task for i, (_, r) in rows.items() if i in qrels
             and isinstance(r.get("metadata"), dict) and isinstance(task := r["metadata"].get("task"), str) and task.strip()}
    return BeirSet(folder.name, corpus, {q: t for q, t in queries.items() if q in qrels}, qrels, tasks)


# Plain decimal notation only: float() also takes 'nan', 'inf', '1_0' (10) and non-ASCII digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _float(value: str) -> float | None:
    text = value.strip(" \t")  # str.strip() would also drop control characters such as \x1c
    return float(text) if _DECIMAL.fullmatch(text) else None


def _number(value: str, path: Path, line: int) -> float:
    number = _float(value)
    if number is None and value.strip(" \t").lower().lstrip("+-") not in ("nan", "inf", "infinity"):
        raise EvalDataError(f"{path}:{line}: score {value!r} is not a number; STS/qrels scores must be numeric")
    if number is None or not math.isfinite(number):
        raise EvalDataError(f"{path}:{line}: score {value!r} is not a finite number; fix or remove that pair")
    return number


def _sniff_delimiter(header: str) -> str:
    return max("\t,;", key=header.count)


def load_sts(path: str | Path) -> PairSet:
    """STS pairs from the STS Benchmark TSV (genre, file, year, id, score, s1, s2; no header)
    or from a .jsonl / .csv / .tsv with columns s1, s2, score (sentence1/sentence2 also accepted)."""
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"STS file {path} not found")
    if path.suffix == ".jsonl":
        return _pairs(path, [(n, *_json_pair(r, f"{path}:{n}")) for n, r in _read_jsonl(path)])
    lines = [(n, line) for n, line in _lines(path) if line.strip()]
    delim = _sniff_delimiter(lines[0][1]) if lines else "\t"
    header = [h.strip().lower() for h in lines[0][1].split(delim)] if lines else []
    if {"score"} <= set(header) and ({"s1", "s2"} <= set(header) or {"sentence1", "sentence2"} <= set(header)):
        return _pairs(path, _header_rows(path, lines[1:], header, delim))
    # STS Benchmark: fields are not quoted, and some lines carry extra trailing columns (sources).
    return _pairs(path, [(n, *_stsb_fields(line, path, n)) for n, line in lines])


def _json_pair(row: dict[str, Any], where: str) -> tuple[str, str, str]:
    a, b = ("s1", "s2") if "s1" in row else ("sentence1", "sentence2")
    score = row.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise EvalDataError(f"{where}: 'score' must be a number, got {json.dumps(score)[:60]}")
    return _string(row, a, where), _string(row, b, where), repr(score)


def _header_rows(path: Path, lines: list[tuple[int, str]], header: list[str], delim: str) -> list[tuple[int, str, str, str]]:
    """Rows of a csv/tsv with a header; quoting follows the csv module, so "a, b" is one field."""
    a, b = ("s1", "s2") if "s1" in header else ("sentence1", "sentence2")
    rows = []
    for n, line in lines:
        try:
            (fields,) = csv.reader([line], delimiter=delim)
        except csv.Error as e:
            problem = "a carriage return inside an unquoted field" if "new-line" in str(e) else f"unreadable row ({e})"
            raise EvalDataError(f"{path}:{n}: {problem}; remove it or quote the field") from None
        if len(fields) != len(header):
            raise EvalDataError(f"{path}:{n}: has {len(fields)} columns, the header has {len(header)}")
        row = dict(zip(header, fields))
        rows.append((n, row[a], row[b], row["score"]))
    return rows


def _stsb_fields(line: str, path: Path, n: int) -> tuple[str, str, str]:
    cols = line.split("\t")
    if len(cols) < 7:
        raise EvalDataError(
            f"{path}:{n}: has {len(cols)} tab-separated columns; expected the STS Benchmark layout "
            "(genre, file, year, id, score, s1, s2) or a header line with s1, s2, score"
        )
    return cols[5], cols[6], cols[4]


def _pairs(path: Path, rows: list[tuple[int, str, str, str]]) -> PairSet:
    scores = [_number(score, path, n) for n, _, _, score in rows]
    if len(rows) < 2:
        raise EvalDataError(f"STS file {path} holds {len(rows)} pair(s); Spearman needs at least 2")
    if len(set(scores)) == 1:
        raise EvalDataError(f"{path}: every score is {scores[0]}; Spearman needs two different scores")
    return PairSet(path.name, [r[1] for r in rows], [r[2] for r in rows], scores)


def read_labelled(path: Path) -> LabelSet:
    """A .jsonl with text/label or a .csv/.tsv/.txt with a header naming text and label (or label_name, category)."""
    if not path.is_file():
        raise EvalDataError(f"classification file {path} not found")
    if path.suffix == ".jsonl":
        rows = [(r.get("text"), r.get("label", r.get("label_name"))) for r in _read_jsonl(path)]
    else:
        with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a Windows editor's BOM
            first = f.readline()
            f.seek(0)
            rows = [(r.get("text"), r.get("label") or r.get("label_name") or r.get("category"))
                    for r in csv.DictReader(f, delimiter=_sniff_delimiter(first))]
    bad = next((n for n, (t, y) in enumerate(rows, start=2) if t is None or y is None), None)
    if bad is not None:
        raise EvalDataError(f"{path}:{bad}: needs a 'text' and a 'label' (or 'label_name', 'category') column")
    return LabelSet(path, [t for t, _ in rows], [str(y) for _, y in rows])


def find_splits(spec: str | Path) -> tuple[Path, Path]:
    """Resolve `--classification` input to (train, test) files.

    A folder must hold one `train.*` and one `test.*` file; a file is the test split and its train split
    is the sibling whose name has 'test' replaced by 'train' (e.g. sts/test.csv -> sts/train.csv).
    """
    spec = Path(spec)
    if spec.is_dir():
        pick = lambda stem: sorted(p for p in spec.iterdir() if p.stem == stem)  # noqa: E731
        train, test = pick("train"), pick("test")
        if len(train) != 1 or len(test) != 1:
            raise EvalDataError(f"classification folder {spec} must hold exactly one train.* and one test.* file")
        return train[0], test[0]
    if "test" not in spec.name:
        raise EvalDataError(f"classification file {spec}: name the test split (e.g. test.csv) so its train sibling can be found")
    train = spec.with_name(spec.name.replace("test", "train"))
    if not train.is_file():
        raise EvalDataError(f"classification train split {train} not found (looked beside the test file {spec})")
    return train, spec
