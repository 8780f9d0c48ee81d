"""Data-parallel training on 2 CPU processes (gloo): the real `gecko fit`, and gradient parity.

Parity: under DDP, which averages gradients over ranks, the loss gathered across ranks must give
the gradient of one process on the concatenated batch, with and without GradCache.
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from gecko_lightning.module import GeckoModule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = 4  # rows per rank; tests/ddp_sgd_step.py imports this and global_batch


pytestmark = pytest.mark.usefixtures("one_thread")


def build(path, chunk=None):
    torch.manual_seed(0)
    return GeckoModule(str(path), random_init=True, matryoshka_dims=[32, 16], grad_cache_chunk_size=chunk).double()


def global_batch(module):
    """2·B rows with ragged lengths, a negative each, and pos_ids shared across the two ranks' halves."""
    tok = module.encoder.tokenize
    words = "red green blue cyan magenta yellow black white".split()
    text = lambda i, n: " ".join(words[(3 * i + j) % 8] for j in range(n))  # noqa: E731
    return {
        "query": dict(tok([f"task: search | query: {text(i, 2 + i % 3)}" for i in range(2 * B)])),
        "positive": dict(tok([f"title: none | text: {text(i, 4 + i)}" for i in range(2 * B)])),
        "negative": dict(tok([f"title: none | text: {text(i + 5, 3 + i % 4)}" for i in range(2 * B)])),
        "pos_ids": torch.tensor([0, 1, 2, 3, 4, 1, 5, 0]),  # rows 1/5 and 0/7 straddle the ranks
        "same_tower": torch.tensor([True, True, False, True, True, True, True, False]),
    }


def close(got, want, msg):
    """1e-5 relative to the tensor's scale: the encoder normalises in float32, so long sums carry float32
    noise; key biases have an exactly-zero gradient (softmax shift invariance) that shows as ~1e-20."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=max(1e-5 * float(want.abs().max()), 1e-12), msg=msg)


def plain_grads(path):
    module = build(path)
    module.training_step(global_batch(module), 0).backward()
    return {n: p.grad for n, p in module.named_parameters()}


def test_every_trainable_parameter_gets_a_gradient(tiny_bert):
    """DDP (without find_unused_parameters) fails at the first step on a parameter the loss never reaches."""
    module = build(tiny_bert)
    module.training_step(global_batch(module), 0).backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, **kw)


@pytest.mark.slow
def test_gecko_fit_ddp_two_cpu_processes(tmp_path):
    """The documented command: `gecko fit --config configs/tiny.yaml` on 2 CPU processes with DDP."""
    gecko = shutil.which("gecko") or pytest.skip("the gecko command is not installed (pip install -e .)")
    res = run([gecko, "fit", "--config", "configs/tiny.yaml", "--trainer.accelerator=cpu", "--trainer.devices=2",
               "--trainer.strategy=ddp", "--trainer.max_steps=3", f"--trainer.default_root_dir={tmp_path}",
               "--trainer.enable_progress_bar=false"])
    assert res.returncode == 0, res.stderr[-3000:]
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert len(ckpts) == 1 and ckpts[0].name.endswith("step=3.ckpt")
    assert torch.load(ckpts[0], map_location="cpu", weights_only=False)["global_step"] == 3


@pytest.mark.slow
def test_lightning_ddp_sgd_update_equals_one_process(no_dropout_bert, tmp_path):
    """One SGD step (no momentum: the update is -lr·grad) on 2 Lightning DDP processes moves the
    weights exactly as one process on the concatenated batch, without and with GradCache."""
    path = no_dropout_bert
    script = os.path.join(REPO, "tests", "ddp_sgd_step.py")
    res = run([sys.executable, script, str(path), str(tmp_path / "after"), str(tmp_path / "run"), "0", "3"])
    assert res.returncode == 0, res.stderr[-3000:]
    before, grads, lr = build(path).state_dict(), plain_grads(path), 0.5
    for chunk in (0, 3):
        after = torch.load(tmp_path / f"after{chunk}.pt")
        for name, g in grads.items():
            close(after[name] - before[name], -lr * g, f"update differs for {name} (grad_cache_chunk_size={chunk})")
