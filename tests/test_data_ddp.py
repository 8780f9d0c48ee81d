"""Two real DDP processes (gloo, CPU): Lightning keeps our sampler, ranks see disjoint records and
every global step draws one source on both ranks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer

from gecko_lightning.data import MixtureDataModule, SourceConfig

ASSETS = Path(__file__).resolve().parents[1] / "configs" / "assets"


class IdWriter(LightningModule):
    def __init__(self, out: str) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.out = out

    def training_step(self, batch, batch_idx):
        with open(Path(self.out) / f"rank{self.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(batch["ids"]) + "\n")
        return (self.w * batch["query"]["input_ids"].float().mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_two_ddp_ranks_get_disjoint_homogeneous_shards(tmp_path):
    dm = MixtureDataModule(
        [SourceConfig(str(ASSETS / "tiny_snli")), SourceConfig(str(ASSETS / "tiny_banking77"))],
        tokenizer=str(ASSETS / "tiny-bert"), batch_size=8, homogeneous_batches=True, query_max_length=8,
        doc_max_length=8,
    )
    trainer = Trainer(
        accelerator="cpu", devices=2, strategy="ddp_fork", max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(IdWriter(str(tmp_path)), datamodule=dm)
    ranks = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 203 // 16 + 200 // 16
    for a, b in zip(*ranks):
        assert len(a) == len(b) == 8 and not set(a) & set(b)
        assert len({i.split("-")[0] for i in a + b}) == 1  # one source for the whole global batch
    seen = [i for rank in ranks for batch in rank for i in batch]
    assert len(seen) == len(set(seen))
