"""contrastive_loss against a naive per-row loop of Eq. 3, values and gradients."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from gecko_lightning.losses import contrastive_loss, matryoshka_loss


def naive_eq3(q, pos, neg, temperature, same_tower, hard_negatives, pos_ids):
    rows = naive_rows(q, pos, neg, temperature, same_tower, hard_negatives, pos_ids)
    return sum(rows) / len(rows)


def naive_rows(q, pos, neg, temperature, same_tower, hard_negatives, pos_ids):
    """Eq. 3 written term by term with Python loops, one loss per row; no shared code with the implementation."""
    b = len(q)
    rows = []
    for i in range(b):
        sim = lambda a, c: sum(x * y for x, y in zip(a, c)) / temperature  # noqa: E731
        num = math.exp(sim(q[i], pos[i]))
        den = 0.0
        for j in range(b):
            if j != i and pos_ids is not None and pos_ids[j] == pos_ids[i]:
                continue  # a duplicate of row i's positive is not a negative
            den += math.exp(sim(q[i], pos[j]))
        if neg is not None and hard_negatives == "own":
            den += math.exp(sim(q[i], neg[i]))
        if neg is not None and hard_negatives == "all":
            den += sum(math.exp(sim(q[i], neg[j])) for j in range(b))
        if same_tower:
            den += sum(math.exp(sim(q[i], q[j])) for j in range(b) if j != i)
        rows.append(-math.log(num / den))
    return rows


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize(
    "hard_negatives,same_tower,with_ids,temperature",
    list(itertools.product(["own", "all", "none"], [True, False], [False, True], [0.05, 0.7])),
)
def test_loss_matches_naive_eq3(hard_negatives, same_tower, with_ids, temperature):
    q, pos, neg = unit(6, 5, seed=1), unit(6, 5, seed=2), unit(6, 5, seed=3)
    pos_ids = torch.tensor([3, 1, 3, 2, 1, 7]) if with_ids else None
    got = contrastive_loss(
        q, pos, neg, temperature=temperature, same_tower=same_tower, hard_negatives=hard_negatives, pos_ids=pos_ids
    )
    want = naive_eq3(q.tolist(), pos.tolist(), neg.tolist(), temperature, same_tower, hard_negatives,
                     None if pos_ids is None else pos_ids.tolist())
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_gradient_matches_reference():
    """Autograd through the implementation equals autograd through a dense torch transcription of Eq. 3."""
    q, pos, neg = (unit(5, 4, seed=s).requires_grad_() for s in (4, 5, 6))
    contrastive_loss(q, pos, neg, temperature=0.1).backward()
    got = [t.grad.clone() for t in (q, pos, neg)]

    q2, pos2, neg2 = (t.detach().clone().requires_grad_() for t in (q, pos, neg))
    losses = []
    for i in range(5):
        terms = [q2[i] @ pos2[j] for j in range(5)] + [q2[i] @ neg2[i]] + [q2[i] @ q2[j] for j in range(5) if j != i]
        logits = torch.stack(terms) / 0.1
        losses.append(-(logits[i] - torch.logsumexp(logits, 0)))
    torch.stack(losses).mean().backward()
    for g, t in zip(got, (q2, pos2, neg2)):
        torch.testing.assert_close(g, t.grad, rtol=1e-6, atol=1e-8)


def test_per_row_same_tower_switch():
    """A (B,) bool same_tower gives each row its own denominator: the mean of the two naive variants, row by row."""
    q, pos = unit(4, 3, seed=7), unit(4, 3, seed=8)
    mask = [True, False, True, False]
    got = contrastive_loss(q, pos, same_tower=torch.tensor(mask), hard_negatives="none")
    with_qq = naive_rows(q.tolist(), pos.tolist(), None, 0.05, True, "none", None)
    without = naive_rows(q.tolist(), pos.tolist(), None, 0.05, False, "none", None)
    want = sum(a if m else b for a, b, m in zip(with_qq, without, mask)) / 4
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_matryoshka_single_full_dim_equals_base():
    q, pos, neg = unit(6, 8, seed=9), unit(6, 8, seed=10), unit(6, 8, seed=11)
    base = contrastive_loss(q, pos, neg)
    assert matryoshka_loss(q, pos, neg, dims=[8]).item() == pytest.approx(base.item(), rel=1e-6)


def test_matryoshka_truncates_and_renormalises():
    q, pos, neg = unit(6, 8, seed=12), unit(6, 8, seed=13), unit(6, 8, seed=14)
    cut = lambda x: F.normalize(x[:, :3], dim=-1)  # noqa: E731
    want = 0.5 * contrastive_loss(q, pos, neg).item() + 2.0 * contrastive_loss(cut(q), cut(pos), cut(neg)).item()
    got = matryoshka_loss(q, pos, neg, dims=[8, 3], weights=[0.5, 2.0])
    assert got.item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(temperature=0.0), "temperature must be > 0, got 0.0"),
        (dict(temperature=-1), "temperature must be > 0, got -1"),
        (dict(hard_negatives="every"), "hard_negatives must be one of ('own', 'all', 'none'), got 'every'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    q = unit(3, 4)
    with pytest.raises(ValueError) as e:
        contrastive_loss(q, q, q, **kwargs)
    assert message in str(e.value)


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"q \(3, 4\) and pos \(2, 4\)"):
        contrastive_loss(unit(3, 4), unit(2, 4))
    with pytest.raises(ValueError, match=r"neg must have the shape of q \(3, 4\), got \(3, 5\)"):
        contrastive_loss(unit(3, 4), unit(3, 4), unit(3, 5))
    with pytest.raises(ValueError, match=r"pos_ids must be shape \(3,\)"):
        contrastive_loss(unit(3, 4), unit(3, 4), pos_ids=torch.tensor([1, 2]))


def test_matryoshka_dim_out_of_range_names_both_numbers():
    q = unit(3, 4)
    with pytest.raises(ValueError, match="matryoshka dim 16 is out of range for embeddings of dimension 4"):
        matryoshka_loss(q, q, dims=[4, 16])
