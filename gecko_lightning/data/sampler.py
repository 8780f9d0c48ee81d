"""The epoch plan: which records form each global batch, on every rank, for a seed and epoch.

Every rank computes the same plan of *global* batches (batch_size * world_size indices each)
and keeps its own contiguous slice, so:
  * ranks see disjoint data, and every global batch is full (the remainder is dropped: the
    loss all-gathers embeddings, and a short rank would hang the gather);
  * with `homogeneous=True` a global batch comes from one source on every rank, because the
    source of step k is part of the shared plan;
  * the plan depends only on (seed, epoch), so a resumed run can skip exactly the batches it
    already consumed (`resume`) and continue with the next unseen one.

Sampling modes set each source's share of the epoch (an epoch has as many batches as one pass
over all sources): `proportional` (to size: exactly one pass), `uniform` (equal per source) and
`temperature` (proportional to size ** (1 / T)). A source whose share exceeds its size is cycled
through fresh permutations; one that gets less contributes a random subset.

Length grouping (`group_size` k > 1, with `lengths`): each pool of k consecutive global batches of
the shuffled stream is sorted by length and cut into batches, and the batch order is shuffled. It
is a reordering inside the plan, so resume and rank slicing work unchanged. With `homogeneous=True`
a pool holds one source (and one of its permutations), so batches stay single-source and no record
repeats in a batch; without it a pool spans the mixed stream of all sources.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import DistributedSampler

from gecko_lightning.errors import UserError

SAMPLING_MODES = ("proportional", "uniform", "temperature")


def source_weights(sizes: Sequence[int], sampling: str = "proportional", temperature: float = 1.0) -> np.ndarray:
    """Normalised share of each source: sizes (S,) -> weights (S,) summing to 1."""
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    if sampling == "proportional":
        weights = sizes_arr
    elif sampling == "uniform":
        weights = (sizes_arr > 0).astype(np.float64)
    elif sampling == "temperature":
        if temperature <= 0:
            raise UserError(f"temperature must be > 0 for temperature sampling, got {temperature}")
        weights = sizes_arr ** (1.0 / temperature)
    else:
        raise UserError(f"unknown sampling {sampling!r}: choose one of {SAMPLING_MODES}")
    if weights.sum() <= 0:
        raise UserError("every source is empty: nothing to sample")
    return weights / weights.sum()


def quotas(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer shares of `total` closest to weights * total (largest remainder), summing to total."""
    exact = weights * total
    out = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    return out


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


class GlobalBatchSampler(DistributedSampler):
    """Yields this rank's list of dataset indices for each global batch of the epoch plan.

    Subclasses DistributedSampler only so Lightning sees an already sharded sampler and does
    not wrap it again; it shards itself. Use with `DataLoader(batch_size=None, sampler=...)`.
    `sizes` are the sources' lengths, laid out back to back in the dataset's index space.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_size: int,
        weights: Sequence[float] | None = None,
        homogeneous: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        lengths: Sequence[int] | None = None,
        group_size: int = 0,
        names: Sequence[str] | None = None,
    ) -> None:
        self.sizes = [int(s) for s in sizes]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.global_batch = batch_size * world_size
        self.weights = source_weights(self.sizes) if weights is None else np.asarray(weights, dtype=np.float64)
        self.homogeneous, self.shuffle, self.seed = homogeneous, shuffle, seed
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.group_size = group_size  # k > 1: sort by length inside pools of k global batches
        self.names = list(names) if names is not None else [f"source {i}" for i in range(len(self.sizes))]
        self.epoch = 0
        self.skip: tuple[int, int] | None = None  # (epoch, batches already consumed) after a resume
        self._cache: tuple[int, list[np.ndarray]] | None = None
        self._check()

    def _check(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")
        if self.homogeneous:
            small = [n for n, s, w in zip(self.names, self.sizes, self.weights) if w > 0 and s < self.global_batch]
            if small:
                raise UserError(
                    f"sources {small} have fewer records than one global batch ({self.global_batch} = batch_size "
                    f"{self.batch_size} x world_size {self.world_size}): lower batch_size, drop them, or set "
                    "homogeneous_batches: false"
                )
        if len(self.plan(0)) == 0:
            raise UserError(
                f"{sum(self.sizes)} records make no full global batch of {self.global_batch} "
                f"(batch_size {self.batch_size} x world_size {self.world_size}): lower batch_size"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _stream(self, source: int, count: int, epoch: int) -> list[np.ndarray]:
        """`count` local indices of one source, as a list of permutations (cycles), the last one cut.

        A source that runs out is cycled through fresh permutations. In homogeneous mode each cycle
        contributes whole batches only, so no batch straddles two permutations (which could put one
        record twice in a batch); length grouping pools inside one cycle for the same reason.
        """
        size, parts, cycle, have = self.sizes[source], [], 0, 0
        per_cycle = size - size % self.global_batch if self.homogeneous else size
        while have < count:
            perm = _rng(self.seed, epoch, source, cycle).permutation(size) if self.shuffle else np.arange(size)
            parts.append(perm[: min(per_cycle, count - have)])
            have, cycle = have + per_cycle, cycle + 1
        return parts

    @property
    def grouping(self) -> bool:
        return self.lengths is not None and self.group_size > 1

    def _batches(self, indices: np.ndarray, epoch: int, *salt: int) -> list[np.ndarray]:
        """Cut global indices into full global batches (G,), optionally grouping similar lengths.

        Grouping: each pool of `group_size` global batches is sorted by length and cut, and then the
        batch order is shuffled from (seed, epoch, salt), so every rank derives the same order and a
        resume can skip into it.
        """
        g = self.global_batch
        if self.grouping:
            pool = g * self.group_size
            chunks = [indices[i : i + pool] for i in range(0, len(indices), pool)]
            # stable sort: equal lengths keep their (already shuffled) order
            indices = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])
        batches = [indices[i : i + g] for i in range(0, len(indices) - g + 1, g)]
        if self.shuffle and self.grouping:
            batches = [batches[i] for i in _rng(self.seed, epoch, 1_000_003, *salt).permutation(len(batches))]
        return batches

    def plan(self, epoch: int) -> list[np.ndarray]:
        """All global batches of an epoch, as arrays of global dataset indices (G,)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        unit = self.global_batch if self.homogeneous else 1
        available = np.asarray([s // unit for s in self.sizes])
        share = quotas(self.weights, int(available.sum()))
        if self.homogeneous:
            batches = []
            for s, q in enumerate(share):
                for cycle, part in enumerate(self._stream(s, int(q) * unit, epoch)):
                    batches += self._batches(part + self.offsets[s], epoch, s, cycle)
            order = _rng(self.seed, epoch, 999_983).permutation(len(batches)) if self.shuffle else range(len(batches))
            batches = [batches[i] for i in order]
        else:
            streams = [np.concatenate(self._stream(s, int(q), epoch) or [np.zeros(0, np.int64)]) + self.offsets[s]
                       for s, q in enumerate(share)]
            flat = np.concatenate(streams)  # mixed sources: a pool spans them all
            if self.shuffle:
                flat = flat[_rng(self.seed, epoch, 999_979).permutation(len(flat))]
            batches = self._batches(flat, epoch, 0)
        self._cache = (epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        plan = self.plan(self.epoch)
        start = 0
        if self.skip is not None and self.skip[0] == self.epoch:
            start = self.skip[1]
        self.skip = None  # one-shot: the next epoch starts from its beginning
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in plan[start:]:
            yield batch[lo:hi].tolist()

    def __len__(self) -> int:
        """Batches in a full epoch, also after a resume: Lightning keeps counting from the restored index."""
        return len(self.plan(self.epoch))
