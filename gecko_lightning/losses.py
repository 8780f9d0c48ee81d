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
DISTILL = ("none", "kl", "margin_mse")


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


def list_scores(q: Tensor, cands: Tensor, index: Tensor) -> Tensor:
    """s(q_i, c_ik): (B, D) queries, (M, D) candidate passages, (B, K) indices into them -> (B, K).
    A padded slot (index -1) gets 0; `distill_loss` masks it."""
    picked = cands[index.clamp(min=0)]  # (B, K, D)
    return torch.einsum("bd,bkd->bk", q, picked)


def distill_loss(
    q: Tensor,
    cands: Tensor,
    index: Tensor,
    teacher: Tensor,
    *,
    kind: str = "kl",
    teacher_temperature: float = 1.0,
    student_temperature: float = 0.05,
) -> Tensor:
    """The teacher's judgement over each query's candidate list, distilled into the embedder.

    q: (B, D) and cands: (M, D), L2-normalised; index: (B, K) rows of `cands` in each query's list,
    -1 where a list is shorter; teacher: (B, K) the LLM's scores of the same passages. Slot 0 of a
    list is the record's positive (what `margin_mse` measures margins from).
      kl:         KL(softmax(teacher/T_t) || softmax(s/T_s)) over the list (Tamber et al. 2025; ART);
      margin_mse: mean over k >= 1 of ((s_0 - s_k)/T_s - (t_0 - t_k)/T_t)^2 (GPL's MarginMSE, with
                  both sides on a logit scale: cosines and log-likelihoods differ in range).
    Rows with fewer than two candidates add nothing. The sum over rows is divided by the number of
    rows with a list in the *global* batch, times the world size, so that under DDP's gradient
    averaging the gradient equals that of one process on the concatenated batch (cf. `contrastive_loss`).
    """
    if kind not in DISTILL[1:]:
        raise ValueError(f"distill kind must be one of {DISTILL[1:]}, got {kind!r}")
    if not (teacher_temperature > 0 and student_temperature > 0):
        raise ValueError(f"temperatures must be > 0, got teacher {teacher_temperature}, student {student_temperature}")
    if index.shape != teacher.shape or index.shape[0] != q.shape[0]:
        raise ValueError(f"index {tuple(index.shape)} and teacher {tuple(teacher.shape)} must both be (B={q.shape[0]}, K)")
    q, cands = _upcast(q), _upcast(cands)
    valid = index >= 0  # (B, K)
    rows = valid.sum(1) >= 2  # (B,)
    student = list_scores(q, cands, index) / student_temperature  # (B, K)
    target = teacher.to(student.dtype) / teacher_temperature  # (B, K)
    if kind == "kl":
        log_s = student.masked_fill(~valid, float("-inf")).log_softmax(-1)
        log_t = target.masked_fill(~valid, float("-inf")).log_softmax(-1)
        per = torch.where(valid, log_t.exp() * (log_t - log_s), torch.zeros_like(student)).sum(-1)  # (B,)
    else:
        gap = (student[:, :1] - student) - (target[:, :1] - target)  # (B, K); slot 0 is 0 by construction
        pairs = valid.clone()
        pairs[:, 0] = False
        per = torch.where(pairs, gap.square(), torch.zeros_like(gap)).sum(-1) / pairs.sum(-1).clamp(min=1)  # (B,)
    per = torch.where(rows, per, torch.zeros_like(per))
    _, world = rank_and_world()
    count = gather_with_grad(rows.sum().view(1)).sum().clamp(min=1)  # global rows with a list; no grad
    return per.sum() * world / count


def matryoshka_distill_loss(
    q: Tensor, cands: Tensor, index: Tensor, teacher: Tensor, *, dims: Sequence[int] | None,
    weights: Sequence[float] | None = None, **kwargs,
) -> Tensor:
    """Σ_k w_k · distill_loss on the first dims[k] dimensions, re-normalised; the full dim alone when dims is None."""
    if not dims:
        return distill_loss(q, cands, index, teacher, **kwargs)
    weights = [1.0] * len(dims) if weights is None else list(weights)
    return sum(w * distill_loss(_truncate(q, d), _truncate(cands, d), index, teacher, **kwargs)
               for d, w in zip(dims, weights))


@torch.no_grad()
def in_batch_accuracy(q: Tensor, pos: Tensor) -> Tensor:
    """Share of local queries whose own positive scores highest among the gathered positives."""
    rank, _ = rank_and_world()
    scores = _upcast(q) @ gather_with_grad(_upcast(pos)).T  # (B, N)
    targets = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    return (scores.argmax(-1) == targets).float().mean()
