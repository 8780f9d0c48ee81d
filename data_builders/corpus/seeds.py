"""Seed sampling, passage truncation, and the balanced block ranges that shards and index slices cut."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any


def truncate_corpus(rows: list[dict[str, Any]], budget: int, truncate: Callable[[str, int], tuple[str, bool]]) -> int:
    """Cut every passage text to `budget` tokens in place; returns how many were cut."""
    cut = 0
    for row in rows:
        row["text"], was_cut = truncate(row["text"], budget)
        cut += was_cut
    return cut


def sample_seeds(rows: list[dict[str, Any]], num_seeds: int | None, seed: int) -> list[str]:
    """Seed passage ids: all of them, or a seeded sample kept in corpus order."""
    ids = [r["id"] for r in rows]
    if num_seeds is None or num_seeds >= len(ids):
        return ids
    chosen = set(random.Random(seed).sample(ids, num_seeds))
    return [i for i in ids if i in chosen]


def block_range(total: int, unit: int, index: int, count: int) -> tuple[int, int]:
    """[lo, hi) of part `index` of `count` of `total` items cut only at multiples of `unit`, balanced to one unit."""
    blocks = -(-total // unit)
    return min(total, index * blocks // count * unit), min(total, (index + 1) * blocks // count * unit)
