"""Gecko's contrastive loss as pure functions of embeddings (no model, no Lightning).

For local query i with global index g (= rank*B + i), Eq. 3 of the paper is

    L_i = -log( e^{s(q_i,p_g)/τ} / ( Σ_j e^{s(q_i,p_j)/τ} + e^{s(q_i,n_g)/τ} + Σ_{j≠g} e^{s(q_i,q_j)/τ} ) )

with j running over the *global* batch gathered from every rank (identity on one process).
Each denominator term is a switch; `hard_negatives="all"` is the common variant that puts
every row's negative into every denominator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gecko_lightning.distributed import gather_with_grad, rank_and_world

HARD_NEGATIVES = ("own", "all", "none")


def _check_inputs(q: Tensor, pos: Tensor, neg: Tensor | None, temperature: float, hard_negatives: str) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; the paper's default is 0.05")
    if hard_negatives not in HARD_NEGATIVES:
        raise ValueError(f"hard_negatives must be one of {HARD_NEGATIVES}, got {hard_negatives!r}")
    if q.dim() != 2 or q.shape != pos.shape:
        raise ValueError(f"q and pos must both be (B, D) with the same shape, got q {tuple(q.shape)} and pos {tuple(pos.shape)}")
    if neg is not None and neg.shape != q.shape:
        raise ValueError(f"neg must have the shape of q {tuple(q.shape)}, got {tuple(neg.shape)}")


def contrastive_logits(
    q: Tensor,
    pos: Tensor,
    neg: Tensor | None = None,
    *,
    temperature: float = 0.05,
    same_tower: bool | Tensor = True,
    hard_negatives: str = "own",
    pos_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The masked logit matrix of Eq. 3 for this rank's rows, and the target column of each row.

    Returns logits (B, C) with masked entries at -inf, and targets (B,) indexing the positive.
    Columns: [global positives (N) | hard negatives (1 own, or N all) | global queries (N)].
    """
    _check_inputs(q, pos, neg, temperature, hard_negatives)
    rank, _ = rank_and_world()
    b = q.shape[0]
    q, pos, neg = _upcast(q), _upcast(pos), _upcast(neg)  # bf16 under DeepSpeed: the softmax wants fp32
    all_pos = gather_with_grad(pos)  # (N, D)
    n = all_pos.shape[0]
    targets = torch.arange(b, device=q.device) + rank * b  # (B,) labels offset by rank·B
    logits = [_mask_duplicates(q @ all_pos.T, pos_ids, targets, b)]  # (B, N)
    if neg is not None and hard_negatives == "own":
        logits.append((q * neg).sum(-1, keepdim=True))  # (B, 1)
    elif neg is not None and hard_negatives == "all":
        logits.append(q @ gather_with_grad(neg).T)  # (B, N)
    if isinstance(same_tower, Tensor) or same_tower:  # a per-row tensor is masked below, with no host sync
        qq = q @ gather_with_grad(q).T  # (B, N)
        off = torch.ones_like(qq, dtype=torch.bool)
        off[torch.arange(b, device=q.device), targets] = False  # drop s(q_i, q_i)
        if isinstance(same_tower, Tensor):  # per-row switch from the data source
            off &= same_tower.to(q.device, torch.bool).view(b, 1)
        logits.append(qq.masked_fill(~off, float("-inf")))
    assert logits[0].shape == (b, n)
    return torch.cat(logits, dim=1) / temperature, targets


def _upcast(x: Tensor | None) -> Tensor | None:
    return x.float() if x is not None and x.dtype in (torch.float16, torch.bfloat16) else x


def _mask_duplicates(qp: Tensor, pos_ids: Tensor | None, targets: Tensor, b: int) -> Tensor:
    """Mask in-batch positives that share row i's pos_id (other than row i's own positive)."""
    if pos_ids is None:
        return qp
    if pos_ids.shape != (b,):
        raise ValueError(f"pos_ids must be shape ({b},) to match the batch, got {tuple(pos_ids.shape)}")
    all_ids = gather_with_grad(pos_ids.to(qp.device))  # (N,), integer: no grad flows
    dup = pos_ids.to(qp.device).view(b, 1) == all_ids.view(1, -1)  # (B, N)
    dup[torch.arange(b, device=qp.device), targets] = False
    return qp.masked_fill(dup, float("-inf"))


def contrastive_loss(
    q: Tensor,
    pos: Tensor,
    neg: Tensor | None = None,
    *,
    temperature: float = 0.05,
    same_tower: bool | Tensor = True,
    hard_negatives: str = "own",
    pos_ids: Tensor | None = None,
) -> Tensor:
    """Gecko's Eq. 3, averaged over this rank's rows. q, pos, neg: (B, D), L2-normalised.

    `hard_negatives`: "own" (row i's negative only, the paper), "all" (every row's), "none".
    `same_tower`: add s(q_i, q_j), j ≠ i; a (B,) bool tensor switches it per row.
    `pos_ids`: (B,) ints; positives sharing row i's id leave row i's denominator.
    Across ranks the batch is gathered with gradients, so under DDP's gradient averaging the
    parameter gradient equals that of one process on the concatenated batch.
    """
    logits, targets = contrastive_logits(
        q, pos, neg, temperature=temperature, same_tower=same_tower, hard_negatives=hard_negatives, pos_ids=pos_ids
    )
    return F.cross_entropy(logits, targets)


def _truncate(x: Tensor | None, d: int) -> Tensor | None:
    return None if x is None else F.normalize(_upcast(x[:, :d]), dim=-1)


def matryoshka_loss(
    q: Tensor,
    pos: Tensor,
    neg: Tensor | None = None,
    *,
    dims: Sequence[int],
    weights: Sequence[float] | None = None,
    **loss_kwargs,
) -> Tensor:
    """Σ_k w_k · contrastive_loss on the first dims[k] dimensions, re-normalised (MRL).

    Any `contrastive_loss` keyword passes through. A single full dim with weight 1 equals the base loss.
    """
    dims = list(dims)
    weights = [1.0] * len(dims) if weights is None else list(weights)
    full = q.shape[-1]
    if not dims:
        raise ValueError("matryoshka dims must not be empty; use None to train the full dimension only")
    if len(weights) != len(dims):
        raise ValueError(f"got {len(weights)} matryoshka weights for {len(dims)} dims {dims}; give one weight per dim")
    for d in dims:
        if not 0 < d <= full:
            raise ValueError(f"matryoshka dim {d} is out of range for embeddings of dimension {full}; use 1..{full}")
    return sum(
        w * contrastive_loss(_truncate(q, d), _truncate(pos, d), _truncate(neg, d), **loss_kwargs)
        for d, w in zip(dims, weights)
    )


@torch.no_grad()
def in_batch_accuracy(q: Tensor, pos: Tensor) -> Tensor:
    """Share of local queries whose own positive scores highest among the gathered positives."""
    rank, _ = rank_and_world()
    scores = _upcast(q) @ gather_with_grad(_upcast(pos)).T  # (B, N)
    targets = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    return (scores.argmax(-1) == targets).float().mean()
