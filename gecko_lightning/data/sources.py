"""Training sources: a schema dataset on disk plus how to format and batch it.

`SourceConfig` is one entry of `MixtureDataModule(sources=[...])`; `TripletDataset` lays the
sources' records back to back and formats them lazily, inside the DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from tqdm.auto import tqdm

from gecko_lightning.data.formatting import Example, Template, format_record
from gecko_lightning.data.schema import OnError, ReadStats, Record, iter_records, read_manifest

FalseNegatives = Literal["none", "unique_id", "mask"]


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
            raise ValueError(
                f"source {self.display_name()!r}: false_negatives {self.false_negatives!r} is not one of "
                "'none', 'unique_id', 'mask'"
            )
        if self.weight is not None and self.weight < 0:
            raise ValueError(f"source {self.display_name()!r}: weight must be >= 0, got {self.weight}")


def read_source(config: SourceConfig, on_error: OnError = "raise") -> tuple[list[Record], ReadStats]:
    """Read and validate one source; bad rows are counted and logged, never dropped silently."""
    config.check()
    if Path(config.path).is_dir():
        read_manifest(config.path)  # fails early on an unsupported schema version
    name, stats = config.display_name(), ReadStats()
    rows = iter_records(config.path, on_error=on_error, stats=stats)
    bar = tqdm(rows, desc=f"read {name}", unit=" records", disable=not _is_rank_zero(), leave=False)
    records = list(islice(bar, config.max_records))
    rank_zero_info(f"data source {name!r}: {len(records)} records, {len(stats.skipped)} bad rows skipped")
    if stats.skipped:
        shown = "\n  ".join(stats.skipped[:5])
        rank_zero_warn(f"data source {name!r}: skipped {len(stats.skipped)} bad rows (on_error='skip'):\n  {shown}")
    if not records:
        raise ValueError(f"data source {name!r} ({config.path}) has no valid records")
    if config.false_negatives == "mask":
        _check_labels(records, name)
    return records, stats


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def _check_labels(records: Sequence[Record], name: str) -> None:
    for i, rec in enumerate(records):
        if rec.meta.get("label") is None:
            raise ValueError(
                f"source {name!r}: false_negatives 'mask' needs meta.label on every record, record {rec.id!r} "
                f"(#{i}) has none; convert with `gecko data convert classification` or use 'unique_id'"
            )


class TripletDataset:
    """Sources laid back to back: global index = source offset + local index.

    Indexing with a list returns a list of `Example` (one batch: the sampler yields lists).
    """

    def __init__(
        self, sources: Sequence[tuple[SourceConfig, Sequence[Record]]], template: Template
    ) -> None:
        self.configs = [c for c, _ in sources]
        self.records = [list(r) for _, r in sources]
        self.template = template
        self.sizes = [len(r) for r in self.records]
        self.names = [c.display_name() for c in self.configs]
        self._starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]

    def __len__(self) -> int:
        return sum(self.sizes)

    def locate(self, index: int) -> tuple[int, int]:
        """Global index -> (source, local index)."""
        for s in range(len(self.sizes) - 1, -1, -1):
            if index >= self._starts[s]:
                if index - self._starts[s] >= self.sizes[s]:
                    break
                return s, index - self._starts[s]
        raise IndexError(f"index {index} out of range for {len(self)} records")

    def example(self, index: int) -> Example:
        s, i = self.locate(index)
        config, record = self.configs[s], self.records[s][i]
        if config.task is not None:
            record = Record(**{**record.__dict__, "task": config.task})
        group = None
        if config.false_negatives == "mask":
            group = f"label\0{self.names[s]}\0{record.meta['label']}"
        unique = f"{i}" if config.false_negatives == "unique_id" else None
        return format_record(record, self.template, config.symmetric, unique, config.same_tower, group)

    def __getitem__(self, index: int | Sequence[int]) -> Example | list[Example]:
        if isinstance(index, int):
            return self.example(index)
        return [self.example(int(i)) for i in index]

    def doc_lengths(self) -> list[int]:
        """Rough length of each row (characters of query + positive), for length grouping."""
        return [len(r.query) + len(r.positive.text) for recs in self.records for r in recs]
