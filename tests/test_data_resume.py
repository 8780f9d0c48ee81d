"""Exact resume: a run that crashes mid-epoch and resumes from its checkpoint sees the same
batches, in the same order, as a run that never stopped; no record repeats or is skipped."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from gecko_lightning.data import FRetDataModule, MixtureDataModule, SourceConfig

REPO = Path(__file__).resolve().parents[1]
TINY_FRET = str(REPO / "configs" / "assets" / "tiny_fret")
TOKENIZER = str(REPO / "configs" / "assets" / "tiny-bert")


class Recorder(LightningModule):
    """Records the ids of every training batch; crashes at `crash_at` (a global step) if set."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.crash_at = crash_at
        self.seen: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        if self.crash_at is not None and self.global_step == self.crash_at:
            raise RuntimeError("simulated crash")
        self.seen.append(list(batch["ids"]))
        return (self.w * batch["query"]["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def trainer(tmp_path: Path, **kw) -> Trainer:
    return Trainer(
        max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, accelerator="cpu", devices=1, **kw,
    )


def make_dm(group_by_length: int = 0):
    return MixtureDataModule(
        [SourceConfig(TINY_FRET, name="a"), SourceConfig(TINY_FRET, name="b", symmetric=True)],
        tokenizer=TOKENIZER, batch_size=8, homogeneous_batches=True, sampling="uniform",
        query_max_length=8, doc_max_length=8, seed=11, group_by_length=group_by_length,
    )


# saved mid-epoch 0, at the last batch of epoch 0, mid-epoch 1; with and without length grouping
@pytest.mark.parametrize("saved_at,group", [(3, 0), (24, 0), (28, 0), (3, 4), (28, 4)])
def test_crash_and_resume_sees_the_uninterrupted_sequence(tmp_path, saved_at, group):
    full = Recorder()
    trainer(tmp_path / "full", enable_checkpointing=False).fit(full, datamodule=make_dm(group))
    steps_per_epoch = 2 * 96 // 8  # two sources of 96, uniform, batch 8
    assert len(full.seen) == 2 * steps_per_epoch

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=saved_at, save_top_k=-1)
    crashed = Recorder(crash_at=saved_at + 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(tmp_path / "run", callbacks=[ckpt]).fit(crashed, datamodule=make_dm(group))
    saved = sorted((tmp_path / "ckpt").glob("*.ckpt"))[-1]
    assert f"step={saved_at}" in saved.name

    resumed = Recorder()
    trainer(tmp_path / "run", enable_checkpointing=False).fit(resumed, datamodule=make_dm(group), ckpt_path=saved)
    assert crashed.seen[:saved_at] + resumed.seen == full.seen
    epoch0 = Counter(i for b in full.seen[:steps_per_epoch] for i in b)
    assert set(epoch0.values()) == {2}  # both sources hold the same 96 ids: each seen once per source


def test_state_dict_round_trip_through_a_fresh_datamodule():
    dm = FRetDataModule(TINY_FRET, tokenizer=TOKENIZER, batch_size=8, query_max_length=8, doc_max_length=8)
    dm.setup("fit")
    full = [b["ids"] for b in dm.train_dataloader()]
    other = FRetDataModule(TINY_FRET, tokenizer=TOKENIZER, batch_size=8, query_max_length=8, doc_max_length=8)
    other.load_state_dict({"epoch": 0, "consumed": 4, "seed": 0, "global_batch": 8})
    other.setup("fit")
    assert [b["ids"] for b in other.train_dataloader()] == full[4:]


def test_resume_with_another_global_batch_warns_and_skips_the_same_number_of_records():
    dm = FRetDataModule(TINY_FRET, tokenizer=TOKENIZER, batch_size=8, query_max_length=8, doc_max_length=8)
    dm.load_state_dict({"epoch": 0, "consumed": 2, "seed": 0, "global_batch": 16})  # 32 records were seen
    dm.setup("fit")
    with pytest.warns(UserWarning, match="resuming with global batch 8 / seed 0 instead of 16 / 0"):
        loader = dm.train_dataloader()
    assert len(list(loader)) == 96 // 8 - 32 // 8
