"""Corpus reading: every source a build can name, row by row through one validation path.

`load_corpus` reads a local JSONL, Parquet or CSV file, a Hub dataset name, a local folder in the
Hub layout (streamed by `datasets`), or a folder or glob of documents (chunking.py cuts them into passages).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gecko_lightning.errors import MissingPathError, UserError
from gecko_lightning.paths import resolve_path

from ..config import CorpusConfig
from .chunking import document_passages
from .documents import reads_documents


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number; write a finite number or null")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"key {twice!r} appears twice in one object")
    return dict(pairs)


# Where a passage's fields come from when `corpus.columns` does not say; BEIR names the id `_id`.
DEFAULT_COLUMNS = {"id": ("_id", "id"), "title": ("title",), "text": ("text",)}
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
Rows = Iterator[tuple[str, Any]]  # (location for error messages, raw row)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _column_map(cfg: CorpusConfig) -> dict[str, tuple[str, ...]]:
    """Our field -> the corpus columns it may come from, first present wins."""
    if not isinstance(cfg.columns, dict):
        raise UserError(f"corpus.columns must be a mapping like {{id: doc_id, text: body}}, got {cfg.columns!r}")
    unknown = sorted(set(cfg.columns) - set(DEFAULT_COLUMNS))
    if unknown:
        raise UserError(f"corpus.columns has unknown key(s) {unknown}; it maps {list(DEFAULT_COLUMNS)} "
                        f"to the corpus's own column names, e.g. {{id: doc_id, text: body}}")
    for key, column in cfg.columns.items():
        if not isinstance(column, str) or not column:
            raise UserError(f"corpus.columns.{key} must be a column name, got {column!r}")
    return {k: (cfg.columns[k],) if k in cfg.columns else cols for k, cols in DEFAULT_COLUMNS.items()}


def _check_columns(cfg: CorpusConfig, columns: dict[str, tuple[str, ...]], names: list[str], where: str) -> None:
    """A mapped column, an id and a text column must exist: a typo in the map fails before any row is read."""
    for key, options in columns.items():
        if (key != "title" or key in cfg.columns) and not any(c in names for c in options):
            wanted = " or ".join(repr(c) for c in options)
            raise UserError(f"{where}: no column {wanted} for the passage {key}; its columns are {list(names)}: "
                            f"set corpus.columns.{key} to one of them")


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) per line; a byte that is not UTF-8 is an error naming `file:line`."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")  # -sig: a Windows editor's BOM
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{n}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8; "
                                f"save the corpus as UTF-8") from None


def _jsonl_rows(path: Path) -> Rows:
    """(location, row) per non-blank line; a bad line is an error naming `file:line`."""
    for n, line in _utf8_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{where}: a string holds a lone surrogate escape (\\ud800-\\udfff), "
                            f"which is not text; fix the escape") from None
        except ValueError as e:
            raise UserError(f"{where}: malformed JSON ({e}); one JSON object per line") from None
        yield where, row


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(last line, fields) per CSV record; a quoted field may span lines."""
    reader = csv.reader(line for _, line in _utf8_lines(path))
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: malformed CSV ({e}); quote fields that hold "
                            f"commas, quotes or line breaks") from None
        if fields:
            yield reader.line_num, fields


def _csv_rows(path: Path) -> tuple[list[str], Rows]:
    """Header names, then rows located `file:line` (the header is line 1)."""
    records = _csv_records(path)
    names = next(records, (0, []))[1]
    return names, ((f"{path}:{line}", dict(zip(names, fields))) for line, fields in records)


def _parquet_rows(path: Path, wanted: set[str]) -> tuple[list[str], Rows]:
    """Record batches of only the columns we use, so a Parquet corpus larger than memory streams through."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"{path}: not a readable Parquet file ({_one_line(e)}); rewrite it or use JSONL") from None

    def rows() -> Rows:
        with pq.ParquetFile(path) as f:
            batches = f.iter_batches(batch_size=1024, columns=[n for n in names if n in wanted])
            for i, row in enumerate(row for batch in batches for row in batch.to_pylist()):
                yield f"{path} row {i}", row

    return names, rows()


def _dataset_error(cfg: CorpusConfig, path: str, error: ValueError) -> UserError:
    """datasets' ValueError on a config or split, as the `corpus.*` key to set and its valid values."""
    from datasets import get_dataset_config_names, get_dataset_split_names

    try:  # only to name the choices; if the lookup fails too, datasets' own message stands
        configs = get_dataset_config_names(path)
        if cfg.config not in configs and not (cfg.config is None and len(configs) == 1):
            which = "has several configs" if cfg.config is None else f"has no config {cfg.config!r}"
            return UserError(f"corpus.path {cfg.path!r} {which}: {configs}; choose one with corpus.config, "
                             f"e.g. --corpus.config={configs[0]}")
        splits = get_dataset_split_names(path, cfg.config)
        if cfg.split not in splits:
            return UserError(f"corpus.path {cfg.path!r} (config {cfg.config or configs[0]!r}) has no split "
                             f"{cfg.split!r}; its splits are {splits}: set corpus.split")
    except Exception:  # noqa: BLE001
        pass
    return UserError(f"corpus.path {cfg.path!r}: {_one_line(error)}")


def _dataset_rows(cfg: CorpusConfig, path: str) -> tuple[list[str] | None, Rows]:
    """A Hub name or a local Hub-layout folder, streamed row by row (nothing is downloaded whole)."""
    from datasets import load_dataset

    try:
        ds = load_dataset(path, cfg.config, split=cfg.split, streaming=True)
    except ConnectionError as e:
        raise UserError(f"corpus.path {cfg.path!r} is not a local file or folder and the Hub can't be reached "
                        f"({_one_line(e)}); while online, fill datasets' cache once (datasets.load_dataset("
                        f"{cfg.path!r}, {cfg.config!r}, split={cfg.split!r})) or download a copy (hf download "
                        f"{cfg.path} --repo-type dataset --local-dir DIR) and set corpus.path=DIR") from None
    except FileNotFoundError as e:
        raise UserError(f"corpus.path {cfg.path!r}: {_one_line(e)}; give a Hub dataset name (org/name), or a "
                        f"folder with data files such as corpus/train-00000-of-00001.parquet") from None
    except ValueError as e:
        raise _dataset_error(cfg, path, e) from None
    label = f"{cfg.path} ({cfg.config or 'default'}/{cfg.split})"

    def rows() -> Rows:
        it, i = iter(ds), 0
        while True:
            try:
                row = next(it)
            except StopIteration:
                return
            except (ValueError, OSError) as e:  # pyarrow and pandas parse errors are ValueErrors
                raise UserError(f"{label} near row {i}: unreadable ({_one_line(e)}); fix the data file") from None
            yield f"{label} row {i}", row
            i += 1

    return ds.column_names, rows()


def _is_local(name: str) -> bool:
    """A name that can only be a path; anything else that does not exist is taken for a Hub name."""
    return name.startswith(("/", ".", "~", "package:")) or name.count("/") > 1 or name.endswith(LOCAL_SUFFIXES)


def _raw_rows(cfg: CorpusConfig, columns: dict[str, tuple[str, ...]]) -> tuple[list[str] | None, Rows]:
    """(column names when known up front, rows) from whichever source `corpus.path` names."""
    path = Path(resolve_path(cfg.path)).expanduser()
    if path.is_dir() or not (path.exists() or _is_local(cfg.path)):
        return _dataset_rows(cfg, str(path) if path.is_dir() else cfg.path)
    if not path.is_file():
        raise MissingPathError(f"corpus.path {cfg.path!r} does not exist; point it at a JSONL, Parquet or CSV file, "
                               f"a folder in the Hub layout, or a Hub dataset name (org/name)")
    if path.suffix == ".parquet":
        return _parquet_rows(path, {c for options in columns.values() for c in options})
    if path.suffix == ".csv":
        return _csv_rows(path)
    return None, _jsonl_rows(path)


def load_corpus(cfg: CorpusConfig, skipped: list[str] | None = None, tokenizer: str | None = None,
                report: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows `{"id", "title", "text"}` in corpus order, the first `cfg.limit` of them.

    Every source (JSONL, Parquet, CSV, a Hub dataset or a local folder in the Hub layout) is read
    row by row and stops at `limit`; `cfg.columns` names the corpus's own columns. A passage whose
    text is empty or blank is skipped and its location goes into `skipped` (when given), so the
    caller can count and report it. Anything else malformed is an error naming its row.

    A folder or glob of documents is cut into passages by `tokenizer` (the embedder's, which the
    caller names: this layer does not know the build's other sections); `report` then receives the
    counts the manifest records (chunking.py).
    """
    if cfg.limit is not None and (isinstance(cfg.limit, bool) or not isinstance(cfg.limit, int) or cfg.limit < 1):
        raise UserError(f"corpus.limit must be a positive integer or null, got {cfg.limit!r}")
    if reads_documents(cfg):
        if tokenizer is None:
            raise ValueError("a documents corpus is cut by the embedder's tokenizer: pass tokenizer=retrieve.embedder")
        return document_passages(cfg, tokenizer, report)[: cfg.limit]
    columns = _column_map(cfg)
    names, source = _raw_rows(cfg, columns)
    if names is not None:  # Parquet, CSV and most Hub datasets declare their columns up front
        _check_columns(cfg, columns, names, cfg.path)
    rows, seen = [], {}
    for where, raw in source:
        if not isinstance(raw, dict):
            raise UserError(f"{where}: a corpus row must be a JSON object, got {type(raw).__name__}")
        if names is None:  # JSONL has no schema: its first row stands in for one
            names = list(raw)
            _check_columns(cfg, {k: v for k, v in columns.items() if k in cfg.columns}, names, where)
        row = _passage(where, raw, columns, seen)
        if not row["text"].strip():
            if skipped is not None:
                skipped.append(where)
            continue
        rows.append(row)
        if len(rows) == cfg.limit:  # stop before pulling another row: the rest is never read
            break
    if not rows:
        raise UserError(f"corpus {cfg.path!r} has no passages with text")
    return rows


def _passage(where: str, raw: dict[str, Any], columns: dict[str, tuple[str, ...]], seen: dict[str, str]) -> dict:
    """One raw row as `{"id", "title", "text"}`, its types checked and its id unique."""
    pick = {k: next((raw[c] for c in options if c in raw), None) for k, options in columns.items()}
    pid, title, text = pick["id"], pick["title"], pick["text"]
    if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) == "":
        raise UserError(f"{where}: needs {_label(columns['id'])}, a non-empty string or integer; got {pid!r}")
    if not isinstance(text, str):
        raise UserError(f"{where}: {_label(columns['text'])} must be a string, got {type(text).__name__}")
    if title is not None and not isinstance(title, str):
        raise UserError(f"{where}: {_label(columns['title'])} must be a string or null, got {type(title).__name__}")
    if str(pid) in seen:
        raise UserError(f"{where}: duplicate passage id {str(pid)!r} (first at {seen[str(pid)]}); ids must be unique")
    seen[str(pid)] = where
    return {"id": str(pid), "title": title or None, "text": text}


def _label(options: tuple[str, ...]) -> str:
    return repr(options[0]) + "".join(f" (or {c!r})" for c in options[1:])
