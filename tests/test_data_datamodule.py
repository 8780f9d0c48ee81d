"""FRetDataModule and MixtureDataModule: setup, batches, LightningCLI parsing, errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningCLI

from gecko_lightning.data import FRetDataModule, MixtureDataModule, SourceConfig

REPO = Path(__file__).resolve().parents[1]
TINY_FRET = str(REPO / "configs" / "assets" / "tiny_fret")
TOKENIZER = str(REPO / "configs" / "assets" / "tiny-bert")


def test_fret_datamodule_yields_full_batches_of_every_record_once():
    dm = FRetDataModule(TINY_FRET, tokenizer=TOKENIZER, batch_size=10, query_max_length=16, doc_max_length=24)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 96 // 10  # the remainder of 6 is dropped: the loss all-gathers full batches
    ids = [i for b in batches for i in b["ids"]]
    assert len(ids) == len(set(ids)) == 90
    b = batches[0]
    assert b["query"]["input_ids"].shape[0] == 10 and b["query"]["input_ids"].shape[1] <= 16
    assert b["positive"]["input_ids"].shape[1] <= 24 and b["negative"]["attention_mask"].shape[0] == 10


def test_missing_tokenizer_says_how_to_set_it():
    dm = FRetDataModule(TINY_FRET)
    with pytest.raises(ValueError, match=r"needs a tokenizer: set `data.tokenizer`.*model.model_name_or_path"):
        dm.setup("fit")


def test_on_error_skip_counts_bad_rows(tmp_path, caplog):
    good = json.loads((Path(TINY_FRET) / "shard-00000.jsonl").read_text().splitlines()[0])
    lines = [json.dumps({**good, "id": f"g{i}"}) for i in range(4)]
    lines += ['{"id": "bad"', json.dumps({**good, "query": ""})]  # lines 5 and 6
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:5: malformed JSON"):
        FRetDataModule(str(path), tokenizer=TOKENIZER).setup("fit")
    dm = FRetDataModule(str(path), tokenizer=TOKENIZER, batch_size=2, on_error="skip")
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    assert "data source 'd': 4 records, 2 bad rows skipped" in caplog.text  # visible in the run log
    assert dm.skipped_rows == 2 and len(dm.train_dataset) == 4
    assert any(f"{path}:6: 'query' must be a non-empty string, got \"\"" in s for s in dm.read_stats["d"].skipped)


def test_on_error_skip_skips_a_line_that_is_not_utf8(tmp_path):
    lines = (Path(TINY_FRET) / "shard-00000.jsonl").read_bytes().splitlines(keepends=True)
    bad = lines[2].replace(b'"query": "', b'"query": "\xff', 1)  # one latin-1 byte on line 3
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(lines[:2] + [bad] + lines[3:]))
    dm = FRetDataModule(str(path), tokenizer=TOKENIZER, batch_size=8, on_error="skip")
    dm.setup("fit")
    assert len(dm.train_dataset) == len(lines) - 1
    (skipped,) = dm.read_stats["d"].skipped
    assert skipped.startswith(f"{path}:3: byte 0xff at column ")


class _Tiny(LightningModule):
    def __init__(self, model_name_or_path: str = "x") -> None:
        super().__init__()


def test_datamodules_parse_as_lightning_cli_data_entries(tmp_path):
    config = {
        "model": {"model_name_or_path": TOKENIZER},
        "data": {
            "class_path": "gecko_lightning.data.MixtureDataModule",
            "init_args": {
                "tokenizer": TOKENIZER,
                "homogeneous_batches": True,
                "sources": [{"path": TINY_FRET, "weight": 2.0}, {"path": TINY_FRET, "false_negatives": "unique_id"}],
            },
        },
    }
    cli = LightningCLI(_Tiny, subclass_mode_data=True, run=False, args=config)
    assert isinstance(cli.datamodule, MixtureDataModule)
    assert cli.datamodule.sources[1] == SourceConfig(path=TINY_FRET, false_negatives="unique_id")
    config["data"] = {"class_path": "gecko_lightning.data.FRetDataModule", "init_args": {"path": TINY_FRET}}
    cli = LightningCLI(_Tiny, subclass_mode_data=True, run=False, args=config)
    assert isinstance(cli.datamodule, FRetDataModule) and cli.datamodule.batch_size == 32


def test_tokenization_runs_in_workers_and_matches_the_in_process_batches(monkeypatch):
    import gecko_lightning.data.formatting as formatting

    def in_process(num_workers: int) -> list:
        dm = FRetDataModule(TINY_FRET, tokenizer=TOKENIZER, batch_size=16, num_workers=num_workers, doc_max_length=32)
        dm.setup("fit")
        return list(dm.train_dataloader())

    reference = in_process(0)

    def only_in_a_worker() -> None:  # the collate calls this first; it fails outside a worker
        assert torch.utils.data.get_worker_info() is not None, "collate ran in the main process"

    monkeypatch.setattr(formatting, "_quiet_forked_tokenizer", only_in_a_worker)
    batches = in_process(1)
    assert [b["ids"] for b in batches] == [b["ids"] for b in reference]
    assert all(torch.equal(a["positive"]["input_ids"], b["positive"]["input_ids"]) for a, b in zip(batches, reference))


def test_arrow_backed_dataset_formats_like_the_records_themselves():
    from gecko_lightning.data.formatting import Template, format_record
    from gecko_lightning.data.schema import read_records
    from gecko_lightning.data.sources import TripletDataset, records_to_table

    records = read_records(TINY_FRET)[0][:7]
    config = SourceConfig(TINY_FRET)
    table = records_to_table(records, chunk=3)  # several chunks
    ds = TripletDataset([(config, table), (config, table)], Template())
    expected = [format_record(r, Template()) for r in records]
    assert ds[[6, 0, 13, 7]] == [expected[6], expected[0], expected[6], expected[0]]  # second source starts at 7
    assert ds[3] == expected[3]
    with pytest.raises(IndexError, match="out of range for 14 records"):
        ds[[14]]
