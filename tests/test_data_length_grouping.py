"""Length grouping (`group_by_length`): less padding, the same records, one source per batch,
an exact resume and one batch order on every rank."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gecko_lightning.data import FRetDataModule, GlobalBatchSampler, MixtureDataModule, SourceConfig
from gecko_lightning.data.sampler import source_weights
from gecko_lightning.data.schema import write_records
from gecko_lightning.errors import UserError

TOKENIZER = str(Path(__file__).resolve().parents[1] / "configs" / "assets" / "tiny-bert")
SIZES = [96, 64, 40]  # global indices: [0, 96) source 0, [96, 160) source 1, [160, 200) source 2
LENGTHS = np.random.default_rng(0).permutation(200) + 1  # distinct lengths: copies of a record sort side by side


def source_of(i: int) -> int:
    return 0 if i < 96 else 1 if i < 160 else 2


def sampler(group: int, rank: int = 0, world: int = 1, batch: int = 4, **kw) -> GlobalBatchSampler:
    return GlobalBatchSampler(SIZES, batch, seed=5, rank=rank, world_size=world, lengths=LENGTHS, group_size=group, **kw)


def epoch_of(s: GlobalBatchSampler, epoch: int = 0) -> list[list[int]]:
    s.set_epoch(epoch)
    return list(s)


# ---- the plan ----------------------------------------------------------------------------------


def test_grouped_batches_are_the_sorted_pools_of_the_ungrouped_stream():
    # mixed sources, one rank: the ungrouped plan, read in order, is the shuffled stream itself
    stream = [i for b in epoch_of(sampler(0, batch=8)) for i in b]
    expected = set()
    for start in range(0, len(stream), 8 * 5):  # naive: sort each pool of 5 batches, cut it into batches
        pool = sorted(stream[start : start + 40], key=lambda i: -LENGTHS[i])
        expected |= {tuple(pool[k : k + 8]) for k in range(0, len(pool), 8)}
    grouped = epoch_of(sampler(5, batch=8))
    assert {tuple(b) for b in grouped} == expected
    assert grouped != sorted(grouped, key=lambda b: -LENGTHS[b[0]])  # the batch order is shuffled


@pytest.mark.parametrize("homogeneous", [False, True])
@pytest.mark.parametrize("sampling", ["proportional", "uniform"])
def test_every_record_is_drawn_as_often_as_in_the_ungrouped_epoch(homogeneous, sampling):
    weights = source_weights(SIZES, sampling)  # uniform: 67 + 67 + 66 rows, whole global batches
    for epoch in (0, 1):
        counts = []
        for group in (0, 16):
            ranks = [sampler(group, r, 2, weights=weights, homogeneous=homogeneous) for r in (0, 1)]
            counts.append(Counter(i for s in ranks for b in epoch_of(s, epoch) for i in b))
        assert counts[1] == counts[0]
        if sampling == "proportional":
            assert set(counts[1]) == set(range(200)) and set(counts[1].values()) == {1}


def test_an_upsampled_source_never_repeats_a_record_in_a_batch():
    # source 2 (40 records, 5 batches of 8) is drawn for 8 batches: two permutations; a pool of 16
    # batches would hold both if pools crossed them; equal lengths would then share a batch
    s = sampler(16, batch=8, weights=source_weights(SIZES, "uniform"), homogeneous=True)
    batches = epoch_of(s)
    assert Counter(source_of(b[0]) for b in batches) == {0: 9, 1: 8, 2: 8}  # 25 steps split evenly
    assert all(len(set(b)) == len(b) for b in batches)


def test_grouped_global_batches_stay_on_one_source_on_every_rank():
    ranks = [epoch_of(sampler(4, r, 2, homogeneous=True)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 96 // 8 + 64 // 8 + 40 // 8
    for step, (a, b) in enumerate(zip(*ranks)):
        assert len({source_of(i) for i in a + b}) == 1, f"step {step} mixes sources"


@pytest.mark.parametrize("homogeneous", [False, True])
def test_two_ranks_take_complementary_slices_of_one_process_plan(homogeneous):
    one = epoch_of(sampler(4, batch=8, homogeneous=homogeneous), epoch=1)
    ranks = [epoch_of(sampler(4, r, 2, homogeneous=homogeneous), epoch=1) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == one  # same global batch, same order, rank r takes slice r
    assert all(not set(a) & set(b) for a, b in zip(*ranks))


@pytest.mark.parametrize("homogeneous", [False, True])
def test_resume_at_any_step_continues_the_uninterrupted_order(homogeneous):
    for epoch in (0, 1):
        for rank in (0, 1):
            full = epoch_of(sampler(4, rank, 2, homogeneous=homogeneous), epoch)
            for step in (0, 1, 7, len(full) - 1, len(full)):
                resumed = sampler(4, rank, 2, homogeneous=homogeneous)  # a fresh process
                resumed.skip = (epoch, step)
                assert epoch_of(resumed, epoch) == full[step:]


# ---- the DataModules ---------------------------------------------------------------------------


def mixed_lengths(path: Path, n: int = 128) -> str:
    """Records with queries of 1-8 and passages of 1-60 words: passage lengths vary by a factor of 60."""
    rng = random.Random(0)
    words = "the river runs past an old mill where people meet to trade grain and news".split()

    def text(hi: int) -> str:
        return " ".join(rng.choices(words, k=rng.randint(1, hi)))

    rows = [{"id": f"m{i}", "source": "mixed", "task": "t", "query": text(8), "positive": {"text": text(60)},
             "negative": {"text": text(60)}} for i in range(n)]
    write_records(rows, path)
    return str(path)


def fret(path: str, group: int, **kw) -> FRetDataModule:
    dm = FRetDataModule(path, tokenizer=TOKENIZER, batch_size=4, query_max_length=32, doc_max_length=128,
                        group_by_length=group, **kw)
    dm.setup("fit")
    return dm


def naive_padding_ratio(dm: FRetDataModule, batches: list[list[str]]) -> float:
    """Padded positions / real tokens, from each text tokenized alone (B x longest, per side)."""
    example = {e.id: e for e in dm.train_dataset[list(range(len(dm.train_dataset)))]}
    padded = real = 0
    for ids in batches:
        for side, limit in (("query", 32), ("positive", 128), ("negative", 128)):
            texts = [getattr(example[i], side) for i in ids]
            lengths = [len(t) for t in dm.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]]
            padded, real = padded + len(ids) * max(lengths), real + sum(lengths)
    return padded / real


def test_grouping_lowers_the_padding_ratio_as_counted_naively(tmp_path):
    path = mixed_lengths(tmp_path / "mixed.jsonl")
    ratios = []
    for group in (0, 8):
        dm = fret(path, group)
        batches = list(dm.train_dataloader())
        sides = [b[k]["attention_mask"] for b in batches for k in ("query", "positive", "negative")]
        measured = sum(m.numel() for m in sides) / sum(int(m.sum()) for m in sides)
        assert measured == pytest.approx(naive_padding_ratio(dm, [b["ids"] for b in batches]))
        ratios.append(measured)
    assert ratios[1] < 0.93 * ratios[0], ratios  # 1.48 -> 1.30: the positive side; negatives stay random


@pytest.mark.parametrize("epoch,consumed", [(0, 1), (0, 19), (1, 6)])
def test_datamodule_state_round_trip_resumes_the_grouped_order(tmp_path, epoch, consumed):
    path = mixed_lengths(tmp_path / "mixed.jsonl")
    loader = fret(path, 4).train_dataloader()
    loader.sampler.set_epoch(epoch)
    full = [b["ids"] for b in loader]
    other = FRetDataModule(path, tokenizer=TOKENIZER, batch_size=4, query_max_length=32, doc_max_length=128,
                           group_by_length=4)
    other.load_state_dict({"epoch": epoch, "consumed": consumed, "seed": 0, "global_batch": 4, "group_by_length": 4})
    other.setup("fit")
    assert [b["ids"] for b in other.train_dataloader()] == full[consumed:]


def test_mixture_passes_lengths_only_when_grouping(tmp_path):
    path = mixed_lengths(tmp_path / "mixed.jsonl")
    sources = [SourceConfig(path, name="a"), SourceConfig(path, name="b")]
    on = MixtureDataModule(sources, tokenizer=TOKENIZER, batch_size=4, homogeneous_batches=True, group_by_length=4)
    off = MixtureDataModule(sources, tokenizer=TOKENIZER, batch_size=4, homogeneous_batches=True)
    for dm in (on, off):
        dm.setup("fit")
    assert on.train_sampler().grouping and not off.train_sampler().grouping
    for bad in (-1, 1):
        with pytest.raises(UserError, match=rf"group_by_length must be 0 \(off\) or a pool of k > 1 batches, got {bad}"):
            MixtureDataModule(sources, group_by_length=bad)


def test_resume_with_another_pool_size_warns(tmp_path):
    dm = FRetDataModule(mixed_lengths(tmp_path / "mixed.jsonl"), tokenizer=TOKENIZER, batch_size=4, group_by_length=8)
    dm.load_state_dict({"epoch": 0, "consumed": 3, "seed": 0, "global_batch": 4})  # saved before grouping existed
    dm.setup("fit")
    with pytest.warns(UserWarning, match="resuming with group_by_length 8 instead of 0: the epoch plan differs"):
        loader = dm.train_dataloader()
    assert len(loader.sampler.plan(0)) - 3 == len(list(loader.sampler))
