"""Readers for local evaluation files: BEIR folders, STS pair files, classification splits.

Every reader raises `EvalDataError` naming the file (and line) and the fix, because a silent
skip here turns into a wrong number in a paper table.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


class EvalDataError(ValueError):
    """An evaluation file is missing or malformed; the message names the path and the fix."""


@dataclass
class BeirSet:
    """A BEIR retrieval set: corpus doc id -> (title, text), query id -> text, qrels query -> doc -> grade."""

    name: str
    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


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


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise EvalDataError(f"{path} not found: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise EvalDataError(f"{path}:{n} is not valid JSON ({e.msg}); fix or remove that line") from e
    return rows


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """qrels TSV (query-id, corpus-id, score; a header line is skipped) -> query -> doc -> grade."""
    if not path.is_file():
        raise EvalDataError(f"qrels file {path} not found: a BEIR folder needs qrels/<split>.tsv (query-id, corpus-id, score)")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), start=1):
            if not row or (n == 1 and row[0] == "query-id"):
                continue
            if len(row) < 3:
                raise EvalDataError(f"{path}:{n} has {len(row)} columns, expected query-id<TAB>corpus-id<TAB>score")
            qrels.setdefault(row[0], {})[row[1]] = int(_number(row[2], path, n))
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> BeirSet:
    """Read corpus.jsonl, queries.jsonl and qrels/<split>.tsv; keep only queries that have qrels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalDataError(f"BEIR folder {folder} not found; pass a folder holding corpus.jsonl, queries.jsonl, qrels/{split}.tsv")
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    corpus = {str(d["_id"]): (d.get("title") or "", d.get("text") or "") for d in _read_jsonl(folder / "corpus.jsonl")}
    queries = {str(q["_id"]): q["text"] for q in _read_jsonl(folder / "queries.jsonl") if str(q["_id"]) in qrels}
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise EvalDataError(f"{folder}: {len(missing)} qrels queries (e.g. {missing[0]!r}) are not in queries.jsonl")
    return BeirSet(folder.name, corpus, queries, qrels)


def _number(value: str, path: Path, line: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise EvalDataError(f"{path}:{line}: score {value!r} is not a number; STS/qrels scores must be numeric") from None


def _sniff_delimiter(header: str) -> str:
    return max("\t,;", key=header.count)


def load_sts(path: str | Path) -> PairSet:
    """STS pairs from the STS Benchmark TSV (genre, file, year, id, score, s1, s2; no header)
    or from a .jsonl / .csv / .tsv with columns s1, s2, score (sentence1/sentence2 also accepted)."""
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"STS file {path} not found")
    if path.suffix == ".jsonl":
        rows = [(r.get("s1", r.get("sentence1")), r.get("s2", r.get("sentence2")), str(r.get("score"))) for r in _read_jsonl(path)]
        return _pairs(path, [(n, *r) for n, r in enumerate(rows, start=1)])
    lines = path.read_text(encoding="utf-8").splitlines()
    delim = _sniff_delimiter(lines[0]) if lines else "\t"
    header = [h.strip().lower() for h in lines[0].split(delim)] if lines else []
    if {"score"} <= set(header) and ({"s1", "s2"} <= set(header) or {"sentence1", "sentence2"} <= set(header)):
        reader = csv.DictReader(lines[1:], fieldnames=header, delimiter=delim)
        a, b = ("s1", "s2") if "s1" in header else ("sentence1", "sentence2")
        return _pairs(path, [(n, r[a], r[b], r["score"]) for n, r in enumerate(reader, start=2)])
    # STS Benchmark: fields are not quoted, and some lines carry extra trailing columns (sources).
    rows = [(n, *_stsb_fields(line, path, n)) for n, line in enumerate(lines, start=1) if line.strip()]
    return _pairs(path, rows)


def _stsb_fields(line: str, path: Path, n: int) -> tuple[str, str, str]:
    cols = line.split("\t")
    if len(cols) < 7:
        raise EvalDataError(
            f"{path}:{n} has {len(cols)} tab-separated columns; expected the STS Benchmark layout "
            "(genre, file, year, id, score, s1, s2) or a header line with s1, s2, score"
        )
    return cols[5], cols[6], cols[4]


def _pairs(path: Path, rows: list[tuple[int, str, str, str]]) -> PairSet:
    if not rows:
        raise EvalDataError(f"STS file {path} holds no pairs")
    scores = [_number(score, path, n) for n, _, _, score in rows]
    return PairSet(path.name, [r[1] for r in rows], [r[2] for r in rows], scores)


def read_labelled(path: Path) -> LabelSet:
    """A .jsonl with text/label or a .csv/.tsv/.txt with a header naming text and label (or label_name, category)."""
    if not path.is_file():
        raise EvalDataError(f"classification file {path} not found")
    if path.suffix == ".jsonl":
        rows = [(r.get("text"), r.get("label", r.get("label_name"))) for r in _read_jsonl(path)]
    else:
        with path.open(encoding="utf-8", newline="") as f:
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
