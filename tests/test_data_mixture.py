"""MixtureDataModule: no unmasked duplicates in a batch, false-negative options, ranks, the tiny config."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from gecko_lightning.data import MixtureDataModule, SourceConfig
from gecko_lightning.data.formatting import stable_id
from gecko_lightning.data.schema import read_records, write_records

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "configs" / "assets"
TOKENIZER = str(ASSETS / "tiny-bert")


def dm(sources, **kw) -> MixtureDataModule:
    kw = {"tokenizer": TOKENIZER, "batch_size": 8, "query_max_length": 8, "doc_max_length": 8, **kw}
    module = MixtureDataModule(sources, **kw)
    module.setup("fit")
    return module


def duplicate_source(tmp_path: Path) -> str:
    """40 records whose positives repeat: record i has positive text number i % 5."""
    rows = [
        {"id": f"d{i}", "source": "dup", "task": "t", "query": f"query {i}", "positive": {"text": f"passage {i % 5}"}}
        for i in range(40)
    ]
    path = tmp_path / "dup.jsonl"
    write_records(rows, path)
    return str(path)


def test_duplicate_positives_in_a_batch_always_share_pos_ids(tmp_path):
    module = dm([SourceConfig(duplicate_source(tmp_path))])
    positive_of = {f"d{i}": f"passage {i % 5}" for i in range(40)}
    saw_duplicate = False
    for batch in module.train_dataloader():
        texts = [positive_of[i] for i in batch["ids"]]
        saw_duplicate |= len(set(texts)) < len(texts)
        for a in range(len(texts)):  # naive pairwise check: equal text <=> equal id
            for b in range(len(texts)):
                assert (texts[a] == texts[b]) == (batch["pos_ids"][a] == batch["pos_ids"][b]).item()
    assert saw_duplicate  # the check above was exercised


def test_mask_treatment_gives_same_label_rows_equal_pos_ids():
    module = dm([SourceConfig(str(ASSETS / "tiny_banking77"), false_negatives="mask")])
    label_of = {r.id: r.meta["label"] for r in read_records(ASSETS / "tiny_banking77")[0]}
    for batch in module.train_dataloader():
        expected = [stable_id(f"label\0tiny_banking77\0{label_of[i]}") for i in batch["ids"]]
        assert batch["pos_ids"].tolist() == expected


def test_mask_without_labels_names_the_source_and_fix():
    with pytest.raises(ValueError, match=r"source 'tiny_fret': false_negatives 'mask' needs meta.label.*'unique_id'"):
        dm([SourceConfig(str(ASSETS / "tiny_fret"), false_negatives="mask")])


def test_unique_id_suffixes_every_side_and_same_tower_flag_is_per_source():
    module = dm([SourceConfig(str(ASSETS / "tiny_banking77"), false_negatives="unique_id", same_tower=False)])
    ex = module.train_dataset[3]
    assert ex.query.endswith(" 3") and ex.positive.endswith(" 3") and ex.negative.endswith(" 3")
    batch = next(iter(module.train_dataloader()))
    assert not batch["same_tower"].any()


def test_two_ranks_disjoint_and_homogeneous_on_every_step():
    sources = [SourceConfig(str(ASSETS / "tiny_snli")), SourceConfig(str(ASSETS / "tiny_banking77"))]
    per_rank = []
    for rank in range(2):
        module = dm(sources, homogeneous_batches=True, seed=5)
        module.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        per_rank.append([b["ids"] for b in module.train_dataloader()])
    assert len(per_rank[0]) == len(per_rank[1]) == 203 // 16 + 200 // 16
    for a, b in zip(*per_rank):
        assert {i.split("-")[0] for i in a + b} in ({"snli"}, {"banking77"})  # one source for the global batch
        assert not set(a) & set(b)
    seen = [i for rank in per_rank for batch in rank for i in batch]
    assert len(seen) == len(set(seen))


@pytest.mark.slow
def test_gecko_fit_runs_the_mixture_config(tmp_path, monkeypatch):
    from gecko_lightning.lightning_cli import run_lightning_cli

    monkeypatch.chdir(REPO)
    cli = run_lightning_cli(["fit", "--config", "configs/mixture_tiny.yaml", "--trainer.max_steps=3",
                             "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
                             "--trainer.enable_progress_bar=false"])
    assert cli.trainer.global_step == 3
    assert isinstance(cli.datamodule, MixtureDataModule) and cli.datamodule.homogeneous_batches
