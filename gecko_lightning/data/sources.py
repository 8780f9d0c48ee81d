"""Training sources: a schema dataset on disk plus how to format and batch it.

`SourceConfig` is one entry of `MixtureDataModule(sources=[...])`; `TripletDataset` lays the
sources' records back to back and formats them lazily, inside the DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from tqdm.auto import tqdm

from gecko_lightning.data.formatting import Example, Template, format_record
from gecko_lightning.data.lists import ListPassages, candidate_list, list_texts
from gecko_lightning.data.schema import OnError, Passage, ReadStats, Record, iter_records, read_manifest
from gecko_lightning.errors import UserError

FalseNegatives = Literal["none", "unique_id", "mask"]
# One row per record; `label` is meta.label as text (the `mask` treatment's class). `list_*` is a FRet
# record's candidate list (meta.candidates), positive first: ids and the LLM's QL and RC scores (lists.py).
COLUMNS = ("id", "task", "query", "pos_title", "pos_text", "neg_title", "neg_text", "symmetric", "label",
           "list_ids", "list_ql", "list_rc")
_TYPES = {"symmetric": pa.bool_(), "list_ids": pa.list_(pa.string()), "list_ql": pa.list_(pa.float64()),
          "list_rc": pa.list_(pa.float64())}
SCHEMA = pa.schema([(c, _TYPES.get(c, pa.string())) for c in COLUMNS])


@dataclass
class SourceConfig:
    """One training source of a mixture."""

    path: str
    """A schema dataset: a shard file or a folder of shards (+ manifest.json)."""
    name: str | None = None
    """Name used in logs and errors; defaults to the file or folder name."""
    weight: float | None = None
    """Explicit sampling weight; overrides the mixture's `sampling` mode for this source when set."""
    symmetric: bool | None = None
    """Force the query format on both sides (True), the document format (False), or follow each record (None)."""
    false_negatives: FalseNegatives = "none"
    """Classification false-negative fix: `unique_id` appends one id to x, x+ and x- (the paper);
    `mask` gives rows with the same `meta.label` equal `pos_ids`, so the loss drops them as negatives."""
    same_tower: bool = True
    """Whether the other queries of the batch act as negatives for this source's rows."""
    task: str | None = None
    """Replace every record's task string (e.g. to run a task-prompt ablation)."""
    max_records: int | None = None
    """Use only the first N records (a quick run or a small slice)."""

    def display_name(self) -> str:
        if self.name:
            return self.name
        path = Path(self.path)
        return path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".parquet")

    def check(self) -> None:
        if self.false_negatives not in ("none", "unique_id", "mask"):
            raise UserError(
                f"source {self.display_name()!r}: false_negatives {self.false_negatives!r} is not one of "
                "'none', 'unique_id', 'mask'"
            )
        if self.weight is not None and self.weight < 0:
            raise UserError(f"source {self.display_name()!r}: weight must be >= 0, got {self.weight}")


def read_source(config: SourceConfig, on_error: OnError = "raise") -> tuple[pa.Table, ReadStats]:
    """Read and validate one source into a compact Arrow table (see `COLUMNS`).

    Arrow keeps millions of records in a few flat buffers: forked DataLoader workers share them
    instead of copying Python objects that reference counting would touch. Bad rows are counted
    and logged, never dropped silently.
    """
    config.check()
    if Path(config.path).is_dir():
        read_manifest(config.path)  # fails early on an unsupported schema version
    name, stats = config.display_name(), ReadStats()
    rows = iter_records(config.path, on_error=on_error, stats=stats)
    bar = tqdm(rows, desc=f"read {name}", unit=" records", disable=None if _is_rank_zero() else True, leave=False)
    table = records_to_table(islice(bar, config.max_records))
    rank_zero_info(f"data source {name!r}: {table.num_rows} records, {len(stats.skipped)} bad rows skipped")
    if stats.skipped:
        shown = "\n  ".join(stats.skipped[:5])
        rank_zero_warn(f"data source {name!r}: skipped {len(stats.skipped)} bad rows (on_error='skip'):\n  {shown}")
    if table.num_rows == 0:
        raise UserError(f"data source {name!r} ({config.path}) has no valid records; run `gecko data validate {config.path}`")
    if config.false_negatives == "mask" and table.column("label").null_count:
        first = pc.index(pc.is_null(table.column("label")), True).as_py()
        raise UserError(
            f"source {name!r}: false_negatives 'mask' needs meta.label on every record, record "
            f"{table.column('id')[first].as_py()!r} (#{first}) has none; convert with "
            "`gecko data convert classification` or use 'unique_id'"
        )
    return table, stats


def records_to_table(records: Iterable[Record], chunk: int = 65_536) -> pa.Table:
    """Records -> an Arrow table of `COLUMNS`, built chunk by chunk so no full Python list is held."""
    batches, cols = [], {c: [] for c in COLUMNS}
    for rec in records:
        neg = rec.negative
        label = rec.meta.get("label")
        for key, value in zip(COLUMNS, (rec.id, rec.task, rec.query, rec.positive.title, rec.positive.text,
                                        neg.title if neg else None, neg.text if neg else None, rec.symmetric,
                                        None if label is None else str(label), *candidate_list(rec.meta))):
            cols[key].append(value)
        if len(cols["id"]) == chunk:
            batches.append(pa.record_batch(cols, schema=SCHEMA))
            cols = {c: [] for c in COLUMNS}
    batches.append(pa.record_batch(cols, schema=SCHEMA))
    return pa.Table.from_batches(batches, schema=SCHEMA).combine_chunks()


def _row_record(row: dict, source: str, task: str | None) -> Record:
    negative = Passage(row["neg_text"], row["neg_title"]) if row["neg_text"] is not None else None
    meta = {"label": row["label"]} if row["label"] is not None else {}
    return Record(row["id"], source, task or row["task"], row["query"], Passage(row["pos_text"], row["pos_title"]),
                  negative, row["symmetric"], meta)


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


class TripletDataset:
    """Sources laid back to back: global index = source offset + local index.

    Indexing with a list returns a list of `Example` (one batch: the sampler yields lists);
    rows are fetched from each source's Arrow table with one `take` per source and batch.
    """

    def __init__(self, sources: Sequence[tuple[SourceConfig, pa.Table]], template: Template) -> None:
        self.configs = [c for c, _ in sources]
        self.tables = [t for _, t in sources]
        self.template = template
        self.sizes = [t.num_rows for t in self.tables]
        self.names = [c.display_name() for c in self.configs]
        self._ends = np.cumsum(self.sizes)  # (S,)
        self.lists: dict[int, ListPassages] = {}  # source index -> its list passages, once attach_lists ran
        self.list_size: int | None = None
        self.teacher_score = "ql"

    def attach_lists(self, list_size: int | None = None, teacher_score: str = "ql") -> int:
        """From now on each row of a source with candidate lists carries its list's passages (formatted
        as its positive is) and the teacher's `teacher_score` of each, at most `list_size` with the
        positive first. Returns the number of sources with lists."""
        self.list_size, self.teacher_score = list_size, teacher_score
        for s, (config, table) in enumerate(zip(self.configs, self.tables)):
            if table.column("list_ids").null_count < table.num_rows:
                self.lists[s] = ListPassages.read(config.path, self.names[s])
        return len(self.lists)

    def __len__(self) -> int:
        return int(self._ends[-1])

    def _format(self, s: int, local: int, row: dict) -> Example:
        config = self.configs[s]
        record = _row_record(row, self.names[s], config.task)
        group = f"label\0{self.names[s]}\0{row['label']}" if config.false_negatives == "mask" else None
        unique = f"{local}" if config.false_negatives == "unique_id" else None
        passages, scores = list_texts(row, self.lists.get(s), self.list_size, self.teacher_score)
        return format_record(record, self.template, config.symmetric, unique, config.same_tower, group, passages, scores)

    def __getitem__(self, index: int | Sequence[int]) -> Example | list[Example]:
        if isinstance(index, (int, np.integer)):
            return self[[int(index)]][0]
        index = np.asarray(index, dtype=np.int64)  # (B,)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} records")
        source = np.searchsorted(self._ends, index, side="right")  # (B,)
        out: list[Example | None] = [None] * len(index)
        for s in np.unique(source):
            where = np.flatnonzero(source == s)
            local = index[where] - (self._ends[s] - self.sizes[s])
            rows = self.tables[s].take(pa.array(local)).to_pylist()
            for pos, i, row in zip(where, local, rows):
                out[pos] = self._format(int(s), int(i), row)
        return out

    def doc_lengths(self) -> np.ndarray:
        """Rough length of each row (characters of query + positive), for length grouping.

        The negative is left out: sides are padded separately, and a key that mixes two independent
        passage lengths groups neither side well (equal sums, unequal parts).
        """
        parts = [pc.add(pc.utf8_length(t.column("query")), pc.utf8_length(t.column("pos_text"))) for t in self.tables]
        return np.concatenate([p.to_numpy() for p in parts])
