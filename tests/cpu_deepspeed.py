"""Lightning's `DeepSpeedStrategy` on CPU processes (gloo), so CI trains under ZeRO-2/3 for real.

Test code, not the package: users run DeepSpeed on GPUs, where the stock strategy works. Selected
from the command line of `gecko fit`, on top of an unchanged preset:

    gecko fit --config configs/tiny.yaml --config configs/strategy/deepspeed_zero2.yaml \
        --trainer.accelerator=cpu --trainer.devices=2 --trainer.precision=32 \
        --trainer.strategy.class_path=tests.cpu_deepspeed.CPUDeepSpeedStrategy

(`tests` importable: run from the repository root with it on PYTHONPATH.) Also here: the two
callbacks the DeepSpeed tests add, `BatchLog` (which rows each rank trained on, step by step) and
`Crash` (a run killed at a given step).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """The stock strategy, with the three CUDA-only steps replaced (Lightning 2.6, DeepSpeed 0.19).

    1. `setup_environment` raises unless the accelerator is CUDA: run DDP's instead (device setup,
       then `setup_distributed`).
    2. `setup_distributed` validates device indices, which are None for CPU devices: skip that check.
    3. `deepspeed.initialize` is given `device_rank=root_device.index`, None on CPU: pass the local rank.
    """

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)

    def setup_distributed(self) -> None:
        from lightning.fabric.utilities.seed import reset_seed

        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank), config=self.config, model=model,
            model_parameters=filter(lambda p: p.requires_grad, model.parameters()), optimizer=optimizer,
            lr_scheduler=lr_scheduler, dist_init_required=False,
        )
        return engine, ds_optimizer


def batch_digest(batch: dict) -> str:
    """A fingerprint of the rows a rank trains on: every tower's token ids, in order."""
    h = hashlib.sha1()
    for key in sorted(k for k, v in batch.items() if isinstance(v, dict)):
        h.update(key.encode())
        h.update(batch[key]["input_ids"].cpu().numpy().tobytes())
    return h.hexdigest()


class BatchLog(Callback):
    """Write {global step: digest of this rank's batch} to <default_root_dir>/batches_rank<r>.json."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen[trainer.global_step] = batch_digest(batch)
        path = Path(trainer.default_root_dir) / f"batches_rank{trainer.global_rank}.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps(old | {str(k): v for k, v in self.seen.items()}))


class Crash(Callback):
    """Kill every rank with SIGKILL as it starts step `at`: no teardown, as when a node is lost."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), 9)
