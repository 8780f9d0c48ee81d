"""The builder's corpus reader: JSONL, Parquet, CSV and Hub-layout folders through one path, with a column map,
a `limit` that stops reading, one-line errors, and a fingerprint that sees a changed corpus."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_builders import cli
from data_builders.config import CorpusConfig
from data_builders.corpus import corpus_fingerprint, load_corpus
from gecko_lightning.errors import MissingPathError, UserError

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"id": "doc_id", "title": "heading", "text": "body"}
# Renamed columns, as a BEIR-like corpus with its own names; text that CSV must quote; a blank passage.
ROWS = [
    {"doc_id": "d1", "heading": "Cells", "body": "Stem cells divide, and \"differentiate\"."},
    {"doc_id": "d2", "heading": None, "body": "Café au lait\nspans two lines."},
    {"doc_id": "d3", "heading": "Empty", "body": "   "},
    {"doc_id": "d4", "heading": "Ions", "body": "Sodium ions cross the membrane."},
    {"doc_id": "d5", "heading": "Genes", "body": "Genes are transcribed into RNA."},
]
EXPECTED = [{"id": r["doc_id"], "title": r["heading"], "text": r["body"]} for r in ROWS if r["body"].strip()]
README = """---
configs:
- config_name: corpus
  data_files:
  - split: corpus
    path: corpus/*.parquet
- config_name: queries
  data_files:
  - split: queries
    path: queries/*.parquet
---
A corpus in the Hub layout, with BEIR's two configs (datasets reads one file format per folder).
"""


def write(path: Path, rows: list[dict]) -> Path:
    """`rows` as a JSONL, Parquet or CSV file, by suffix; None is an empty CSV cell."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            out = csv.DictWriter(f, fieldnames=list(rows[0]))
            out.writeheader()
            out.writerows(rows)
    return path


def hub_folder(root: Path) -> Path:
    (root / "corpus").mkdir(parents=True)
    write(root / "corpus" / "train-00000-of-00001.parquet", ROWS)
    (root / "queries").mkdir()
    write(root / "queries" / "queries-00000-of-00001.parquet", [{"_id": "q1", "text": "what crosses the membrane?"}])
    (root / "README.md").write_text(README)
    return root


@pytest.fixture
def hub(tmp_path) -> Path:
    return hub_folder(tmp_path / "hub")


@pytest.mark.parametrize("source", ["hub", "corpus.jsonl", "corpus.parquet", "corpus.csv"])
def test_every_source_gives_the_rows_it_was_written_with(tmp_path, hub, source):
    if source == "hub":
        cfg = CorpusConfig(path=str(hub), config="corpus", split="corpus", columns=COLUMNS)
    else:
        cfg = CorpusConfig(path=str(write(tmp_path / source, ROWS)), columns=COLUMNS)
    skipped = []
    assert load_corpus(cfg, skipped) == EXPECTED
    blank = {"hub": " row 2", "corpus.jsonl": ":3", "corpus.parquet": " row 2", "corpus.csv": ":5"}[source]
    assert len(skipped) == 1 and skipped[0].endswith(blank)  # d3; in the CSV, d2's text spans lines 3-4


def test_the_hub_layout_reads_the_chosen_config(hub):
    rows = load_corpus(CorpusConfig(path=str(hub), config="queries", split="queries"))
    assert rows == [{"id": "q1", "title": None, "text": "what crosses the membrane?"}]


class CountingDataset:
    """Stands in for a streamed `datasets.IterableDataset` that never ends; counts the rows pulled."""

    column_names = ["_id", "text"]

    def __init__(self):
        self.pulled = 0

    def __iter__(self):
        while True:
            self.pulled += 1
            yield {"_id": f"p{self.pulled}", "text": f"passage {self.pulled}"}


def test_limit_stops_a_streamed_hub_dataset_after_that_many_rows(monkeypatch):
    import datasets

    stream, calls = CountingDataset(), []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append((a, kw)) or stream)
    rows = load_corpus(CorpusConfig(path="someone/big-corpus", config="corpus", split="corpus", limit=4))
    assert [r["id"] for r in rows] == ["p1", "p2", "p3", "p4"] and stream.pulled == 4
    assert calls == [(("someone/big-corpus", "corpus"), {"split": "corpus", "streaming": True})]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_limit_never_reads_a_bad_line_after_it(tmp_path, suffix):
    path = write(tmp_path / f"corpus{suffix}", ROWS)
    path.write_bytes(path.read_bytes() + b"d9,T,caf\xe9\n")
    with pytest.raises(UserError, match="is not UTF-8"):  # the bad line is there...
        load_corpus(CorpusConfig(path=str(path), columns=COLUMNS))
    # ...right after the last passage the limit keeps, and never pulled
    assert load_corpus(CorpusConfig(path=str(path), columns=COLUMNS, limit=len(EXPECTED))) == EXPECTED


@pytest.mark.parametrize("overrides,message", [
    ({"config": None}, r"has several configs: \['corpus', 'queries'\]; choose one with corpus.config"),
    ({"config": "qrels"}, r"has no config 'qrels': \['corpus', 'queries'\]; choose one with corpus.config"),
    ({"split": "train"}, r"has no split 'train'; its splits are \['corpus'\]: set corpus.split"),
    ({"columns": {**COLUMNS, "text": "abstract"}},
     r"no column 'abstract' for the passage text; its columns are \['doc_id', 'heading', 'body'\]: "
     r"set corpus.columns.text"),
    ({"columns": {}}, r"no column '_id' or 'id' for the passage id; .* set corpus.columns.id"),
    ({"columns": {"passage": "body"}}, r"corpus.columns has unknown key\(s\) \['passage'\]"),
    ({"limit": 0}, r"corpus.limit must be a positive integer or null, got 0"),
])
def test_a_wrong_config_split_or_column_names_the_key_and_the_choices(hub, overrides, message):
    cfg = CorpusConfig(**{"path": str(hub), "config": "corpus", "split": "corpus", "columns": COLUMNS, **overrides})
    with pytest.raises(UserError, match=message) as e:
        load_corpus(cfg)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_files_share_the_column_check_and_row_validation(tmp_path, suffix):
    path = write(tmp_path / f"corpus{suffix}", ROWS)
    with pytest.raises(UserError, match=rf"no column 'heading2' for the passage title.*corpus.columns.title"):
        load_corpus(CorpusConfig(path=str(path), columns={**COLUMNS, "title": "heading2"}))
    twice = write(tmp_path / f"twice{suffix}", ROWS[:2] + [ROWS[0]])
    first, again = (":2", ":5") if suffix == ".csv" else (":1", ":3") if suffix == ".jsonl" else (" row 0", " row 2")
    with pytest.raises(UserError, match=rf"twice{suffix}{again}: duplicate passage id 'd1' \(first at .*{first}\)"):
        load_corpus(CorpusConfig(path=str(twice), columns=COLUMNS))


def test_a_wrongly_typed_parquet_column_is_named_by_row(tmp_path):
    path = write(tmp_path / "corpus.parquet", [{"doc_id": "a", "body": "fine"}, {"doc_id": "b", "body": None}])
    with pytest.raises(UserError, match=r"corpus.parquet row 1: 'body' must be a string, got NoneType"):
        load_corpus(CorpusConfig(path=str(path), columns={"id": "doc_id", "text": "body"}))


def test_an_unreachable_hub_name_or_a_missing_file_is_one_clear_line(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty-cache")
    with pytest.raises(UserError, match=r"corpus.path 'nobody-here/no-corpus' is not a local file or folder and "
                                        r"the Hub can't be reached .* set corpus.path=DIR$"):
        load_corpus(CorpusConfig(path="nobody-here/no-corpus", config="corpus", split="corpus"))
    for missing in ("missing.parquet", "missing.csv", str(tmp_path / "no" / "folder")):
        with pytest.raises(MissingPathError, match=re.escape(f"corpus.path '{missing}' does not exist")):
            load_corpus(CorpusConfig(path=missing))


def test_the_fingerprint_follows_the_data_not_where_it_lives(tmp_path, hub, monkeypatch):
    file = write(tmp_path / "corpus.jsonl", ROWS)
    assert corpus_fingerprint(CorpusConfig(path=str(file))) == hashlib.sha256(file.read_bytes()).hexdigest()

    def fp(folder: Path, **kw) -> str:
        return corpus_fingerprint(CorpusConfig(path=str(folder), config="corpus", split="corpus", **kw))

    before = fp(hub)
    copy = shutil.copytree(hub, tmp_path / "elsewhere")
    (copy / ".cache").mkdir()
    (copy / ".cache" / "lock").write_text("not data")
    assert fp(copy) == before  # moved, plus a hidden folder: the same corpus
    assert fp(hub, columns=COLUMNS) != before
    write(copy / "corpus" / "train-00000-of-00001.parquet", ROWS[:-1])
    assert fp(copy) != before

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert corpus_fingerprint(CorpusConfig(path="org/cached")) is None
    ref = tmp_path / "hub-cache" / "datasets--org--cached" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("0123456789abcdef0123456789abcdef01234567")
    assert corpus_fingerprint(CorpusConfig(path="org/cached")) == ref.read_text()


def test_gecko_build_reads_a_hub_layout_folder_with_a_column_map(tmp_path):
    source = [json.loads(x) for x in (ROOT / "configs/assets/tiny_corpus/corpus.jsonl").read_text().splitlines()]
    renamed = [{"doc_id": r["_id"], "heading": r["title"], "body": r["text"]} for r in source]
    folder = tmp_path / "hub"
    (folder / "corpus").mkdir(parents=True)
    write(folder / "corpus" / "train-00000-of-00001.parquet", renamed)
    (folder / "queries").mkdir()
    write(folder / "queries" / "queries-00000-of-00001.parquet", [{"_id": "q1", "text": "a query"}])
    (folder / "README.md").write_text(README)
    out = tmp_path / "build"
    argv = ["fret", "--config", str(ROOT / "configs/data/fret_fake.yaml"), f"--corpus.path={folder}",
            "--corpus.config=corpus", "--corpus.split=corpus",
            "--corpus.columns={id: doc_id, title: heading, text: body}", "--output_dir", str(out)]
    assert cli.main(argv) == 0
    corpus = [json.loads(x) for x in (out / "stages" / "corpus.jsonl").read_text().splitlines()]
    assert [(r["id"], r["title"]) for r in corpus] == [(r["_id"], r["title"] or None) for r in source]
    for built, original in zip(corpus, source):  # cut to fret_fake's 96-word budget, never changed otherwise
        assert original["text"].split()[: len(built["text"].split())] == built["text"].split()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] > 0
