"""Retrieval, STS and classification metrics, on a 0-1 scale (callers multiply by 100 for reports).

Conventions follow trec_eval / pytrec_eval, which MTEB uses, so offline numbers match the leaderboard:
- a document is relevant when its qrels grade is > 0; nDCG gains are the raw grades (not 2^g - 1);
- the ideal DCG is built from all graded documents of the query, cut at k;
- scores are averaged over the queries that have at least one relevant document.
`tests/test_eval_metrics.py` checks these against hand computations and pytrec_eval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> grade
Run = Mapping[str, Sequence[str]]  # query id -> doc ids, best first


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain of gains listed in rank order (rank 1 first)."""
    return sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """nDCG@k of one ranked list against graded relevance (grades <= 0 count as 0)."""
    gains = [max(relevant.get(doc, 0), 0) for doc in ranked[:k]]
    ideal = sorted((max(g, 0) for g in relevant.values()), reverse=True)[:k]
    best = dcg(ideal)
    return dcg(gains) / best if best > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k."""
    wanted = {doc for doc, g in relevant.items() if g > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document within the top k, else 0."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if relevant.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def retrieval_metrics(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, Recall@100 and MRR@10 over the judged queries (queries missing from `run` score 0)."""
    judged = [q for q, rel in qrels.items() if any(g > 0 for g in rel.values())]
    if not judged:
        raise ValueError("qrels hold no query with a relevant document (grade > 0); nothing to evaluate")
    per_metric = {"ndcg_at_10": (ndcg_at_k, 10), "recall_at_100": (recall_at_k, 100), "mrr_at_10": (mrr_at_k, 10)}
    return {
        name: float(np.mean([fn(run.get(q, []), qrels[q], k) for q in judged]))
        for name, (fn, k) in per_metric.items()
    }


def spearman(predicted: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties), as MTEB reports for STS."""
    from scipy.stats import spearmanr

    if len(predicted) != len(gold) or len(gold) < 2:
        raise ValueError(f"spearman needs two equal-length lists of >= 2 values, got {len(predicted)} and {len(gold)}")
    if len(set(predicted)) == 1 or len(set(gold)) == 1:
        which = "predicted similarities" if len(set(predicted)) == 1 else "gold scores"
        raise ValueError(f"Spearman is undefined: all {len(gold)} {which} are equal (a collapsed model or a flat gold set)")
    return float(spearmanr(predicted, gold).correlation)


def classification_accuracy(
    train_x: np.ndarray,
    train_y: Sequence[str],
    test_x: np.ndarray,
    test_y: Sequence[str],
    samples_per_label: int | None = 8,
    n_experiments: int = 10,
    seed: int = 42,
) -> float:
    """MTEB-style accuracy of a logistic regression trained on frozen embeddings.

    Like MTEB's AbsTaskClassification: each of `n_experiments` runs draws `samples_per_label` training
    examples per label (None = the whole train split, one run), fits LogisticRegression(max_iter=100)
    and scores the test split; the mean accuracy is returned. train_x: (N, D), test_x: (M, D).
    """
    from sklearn.linear_model import LogisticRegression

    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    runs = 1 if samples_per_label is None else n_experiments
    scores = []
    for i in range(runs):
        idx = np.arange(len(train_y)) if samples_per_label is None else _undersample(train_y, samples_per_label, seed + i)
        clf = LogisticRegression(max_iter=100, random_state=seed + i).fit(train_x[idx], train_y[idx])
        scores.append(float((clf.predict(test_x) == test_y).mean()))
    return float(np.mean(scores))


def _undersample(labels: np.ndarray, per_label: int, seed: int) -> np.ndarray:
    """Indices of the first `per_label` examples of each label after a seeded shuffle."""
    order = np.random.RandomState(seed).permutation(len(labels))
    counts: dict[str, int] = {}
    keep = []
    for i in order:
        if counts.get(labels[i], 0) < per_label:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
            keep.append(i)
    return np.array(sorted(keep))
