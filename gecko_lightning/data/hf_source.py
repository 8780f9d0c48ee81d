"""Load a converter's input through Hugging Face `datasets`, online or offline.

`source` may be:
  * a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` -> `load_from_disk`;
  * a local data file (.csv .tsv .txt .json .jsonl .parquet) or a folder of them -> the
    matching packaged builder (`csv`, `json`, `parquet`), all offline;
  * anything else is a Hub name (e.g. `stanfordnlp/snli`), loaded with `load_dataset` (online).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

BUILDERS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class TableOptions:
    """How to read a delimited local file; ignored for Hub and `save_to_disk` sources."""

    delimiter: str | None = None
    """Column separator; default ',' for .csv and a tab for .tsv/.txt."""
    column_names: list[str] | None = None
    """Names for a file without a header row."""
    encoding_errors: str = "strict"
    """'replace' reads files with a few invalid UTF-8 bytes (e.g. the Quora partition)."""


def _load_from_disk(path: Path, split: str):
    from datasets import DatasetDict, load_from_disk

    data = load_from_disk(str(path))
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"{path} has splits {sorted(data)}, not {split!r}: pass --split with one of them")
        return data[split]
    return data


def _csv_kwargs(path: Path, options: TableOptions) -> dict:
    sep = options.delimiter or ("," if path.suffix == ".csv" else "\t")
    kwargs = {"delimiter": sep, "encoding_errors": options.encoding_errors}
    if sep == "\t":
        kwargs["quoting"] = csv.QUOTE_NONE  # tab files quote nothing; a stray " must stay text
    if options.column_names:
        kwargs["column_names"] = list(options.column_names)
    return kwargs


def _local_files(path: Path, split: str) -> tuple[str, list[str]]:
    """(builder, files) for a data file, or for a folder's files whose name starts with the split."""
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.iterdir() if p.suffix in BUILDERS and p.stem.startswith(split))
        if not files:
            raise FileNotFoundError(f"no {split}.* data file ({', '.join(BUILDERS)}) in folder {str(path)!r}")
    builders = {BUILDERS.get(p.suffix) for p in files}
    if None in builders or len(builders) != 1:
        raise ValueError(f"cannot read {[str(f) for f in files]}: use one kind of file among {sorted(BUILDERS)}")
    return builders.pop(), [str(f) for f in files]


def load_table(source: str, split: str = "train", config: str | None = None, options: TableOptions | None = None):
    """A `datasets.Dataset` for one split of `source` (see the module docstring)."""
    from datasets import load_dataset

    options = options or TableOptions()
    path = Path(source)
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
        return _load_from_disk(path, split)
    if path.exists():
        builder, files = _local_files(path, split)
        kwargs = _csv_kwargs(Path(files[0]), options) if builder == "csv" else {}
        return load_dataset(builder, data_files=files, split="train", **kwargs)
    if source.startswith((".", "/")) or source.endswith(tuple(BUILDERS)):
        raise FileNotFoundError(f"local source {source!r} does not exist (a Hub name looks like 'owner/name')")
    return load_dataset(source, config, split=split)
