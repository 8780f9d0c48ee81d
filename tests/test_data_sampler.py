"""The epoch plan: disjoint rank shards, homogeneous global batches, sampling shares, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from gecko_lightning.data.sampler import GlobalBatchSampler, quotas, source_weights

SIZES = [100, 60, 40]  # global indices: [0, 100) source 0, [100, 160) source 1, [160, 200) source 2


def source_of(i: int) -> int:
    return 0 if i < 100 else 1 if i < 160 else 2


def rank_batches(world: int, **kw) -> list[list[list[int]]]:
    out = []
    for rank in range(world):
        out.append(list(GlobalBatchSampler(SIZES, batch_size=4, rank=rank, world_size=world, seed=7, **kw)))
    return out


def test_ranks_see_disjoint_full_batches_covering_one_pass():
    per_rank = rank_batches(2)
    assert len(per_rank[0]) == len(per_rank[1]) == 200 // 8  # same step count on every rank
    seen = [i for batches in per_rank for b in batches for i in b]
    assert all(len(b) == 4 for batches in per_rank for b in batches)
    assert sorted(seen) == list(range(200))  # proportional + 200 divisible by 8: each record exactly once


def test_homogeneous_batches_share_one_source_across_all_ranks():
    per_rank = rank_batches(2, homogeneous=True)
    for step in range(len(per_rank[0])):
        sources = {source_of(i) for rank in per_rank for i in rank[step]}
        assert len(sources) == 1, f"step {step} mixes sources {sources}"
    # one pass in whole global batches: floor(100/8) + floor(60/8) + floor(40/8) steps
    assert len(per_rank[0]) == 12 + 7 + 5
    steps_per_source = Counter(source_of(per_rank[0][k][0]) for k in range(len(per_rank[0])))
    assert steps_per_source == {0: 12, 1: 7, 2: 5}
    seen = [i for rank in per_rank for b in rank for i in b]
    assert len(seen) == len(set(seen))  # no record twice in the epoch


def test_same_seed_and_epoch_give_the_same_plan_and_epochs_differ():
    a = GlobalBatchSampler(SIZES, 4, seed=3)
    b = GlobalBatchSampler(SIZES, 4, seed=3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(GlobalBatchSampler(SIZES, 4, seed=4)) != list(a)


def test_weights_by_sampling_mode_against_hand_values():
    np.testing.assert_allclose(source_weights(SIZES, "proportional"), [0.5, 0.3, 0.2])
    np.testing.assert_allclose(source_weights(SIZES, "uniform"), [1 / 3] * 3)
    t = np.array(SIZES, dtype=float) ** 0.5  # T = 2: size ** (1/2)
    np.testing.assert_allclose(source_weights(SIZES, "temperature", 2.0), t / t.sum())
    with pytest.raises(ValueError, match="unknown sampling 'random'"):
        source_weights(SIZES, "random")


def test_quotas_round_by_largest_remainder():
    assert quotas(np.array([1 / 3, 1 / 3, 1 / 3]), 10).tolist() == [4, 3, 3]
    assert quotas(np.array([0.5, 0.3, 0.2]), 7).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4 -> +1 to the .5


def test_uniform_sampling_upsamples_small_sources_without_duplicates_in_a_batch():
    s = GlobalBatchSampler(SIZES, 8, weights=source_weights(SIZES, "uniform"), homogeneous=True)
    batches = list(s)
    counts = Counter(source_of(b[0]) for b in batches)
    assert counts == {0: 8, 1: 8, 2: 8}  # 24 steps split evenly; source 2 (5 batches a pass) is cycled
    assert all(len(set(b)) == len(b) for b in batches)


def test_length_grouping_puts_similar_lengths_together():
    lengths = np.arange(200)[::-1].copy()
    s = GlobalBatchSampler(SIZES, 4, lengths=lengths, group_size=5)
    spans = [lengths[b].max() - lengths[b].min() for b in s]
    plain = [lengths[b].max() - lengths[b].min() for b in GlobalBatchSampler(SIZES, 4)]
    assert np.mean(spans) < np.mean(plain) / 4
    assert sorted(i for b in s for i in b) == list(range(200))


def test_resume_skip_continues_with_the_next_batch_once():
    full = list(GlobalBatchSampler(SIZES, 4, seed=1))
    s = GlobalBatchSampler(SIZES, 4, seed=1)
    s.skip = (0, 5)
    assert list(s) == full[5:]
    assert list(s) == full  # the skip applies to one epoch only
    assert len(s) == len(full)


def test_too_small_sources_are_named():
    with pytest.raises(ValueError, match=r"sources \['tiny'\] have fewer records than one global batch \(16"):
        GlobalBatchSampler([100, 10], 8, homogeneous=True, world_size=2, names=["big", "tiny"])
    with pytest.raises(ValueError, match="make no full global batch of 64"):
        GlobalBatchSampler([10], 64)
