"""The distillation term: values and gradients against naive per-row loops, the weight-0 identity with
Eq. 3, Matryoshka prefixes, GradCache parity, and two gloo processes against one."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from gecko_lightning.losses import distill_loss, matryoshka_distill_loss
from gecko_lightning.module import GeckoModule

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_rows(q, cands, index, teacher, kind, tt, ts):
    """One loss per row with lists of >= 2 candidates, from Python floats; shares nothing with losses.py."""
    out = []
    for i, row in enumerate(index):
        slots = [k for k, j in enumerate(row) if j >= 0]
        if len(slots) < 2:
            continue
        s = [sum(a * b for a, b in zip(q[i], cands[row[k]])) / ts for k in slots]
        t = [teacher[i][k] / tt for k in slots]
        if kind == "kl":
            zs, zt = sum(math.exp(v) for v in s), sum(math.exp(v) for v in t)
            out.append(sum(math.exp(b) / zt * (math.log(math.exp(b) / zt) - math.log(math.exp(a) / zs)) for a, b in zip(s, t)))
        else:
            out.append(sum(((s[0] - s[k]) - (t[0] - t[k])) ** 2 for k in range(1, len(slots))) / (len(slots) - 1))
    return out


def example(seed=0, b=4, m=9, d=5):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    c = F.normalize(torch.randn(m, d, generator=g, dtype=torch.float64), dim=-1)
    index = torch.tensor([[0, 1, 2, 3], [4, 1, -1, -1], [5, -1, -1, -1], [6, 7, 8, 2]])[:b]  # ragged; row 2 has one
    teacher = torch.randn(b, 4, generator=g, dtype=torch.float64) * 2 - 3  # log-likelihood-like
    return q, c, index, teacher


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
@pytest.mark.parametrize("tt,ts", [(1.0, 0.05), (0.3, 0.1)])
def test_value_matches_naive(kind, tt, ts):
    q, c, index, teacher = example()
    got = distill_loss(q, c, index, teacher, kind=kind, teacher_temperature=tt, student_temperature=ts)
    rows = naive_rows(q.tolist(), c.tolist(), index.tolist(), teacher.tolist(), kind, tt, ts)
    assert len(rows) == 3  # the one-candidate row adds nothing
    assert got.item() == pytest.approx(sum(rows) / len(rows), rel=1e-9)


def test_kl_gradient_is_student_minus_teacher():
    """By hand: d KL / d s_k = (softmax(s)_k - softmax(t)_k) / T_s per row, divided by the rows with a list."""
    q, c, index, teacher = example()
    q.requires_grad_()
    ts, tt = 0.1, 0.5
    distill_loss(q, c, index, teacher, kind="kl", teacher_temperature=tt, student_temperature=ts).backward()
    want = torch.zeros_like(q)
    for i, row in enumerate(index.tolist()):
        slots = [k for k, j in enumerate(row) if j >= 0]
        if len(slots) < 2:
            continue
        s = torch.stack([q[i].detach() @ c[row[k]] for k in slots]) / ts
        t = teacher[i, slots] / tt
        coef = (s.softmax(0) - t.softmax(0)) / ts / 3
        want[i] = sum(w * c[row[k]] for w, k in zip(coef, slots))
    torch.testing.assert_close(q.grad, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
def test_gradient_matches_naive_autograd(kind):
    q, c, index, teacher = example(seed=3)
    q1, c1 = q.clone().requires_grad_(), c.clone().requires_grad_()
    distill_loss(q1, c1, index, teacher, kind=kind, teacher_temperature=0.7, student_temperature=0.2).backward()
    q2, c2 = q.clone().requires_grad_(), c.clone().requires_grad_()
    losses = []
    for i, row in enumerate(index.tolist()):  # the same loss, one row and one slot at a time
        slots = [k for k, j in enumerate(row) if j >= 0]
        if len(slots) < 2:
            continue
        s = torch.stack([q2[i] @ c2[row[k]] for k in slots]) / 0.2
        t = teacher[i, slots] / 0.7
        if kind == "kl":
            losses.append((t.softmax(0) * (t.log_softmax(0) - s.log_softmax(0))).sum())
        else:
            losses.append((((s[0] - s[1:]) - (t[0] - t[1:])) ** 2).mean())
    (sum(losses) / len(losses)).backward()
    torch.testing.assert_close(q1.grad, q2.grad)
    torch.testing.assert_close(c1.grad, c2.grad)


def test_kl_is_zero_when_the_student_matches_the_teacher():
    q, c, index, _ = example()
    student = torch.einsum("bd,bkd->bk", q, c[index.clamp(min=0)])
    teacher = student * (0.3 / 0.05)  # teacher/T_t == student/T_s
    assert distill_loss(q, c, index, teacher, teacher_temperature=0.3, student_temperature=0.05).item() == pytest.approx(0, abs=1e-12)


def test_matryoshka_distill_sums_renormalised_prefixes():
    q, c, index, teacher = example()
    got = matryoshka_distill_loss(q, c, index, teacher, dims=[5, 3], weights=[1.0, 0.5], kind="kl")
    want = distill_loss(q, c, index, teacher) + 0.5 * distill_loss(F.normalize(q[:, :3], dim=-1), F.normalize(c[:, :3], dim=-1), index, teacher)
    torch.testing.assert_close(got, want)


def test_bad_arguments_are_named():
    q, c, index, teacher = example()
    with pytest.raises(ValueError, match="'listwise'"):
        distill_loss(q, c, index, teacher, kind="listwise")
    with pytest.raises(ValueError, match="must both be"):
        distill_loss(q, c, index[:, :2], teacher)


# ---- the module: weight 0 is Eq. 3 exactly; GradCache gives the plain gradients ---------------------
def make_module(tiny_bert, **kw):
    torch.manual_seed(0)
    m = GeckoModule(str(tiny_bert), random_init=True, matryoshka_dims=[32, 16], **kw).double()
    m.eval()  # no dropout: two modules must see the same forward
    return m


def make_batch(module, b=5):
    assert b == 5, "list_index below is written for 5 rows"
    tok = module.encoder.tokenize
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    text = lambda i, n: " ".join(words[(i + j) % len(words)] for j in range(n))  # noqa: E731
    return {
        "query": dict(tok([f"task: search | query: {text(i, 2 + i % 3)}" for i in range(b)])),
        "positive": dict(tok([f"title: none | text: {text(i, 5 + i)}" for i in range(b)])),
        "negative": dict(tok([f"title: none | text: {text(i + 3, 4 + i)}" for i in range(b)])),
        "candidates": dict(tok([f"title: none | text: {text(i * 2, 3 + i)}" for i in range(7)])),
        # rows of [positive (b), negative (b), candidates (7)]: a list starts with its own positive, as a build's does
        "list_index": torch.tensor([[0, 11, 12], [1, 14, -1], [2, 16, 5], [-1, -1, -1], [4, 10, 8]]),  # b = 5
        "list_scores": torch.tensor([[-1.0, -2.5, -1.5], [-0.5, -3.0, 0], [-2.0, -1.0, -4.0], [0, 0, 0], [-1.2, -1.1, 0]]),
        "pos_ids": torch.arange(b),
        "same_tower": torch.ones(b, dtype=torch.bool),
    }


def unshared(batch):
    """The same batch with every list passage in `candidates` (the pool's positive and negative rows
    tokenized again): what the collator sent before it pointed lists at the batch's own rows."""
    b = batch["positive"]["input_ids"].shape[0]
    parts = [batch["positive"], batch["negative"], batch["candidates"]]
    width = max(p["input_ids"].shape[1] for p in parts)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731  (0 = [PAD] and mask 0)
    pool = {k: torch.cat([pad(p[k]) for p in parts]) for k in ("input_ids", "attention_mask")}  # (2b + M, T)
    index = torch.where(batch["list_index"] < 0, -1, batch["list_index"] + 2 * b)  # the same texts, as candidates
    return {**batch, "candidates": pool, "list_index": index}


def loss_and_grads(module, batch):
    module.zero_grad(set_to_none=True)
    loss = module.training_step(batch, 0) if not module.hparams.grad_cache_chunk_size else module.grad_cache_step(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_weight_zero_reproduces_eq3_bit_for_bit(tiny_bert):
    plain, with_term = make_module(tiny_bert), make_module(tiny_bert, distill="kl", distill_weight=0.0)
    batch = make_batch(plain)
    loss0, g0 = loss_and_grads(plain, batch)
    loss1, g1 = loss_and_grads(with_term, batch)
    assert "distill" in with_term._terms and with_term._terms["distill"] > 0  # computed, logged, not trained on
    assert torch.equal(loss0, loss1)
    assert g0.keys() == g1.keys() and all(torch.equal(g0[k], g1[k]) for k in g0)


def test_distill_changes_the_gradient(tiny_bert):
    """The counterpart of the weight-0 test: with weight 1 the term reaches the gradient."""
    plain, with_term = make_module(tiny_bert), make_module(tiny_bert, distill="kl", distill_weight=1.0)
    batch = make_batch(plain)
    _, g0 = loss_and_grads(plain, batch)
    loss1, g1 = loss_and_grads(with_term, batch)
    assert loss1 == pytest.approx(with_term._terms["contrastive"] + with_term._terms["distill"])
    assert any(not torch.allclose(g0[k], g1[k]) for k in g0)


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
def test_list_rows_shared_with_the_triplet_match_embedding_them_again(tiny_bert, kind):
    """A list passage that is a positive or a negative of the batch reuses that row's embedding; the
    reference embeds every list passage on its own, as `candidates` rows, and indexes those."""
    shared_m = make_module(tiny_bert, distill=kind, hard_negatives="none")  # lists still need the negatives
    again_m = make_module(tiny_bert, distill=kind, hard_negatives="none")
    batch = make_batch(shared_m)
    again = unshared(batch)
    assert shared_m._towers(batch) == ["query", "positive", "negative", "candidates"]
    loss0, g0 = loss_and_grads(shared_m, batch)
    loss1, g1 = loss_and_grads(again_m, again)
    torch.testing.assert_close(loss0, loss1)
    torch.testing.assert_close(shared_m._terms["distill"], again_m._terms["distill"])
    assert g0.keys() == g1.keys()
    for k in g0:
        torch.testing.assert_close(g0[k], g1[k], rtol=1e-6, atol=1e-9, msg=k)


def test_a_batch_whose_lists_are_all_shared_embeds_no_candidates(tiny_bert):
    module = make_module(tiny_bert, distill="kl")
    batch = make_batch(module)
    del batch["candidates"]
    batch["list_index"] = torch.tensor([[0, 5, 6], [1, 0, -1], [2, 7, 3], [-1, -1, -1], [4, 9, -1]])
    assert module._towers(batch) == ["query", "positive", "negative"]
    loss, _ = loss_and_grads(module, batch)
    assert torch.isfinite(loss) and module._terms["distill"] > 0


@pytest.mark.parametrize("kind", ["kl", "margin_mse"])
def test_grad_cache_matches_the_plain_step(tiny_bert, kind):
    plain = make_module(tiny_bert, distill=kind, teacher_temperature=0.5)
    cached = make_module(tiny_bert, distill=kind, teacher_temperature=0.5, grad_cache_chunk_size=2)
    batch = make_batch(plain)
    loss0, g0 = loss_and_grads(plain, batch)
    loss1, g1 = loss_and_grads(cached, batch)
    torch.testing.assert_close(loss1, loss0)
    assert g0.keys() == g1.keys()
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-6, atol=1e-9, msg=k)


def test_bad_distill_settings_are_one_line(tiny_bert):
    from gecko_lightning.errors import UserError

    with pytest.raises(UserError, match="model.distill must be one of"):
        GeckoModule(str(tiny_bert), random_init=True, distill="soft")
    with pytest.raises(UserError, match="teacher_temperature"):
        GeckoModule(str(tiny_bert), random_init=True, distill="kl", teacher_temperature=0)


# ---- two gloo processes: rows with lists are counted over the global batch ---------------------------
def _global():
    q, c, index, teacher = example(seed=5, b=4)
    index = torch.tensor([[0, 1, 2, 3], [4, 1, -1, -1], [5, -1, -1, -1], [6, 7, 8, 2]])  # rank 1 has 1 list row
    w = torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return q, c, index, teacher, w


def _grad(q, c, index, teacher, w, kind):
    w = w.clone().requires_grad_()
    loss = distill_loss(F.normalize(q @ w, dim=-1), F.normalize(c @ w, dim=-1), index, teacher, kind=kind, teacher_temperature=0.5)
    loss.backward()
    return w.grad


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        q, c, index, teacher, w = _global()
        rows = slice(2 * rank, 2 * rank + 2)
        got = []
        for kind in ("kl", "margin_mse"):
            g = _grad(q[rows], c, index[rows], teacher[rows], w, kind)
            dist.all_reduce(g)
            got.append(g / 2)  # DDP averages over ranks
        out[rank] = got
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.start_processes(_worker, args=(port, out), nprocs=2, start_method="fork")
    q, c, index, teacher, w = _global()
    for got, kind in zip(out[0], ("kl", "margin_mse")):
        torch.testing.assert_close(got, _grad(q, c, index, teacher, w, kind))
