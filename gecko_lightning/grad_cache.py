"""GradCache: the full-batch Gecko loss on batches far larger than activation memory allows.

Three passes (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"):

1. embed every tower of the batch in chunks of `chunk_size` texts, without a graph;
2. take the full-batch loss (the caller's `loss_fn`; in GeckoModule its `compute_loss`: Matryoshka,
   same-tower, `pos_ids` masking, cross-device gather) and its gradient with respect to the cached
   embeddings;
3. re-run each chunk with a graph, restoring its random state so dropout draws the same masks,
   and push the cached embedding gradient into the encoder.

The cache knows only an `embed` function, a loss function and the parameters to differentiate:
GeckoModule passes its own (module.py imports this file, never the reverse).

Pass 3 runs *inside* autograd: `grad_cache_step` returns a surrogate whose value is the true
loss and whose backward does the replay, so Lightning's automatic optimisation, AMP scaling,
`accumulate_grad_batches` and DeepSpeed's `engine.backward` all call it like any loss. Every
chunk but the last returns its parameter gradient with `torch.autograd.grad` (no accumulation),
and the last chunk's backward carries their sum, so each parameter's gradient-accumulation hook
fires exactly once per step. DDP's reducer and DeepSpeed ZeRO's partition reducer both rely on
that; peers that call backward once per chunk trip "Gradient computed twice for this partition".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Features = dict[str, Tensor]
Embed = Callable[[Features], Tensor]  # (c, T) token features -> (c, D) embeddings, with a graph when grad is on
# (q, pos, neg, batch, **other towers' embeddings by key) -> scalar
LossFn = Callable[..., Tensor]
TRIPLET = ("query", "positive", "negative")


@dataclass
class _Chunk:
    """One chunk of one tower: its token features, and what the replay must reproduce."""

    features: Features  # (c, T) input_ids / attention_mask
    cpu_rng: Tensor
    cuda_rng: Tensor | None  # the input device's CUDA generator state, when on CUDA
    autocast: tuple[bool, torch.dtype]  # AMP state of the first pass (Lightning only wraps forward)


def _slice(features: Features, start: int, size: int) -> Features:
    return {k: v[start : start + size] for k, v in features.items()}


def _capture(features: Features) -> _Chunk:
    device = features["input_ids"].device
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    amp = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
    return _Chunk(features, torch.get_rng_state(), cuda, amp)


@contextmanager
def _replaying(chunk: _Chunk) -> Iterator[None]:
    """Run a block with the chunk's first-pass RNG and autocast state; leave the caller's RNG untouched."""
    device = chunk.features["input_ids"].device
    cpu_now = torch.get_rng_state()
    cuda_now = torch.cuda.get_rng_state(device) if chunk.cuda_rng is not None else None
    torch.set_rng_state(chunk.cpu_rng)
    if chunk.cuda_rng is not None:
        torch.cuda.set_rng_state(chunk.cuda_rng, device)
    try:
        with torch.enable_grad(), torch.autocast(device.type, dtype=chunk.autocast[1], enabled=chunk.autocast[0]):
            yield
    finally:
        torch.set_rng_state(cpu_now)
        if cuda_now is not None:
            torch.cuda.set_rng_state(cuda_now, device)


def embed_in_chunks(embed: Embed, features: Features, size: int) -> tuple[Tensor, list[_Chunk]]:
    """Pass 1 for one tower: (B, T) features -> (B, D) embeddings without a graph, and the chunks to replay."""
    chunks, parts = [], []
    for start in range(0, features["input_ids"].shape[0], size):
        chunk = _capture(_slice(features, start, size))
        with torch.no_grad():
            parts.append(embed(chunk.features))  # (c, D)
        chunks.append(chunk)
    return torch.cat(parts), chunks


class _Replay:
    """Pass 3: re-embed each chunk with a graph and backpropagate its cached embedding gradient."""

    def __init__(self, embed: Embed, params: list[Tensor], chunks: list[_Chunk], grads: list[Tensor]) -> None:
        self.embed, self.params, self.chunks, self.grads = embed, params, chunks, grads

    def _embed(self, chunk: _Chunk) -> Tensor:
        with _replaying(chunk):
            return self.embed(chunk.features)  # (c, D)

    def run(self, scale: Tensor) -> None:
        params = self.params
        summed: list[Tensor | None] = [None] * len(params)
        for chunk, grad in zip(self.chunks[:-1], self.grads[:-1]):
            emb = self._embed(chunk)
            for i, g in enumerate(torch.autograd.grad(emb, params, grad.to(emb.dtype) * scale, allow_unused=True)):
                if g is not None:
                    summed[i] = g if summed[i] is None else summed[i].add_(g)
        self._last_backward(params, summed, scale)

    def _last_backward(self, params: list[Tensor], summed: list[Tensor | None], scale: Tensor) -> None:
        """The one accumulating backward: each earlier chunk's sum joins the parameter's gradient
        before it reaches `.grad`, so accumulation hooks (DDP, ZeRO) see the whole step once."""
        pending = {i for i, s in enumerate(summed) if s is not None}

        def add(i: int):
            def hook(g: Tensor) -> Tensor:
                pending.discard(i)
                return g + summed[i]

            return hook

        handles = [params[i].register_hook(add(i)) for i in pending]
        try:
            emb = self._embed(self.chunks[-1])
            torch.autograd.backward(emb, self.grads[-1].to(emb.dtype) * scale)
        finally:
            for h in handles:
                h.remove()
        for i in pending:  # used by an earlier chunk but not the last one: accumulate directly
            p = params[i]
            p.grad = summed[i] if p.grad is None else p.grad + summed[i]


class _SurrogateLoss(torch.autograd.Function):
    """Forward: the true loss value. Backward: the replay, scaled by the incoming gradient
    (1/accumulate_grad_batches, the AMP loss scale, DeepSpeed's gradient-accumulation factor)."""

    @staticmethod
    def forward(ctx, loss: Tensor, anchor: Tensor, replay: _Replay) -> Tensor:
        ctx.replay = replay
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[None, None, None]:
        replay, ctx.replay = ctx.replay, None  # a second backward would replay stale grads
        if replay is None:
            raise RuntimeError("the GradCache loss was already backpropagated once; run a new training step")
        replay.run(grad_output)
        return None, None, None


def check_chunk_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(
            f"model.grad_cache_chunk_size must be a positive number of texts per chunk, got {size!r}; "
            "try 32-256 (what fits in memory with a graph), or null to turn GradCache off"
        )
    return size


def check_strategy(strategy: Any) -> None:
    """DDP with find_unused_parameters=True walks the forward graph, finds no parameter in the
    surrogate's (the forward ran without grad), marks all of them ready at once, and then fails
    when the replay's gradients arrive ("Expected to mark a variable ready only once").
    `strategy` is the trainer's (None outside a Trainer)."""
    if getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters"):
        raise ValueError(
            "model.grad_cache_chunk_size does not work with DDP's find_unused_parameters=True "
            f"(strategy {type(strategy).__name__}); use --trainer.strategy=ddp: GeckoModule leaves no parameter unused"
        )


def grad_cache_step(embed: Embed, loss_fn: LossFn, params: Iterable[Tensor], batch: dict[str, Any],
                    towers: Sequence[str], chunk_size: int) -> tuple[Tensor, dict[str, Tensor]]:
    """A training step's loss with a gradient cache: (a scalar to backpropagate as usual, the detached
    (B, D) embeddings of each tower for logging).

    towers: the batch keys to embed, ("query", "positive"[, "negative"][, others]); `loss_fn(q, pos, neg,
    batch, **others)` sees them in that order (neg None without a third tower; `candidates`, the list
    passages of a distillation term, arrives as a keyword). params: what the replay differentiates
    (the trainable parameters). The scalar's value equals `loss_fn` on the whole batch, and after
    `.backward()` the parameter gradients equal the plain step's (with dropout, since each chunk
    replays its random state).
    """
    size = check_chunk_size(chunk_size)
    embedded = {k: embed_in_chunks(embed, batch[k], size) for k in towers}
    leaves = {k: emb.detach().requires_grad_() for k, (emb, _) in embedded.items()}  # (B, D) each
    with torch.enable_grad():
        others = {k: v for k, v in leaves.items() if k not in TRIPLET}
        loss = loss_fn(leaves["query"], leaves["positive"], leaves.get("negative"), batch, **others)
        grads = torch.autograd.grad(loss, list(leaves.values()))  # collective under DDP: every rank runs it
    chunks = [c for k in towers for c in embedded[k][1]]  # replay order: the towers' chunks, tower by tower
    chunk_grads = [g for grad in grads for g in grad.split(size)]  # (c, D) each, same order
    anchor = torch.zeros((), device=loss.device, requires_grad=True)  # gives the surrogate a backward
    replay = _Replay(embed, [p for p in params if p.requires_grad], chunks, chunk_grads)
    return _SurrogateLoss.apply(loss.detach(), anchor, replay), {k: v.detach() for k, v in leaves.items()}
