"""All-gather with gradients: the one piece of distributed logic the loss needs.

At world size 1 (or without an initialised process group) `gather_with_grad` is the identity,
so single-process training runs the same code path as multi-GPU training.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    """Forward: concatenate every rank's (B, ...) tensor. Backward: sum the incoming gradients
    over ranks (every rank's loss used our rows) and keep this rank's slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.batch = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)  # (world·B, ...)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_with_grad(x: Tensor) -> Tensor:
    """(B, ...) on each rank -> (world·B, ...) in rank order, differentiable w.r.t. the local rows.

    Every rank must pass the same B (loaders that feed this use drop_last=True).
    Under DDP, which averages gradients over ranks, the result is the gradient of the mean
    loss over the global batch, exactly as one process on the concatenated batch.
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)
    return _AllGather.apply(x)
