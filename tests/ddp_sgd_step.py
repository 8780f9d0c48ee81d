"""One Lightning DDP step on 2 CPU processes with plain SGD; rank 0 saves the updated weights.

Run by tests/test_ddp_cpu.py as a script (Lightning's DDP launcher re-runs the script for rank 1):
    python tests/ddp_sgd_step.py MODEL_DIR OUT_PREFIX ROOT_DIR CHUNK [CHUNK ...]   # CHUNK 0 = no GradCache
One fit per CHUNK in the same two processes (the process group is set up once), saved as
OUT_PREFIX<CHUNK>.pt.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ddp_cpu import B, global_batch  # noqa: E402

from gecko_lightning.module import GeckoModule  # noqa: E402

LR = 0.5


class SGDGecko(GeckoModule):
    """SGD without momentum or schedule: the update is exactly -lr·grad, so gradient scale shows."""

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=LR)


def select(batch, idx):
    return {k: ({f: t[idx] for f, t in v.items()} if isinstance(v, dict) else v[idx]) for k, v in batch.items()}


def fit_one_step(model_dir: str, out: str, chunk: int, root: str) -> None:
    torch.manual_seed(0)
    module = SGDGecko(model_dir, random_init=True, matryoshka_dims=[32, 16], grad_cache_chunk_size=chunk or None).double()
    batch = global_batch(module)
    # Sequential order: Lightning's DistributedSampler gives rank r rows r, r+2, ...; the loss is
    # invariant to a permutation of the global batch, so the reference may use any row order.
    loader = DataLoader(list(range(2 * B)), batch_size=B, collate_fn=lambda idx: select(batch, torch.tensor(idx)))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=1, precision="64-true", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root)
    trainer.fit(module, loader)
    if trainer.global_rank == 0:
        torch.save(module.state_dict(), out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    model_dir, prefix, root = sys.argv[1:4]
    for chunk in map(int, sys.argv[4:]):
        fit_one_step(model_dir, f"{prefix}{chunk}.pt", chunk, root)
