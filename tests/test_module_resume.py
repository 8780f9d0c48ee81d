"""Exact resume means bitwise: a run killed after a checkpoint and resumed ends with the weights of a
run that never stopped, with dropout on (configs/tiny.yaml, one CPU process)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from gecko_lightning.data import FRetDataModule
from gecko_lightning.module import GeckoModule

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
MAX_STEPS = CONFIG["trainer"]["max_steps"]


class Crash(Callback):
    """Kill the run as it starts step `at`, after earlier checkpoints were written."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


def build() -> tuple[GeckoModule, FRetDataModule]:
    """The model and data of configs/tiny.yaml, built the way `gecko fit` builds them (seed first)."""
    seed_everything(CONFIG["seed_everything"])
    model_path = str(REPO / CONFIG["model"]["model_name_or_path"])
    model = GeckoModule(**{**CONFIG["model"], "model_name_or_path": model_path})
    data = CONFIG["data"]["init_args"]
    return model, FRetDataModule(**{**data, "path": str(REPO / data["path"]), "tokenizer": model_path})


def fit(root: Path, callbacks: list, ckpt_path: Path | None = None) -> GeckoModule:
    model, data = build()
    trainer = Trainer(
        max_steps=MAX_STEPS, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, callbacks=callbacks,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fit(tmp_path_factory.mktemp("full"), []).state_dict()
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("saved_at", [4, 6])  # mid-epoch, and the last batch of epoch 0 (6 batches of 16)
def test_killed_and_resumed_run_ends_bitwise_equal(uninterrupted, tmp_path, one_thread, saved_at):
    backbone = GeckoModule(str(REPO / CONFIG["model"]["model_name_or_path"]), random_init=True).encoder.backbone
    assert backbone.config.hidden_dropout_prob > 0 and backbone.training  # the case that used to diverge

    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=saved_at, save_top_k=-1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(tmp_path, [checkpoints, Crash(at=saved_at + 2)])
    (ckpt,) = (tmp_path / "ckpt").glob(f"*step={saved_at}.ckpt")

    resumed = fit(tmp_path, [], ckpt_path=ckpt).state_dict()
    assert resumed.keys() == uninterrupted.keys()
    differ = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert not differ, f"{len(differ)} tensors differ after the resume, e.g. {differ[0]}"
