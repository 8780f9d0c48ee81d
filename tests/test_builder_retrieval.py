"""Neighbour search against a numpy reference, and the seed-inclusion rule."""

from __future__ import annotations

import numpy as np
import pytest

from data_builders.config import RetrieveConfig
from data_builders.index import candidates_with_seed, search


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(400, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:20] + 0.05 * rng.normal(size=(20, 16)).astype(np.float32)
    return queries.astype(np.float32), docs


def test_flat_search_is_exact(data):
    queries, docs = data
    scores, idx = search(queries, docs, 5, RetrieveConfig(index="flat", device="cpu"))
    reference = np.argsort(-(queries @ docs.T), axis=1)[:, :5]
    assert (idx == reference).all()
    assert np.allclose(scores, np.take_along_axis(queries @ docs.T, reference, axis=1), atol=1e-5)


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_near_duplicate(data, index):
    queries, docs = data
    _, idx = search(queries, docs, 5, RetrieveConfig(index=index, nlist=4, nprobe=4, device="cpu"))
    assert (idx[:, 0] == np.arange(20)).mean() >= 0.9  # each query is a noisy copy of doc i


def test_seed_is_always_a_candidate():
    assert candidates_with_seed(["a", "s", "b"], "s", 2) == (["a", "s"], 2)
    assert candidates_with_seed(["a", "b", "c", "s"], "s", 3) == (["a", "b", "s"], 4)  # replaces the N-th
    assert candidates_with_seed(["a", "b"], "s", 2) == (["a", "s"], None)  # not retrieved at all
