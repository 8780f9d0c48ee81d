"""GradCache: the cached step gives the plain step's loss and parameter gradients.

The reference embeds the same chunks in the same order *with* a graph, so it draws the same
dropout masks as the cache's first pass; only a correct RNG restore in the replay reproduces them.
"""

import pytest
import torch

from gecko_lightning.grad_cache import check_chunk_size, check_strategy
from gecko_lightning.module import GeckoModule

B = 7


pytestmark = pytest.mark.usefixtures("one_thread")


def make_module(tiny_bert, chunk, **kw):
    torch.manual_seed(0)
    m = GeckoModule(str(tiny_bert), random_init=True, matryoshka_dims=[32, 16], matryoshka_weights=[1.0, 0.5],
                    grad_cache_chunk_size=chunk, **kw).double()
    m.train()  # dropout on: hidden 0.1, attention 0.1
    return m


def make_batch(module, b=B):
    tok = module.encoder.tokenize
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    text = lambda i, n: " ".join(words[(i + j) % len(words)] for j in range(n))  # noqa: E731  ragged lengths
    return {
        "query": dict(tok([f"task: search | query: {text(i, 2 + i % 4)}" for i in range(b)])),
        "positive": dict(tok([f"title: none | text: {text(i, 5 + i)}" for i in range(b)])),
        "negative": dict(tok([f"title: none | text: {text(i + 3, 4 + 2 * i % 5)}" for i in range(b)])),
        "pos_ids": torch.tensor([0, 1, 2, 1, 3, 4, 0])[:b],  # rows 1/3 and 0/6 share a positive
        "same_tower": torch.tensor([True, False, True, True, False, True, True])[:b],
    }


def chunked_with_graph(module, features, size):
    """Independent reference: the same chunks, in the same order, embedded with a graph."""
    n = features["input_ids"].shape[0]
    return torch.cat([module.embed({k: v[s : s + size] for k, v in features.items()}) for s in range(0, n, size)])


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("chunk", [3, 1, 16])
def test_cached_gradients_match_plain_with_dropout(tiny_bert, chunk):
    module = make_module(tiny_bert, chunk)
    batch = make_batch(module)
    torch.manual_seed(123)
    q, p, n = (chunked_with_graph(module, batch[k], chunk) for k in ("query", "positive", "negative"))
    want_loss = module.compute_loss(q, p, n, batch)
    (0.25 * want_loss).backward()  # 0.25: accumulate_grad_batches / AMP scaling reach the replay
    want, after_plain = grads(module), torch.get_rng_state()
    module.zero_grad(set_to_none=True)

    torch.manual_seed(123)
    got_loss = module.grad_cache_step(batch)
    (0.25 * got_loss).backward()
    got = grads(module)
    assert torch.equal(torch.get_rng_state(), after_plain)  # the replay leaves the caller's RNG stream alone
    assert got_loss.item() == pytest.approx(want_loss.item(), rel=1e-12)
    assert want.keys() == got.keys() and len(got) > 10
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-8, msg=f"grad differs for {name}")


def test_dropout_is_live_so_the_parity_test_can_fail(tiny_bert):
    module = make_module(tiny_bert, 3)
    feats = make_batch(module)["query"]
    assert not torch.allclose(module.embed(feats), module.embed(feats))


def test_plain_step_equals_one_chunk_per_tower(tiny_bert):
    """With chunks larger than the batch, the cache equals GeckoModule's own plain training step."""
    plain, cached = make_module(tiny_bert, None), make_module(tiny_bert, 64)
    batch = make_batch(plain)
    for m in (plain, cached):
        torch.manual_seed(7)
        m.training_step(batch, 0).backward()
    for (name, a), b in zip(plain.named_parameters(), cached.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-8, msg=name)


def test_each_parameter_accumulates_once_per_step(tiny_bert):
    """DDP's reducer and DeepSpeed ZeRO reduce a gradient when it lands in .grad; a second
    landing in one step is what breaks peers' caches ("Gradient computed twice")."""
    module = make_module(tiny_bert, 2)
    counts = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda p, name=name: counts.__setitem__(name, counts.get(name, 0) + 1))
    module.grad_cache_step(make_batch(module)).backward()  # 4 chunks per tower, 12 in all
    assert counts and set(counts.values()) == {1}
    assert len(counts) == sum(p.grad is not None for p in module.parameters())


def test_second_backward_is_refused(tiny_bert):
    module = make_module(tiny_bert, 4)
    loss = module.grad_cache_step(make_batch(module))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already backpropagated once"):
        loss.backward()


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "32"])
def test_bad_chunk_size_is_named(bad):
    with pytest.raises(ValueError, match=f"grad_cache_chunk_size must be a positive number of texts per chunk, got {bad!r}"):
        check_chunk_size(bad)


def test_training_step_dispatches_and_logs_the_true_loss(tiny_bert):
    module = make_module(tiny_bert, 3)
    batch = make_batch(module)
    torch.manual_seed(5)
    loss = module.training_step(batch, 0)
    assert loss.requires_grad and loss.grad_fn.__class__.__name__ == "_SurrogateLossBackward"
    module.eval()  # same value without dropout on both sides
    with torch.no_grad():
        q, p, n = (module.embed(batch[k]) for k in ("query", "positive", "negative"))
        want = module.compute_loss(q, p, n, batch)
    assert module.grad_cache_step(batch).item() == pytest.approx(want.item(), rel=1e-10)


def test_grad_cache_with_activation_checkpointing(tiny_bert):
    """model.gradient_checkpointing recomputes inside the replay; the gradients do not change."""
    plain, ckpt = make_module(tiny_bert, 3), make_module(tiny_bert, 3, gradient_checkpointing=True)
    batch = make_batch(plain)
    for m in (plain, ckpt):
        torch.manual_seed(11)
        m.grad_cache_step(batch).backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-8, msg=name)


def test_ddp_find_unused_parameters_is_refused(tiny_bert):
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy

    module = make_module(tiny_bert, 3)
    module._trainer = SimpleNamespace(strategy=DDPStrategy(find_unused_parameters=True))
    with pytest.raises(ValueError, match=r"does not work with DDP's find_unused_parameters=True \(strategy DDPStrategy\); use --trainer.strategy=ddp"):
        module.grad_cache_step(make_batch(module))
    module._trainer = SimpleNamespace(strategy=DDPStrategy())
    check_strategy(module._trainer.strategy)  # plain DDP is fine (tests/test_ddp_cpu.py trains with it)


@pytest.mark.parametrize(
    "kwargs,drop_negative",
    [(dict(hard_negatives="all"), False), (dict(hard_negatives="none"), False), (dict(same_tower=False), False), ({}, True)],
    ids=["all-negatives", "no-negatives", "no-same-tower", "batch-without-negative"],
)
def test_loss_variants_match_plain(tiny_bert, kwargs, drop_negative):
    module = make_module(tiny_bert, 3, **kwargs)
    batch = make_batch(module)
    if drop_negative:
        del batch["negative"]
    towers = ["query", "positive"] + (["negative"] if "negative" in batch and module.hparams.hard_negatives != "none" else [])
    torch.manual_seed(9)
    embs = {k: chunked_with_graph(module, batch[k], 3) for k in towers}  # same order as the cache: same dropout draws
    module.compute_loss(embs["query"], embs["positive"], embs.get("negative"), batch).backward()
    want = grads(module)
    module.zero_grad(set_to_none=True)
    torch.manual_seed(9)
    module.grad_cache_step(batch).backward()
    got = grads(module)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-8, msg=name)


def test_cache_needs_only_an_embed_function_and_a_loss():
    """No GeckoModule: a bag-of-embeddings encoder with dropout and a plain InfoNCE loss, chunks of 2."""
    from torch import nn
    from torch.nn import functional as F

    from gecko_lightning.grad_cache import grad_cache_step

    torch.manual_seed(0)
    table, drop = nn.Embedding(30, 8, dtype=torch.float64), nn.Dropout(0.2)

    def embed(features):
        mask = features["attention_mask"].unsqueeze(-1).to(torch.float64)  # (c, T, 1)
        return F.normalize(drop(table(features["input_ids"])).mul(mask).sum(1), dim=-1)  # (c, 8)

    def loss_fn(q, pos, neg, batch):
        return F.cross_entropy(q @ pos.T / 0.05, torch.arange(q.shape[0]))

    ids = torch.randint(0, 30, (2, 5, 6))
    batch = {k: {"input_ids": ids[i], "attention_mask": torch.ones(5, 6, dtype=torch.long)} for i, k in enumerate(["query", "positive"])}
    torch.manual_seed(1)
    q, p = (torch.cat([embed({f: t[s : s + 2] for f, t in batch[k].items()}) for s in range(0, 5, 2)]) for k in ("query", "positive"))
    loss_fn(q, p, None, batch).backward()
    want, table.weight.grad = table.weight.grad.clone(), None
    torch.manual_seed(1)
    loss, emb = grad_cache_step(embed, loss_fn, table.parameters(), batch, ["query", "positive"], 2)
    loss.backward()
    torch.testing.assert_close(emb["query"], q.detach())
    torch.testing.assert_close(table.weight.grad, want, rtol=1e-10, atol=1e-12)
