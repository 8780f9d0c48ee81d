"""Two gloo processes on CPU: the gathered loss gives one process's gradient on the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from gecko_lightning.distributed import gather_with_grad, rank_and_world
from gecko_lightning.losses import contrastive_loss, matryoshka_loss

B, D_IN, D = 3, 6, 4
VARIANTS = [
    dict(hard_negatives="own", same_tower=True),
    dict(hard_negatives="all", same_tower=True),
    dict(hard_negatives="none", same_tower=False),
    dict(hard_negatives="own", same_tower=True, with_ids=True),
    dict(hard_negatives="own", same_tower=True, matryoshka=True),
]


def global_batch():
    g = torch.Generator().manual_seed(0)
    x = {k: torch.randn(2 * B, D_IN, generator=g, dtype=torch.float64) for k in ("q", "p", "n")}
    ids = torch.tensor([0, 1, 2, 1, 3, 4])  # rows 1 and 3 share a positive, across ranks
    w = torch.randn(D_IN, D, generator=g, dtype=torch.float64)
    return x, ids, w


def loss_and_grad(x, ids, w, variant):
    """Embed with a linear 'encoder' w, take the loss, return (loss, dL/dw)."""
    w = w.clone().requires_grad_()
    emb = {k: F.normalize(v @ w, dim=-1) for k, v in x.items()}
    kw = dict(hard_negatives=variant["hard_negatives"], same_tower=variant["same_tower"], temperature=0.1,
              pos_ids=ids if variant.get("with_ids") else None)
    if variant.get("matryoshka"):
        loss = matryoshka_loss(emb["q"], emb["p"], emb["n"], dims=[4, 2], weights=[1.0, 0.5], **kw)
    else:
        loss = contrastive_loss(emb["q"], emb["p"], emb["n"], **kw)
    loss.backward()
    return loss.detach(), w.grad


def worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        assert rank_and_world() == (rank, 2)
        x, ids, w = global_batch()
        local = {k: v[rank * B : (rank + 1) * B] for k, v in x.items()}
        results = []
        for variant in VARIANTS:
            loss, grad = loss_and_grad(local, ids[rank * B : (rank + 1) * B], w, variant)
            dist.all_reduce(grad)  # DDP averages gradients over ranks
            dist.all_reduce(loss)
            results.append((loss / 2, grad / 2))
        gathered = gather_with_grad(torch.arange(B) + 10 * rank)
        if rank == 0:
            torch.save({"results": results, "gathered": gathered}, out)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gradient_equals_single_process(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert got["gathered"].tolist() == [0, 1, 2, 10, 11, 12]  # rank order
    x, ids, w = global_batch()
    for variant, (loss, grad) in zip(VARIANTS, got["results"]):
        want_loss, want_grad = loss_and_grad(x, ids, w, variant)
        torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=1e-12, msg=f"loss differs for {variant}")
        torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12, msg=f"grad differs for {variant}")


def test_world_size_one_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
