"""Metrics against hand computations, an independent naive implementation and pytrec_eval."""

import math
import random

import numpy as np
import pytest

from gecko_lightning.evaluation import metrics


def test_ndcg_by_hand():
    # ranks 1..3 hold grades 0, 2, 1; ideal order is 2, 1.
    relevant = {"b": 2, "c": 1}
    got = metrics.ndcg_at_k(["a", "b", "c"], relevant, 10)
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert got == pytest.approx(dcg / idcg)


def test_ndcg_cut_ignores_docs_below_k_and_counts_missing_relevant_in_ideal():
    relevant = {"x": 1, "y": 1}
    assert metrics.ndcg_at_k(["a", "x", "y"], relevant, 1) == 0.0
    assert metrics.ndcg_at_k(["x"], relevant, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_recall_and_mrr_by_hand():
    relevant = {"x": 1, "y": 1, "z": 0}
    ranked = ["a", "b", "y", "c"]
    assert metrics.recall_at_k(ranked, relevant, 100) == 0.5
    assert metrics.recall_at_k(ranked, relevant, 2) == 0.0
    assert metrics.mrr_at_k(ranked, relevant, 10) == pytest.approx(1 / 3)
    assert metrics.mrr_at_k(ranked, relevant, 2) == 0.0
    assert metrics.mrr_at_k(["z"], relevant, 10) == 0.0  # grade 0 is not relevant


def _random_case(seed):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(150)]
    qrels, run_scores = {}, {}
    for q in range(20):
        judged = rng.sample(docs, rng.randint(1, 6))
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 2, 3]) for d in judged}
        qrels[f"q{q}"][judged[0]] = max(1, qrels[f"q{q}"][judged[0]])
        scores = rng.sample(range(10_000), 120)  # distinct scores: no tie-breaking differences
        run_scores[f"q{q}"] = dict(zip(rng.sample(docs, 120), map(float, scores)))
    return qrels, run_scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_metrics_match_pytrec_eval(seed):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run_scores = _random_case(seed)
    run = {q: sorted(s, key=s.get, reverse=True) for q, s in run_scores.items()}
    ours = metrics.retrieval_metrics(run, qrels)
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run_scores)
    assert ours["ndcg_at_10"] == pytest.approx(np.mean([r["ndcg_cut_10"] for r in ref.values()]), abs=1e-9)
    assert ours["recall_at_100"] == pytest.approx(np.mean([r["recall_100"] for r in ref.values()]), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_mrr_matches_naive_loop(seed):
    qrels, run_scores = _random_case(seed)
    run = {q: sorted(s, key=s.get, reverse=True) for q, s in run_scores.items()}
    naive = []
    for q, rel in qrels.items():
        rr = 0.0
        for i in range(10):
            if rel.get(run[q][i], 0) > 0:
                rr = 1 / (i + 1)
                break
        naive.append(rr)
    assert metrics.retrieval_metrics(run, qrels)["mrr_at_10"] == pytest.approx(np.mean(naive))


def test_retrieval_metrics_without_relevant_docs_is_an_error():
    with pytest.raises(ValueError, match="no query with a relevant document"):
        metrics.retrieval_metrics({"q": ["a"]}, {"q": {"a": 0}})


def test_spearman_by_hand_with_ties():
    # gold ranks 1, 2.5, 2.5, 4; predicted ranks 1, 2, 3, 4 -> Pearson of ranks
    gold, pred = [0.0, 1.0, 1.0, 3.0], [0.1, 0.2, 0.3, 0.4]
    a, b = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    expected = np.corrcoef(a, b)[0, 1]
    assert metrics.spearman(pred, gold) == pytest.approx(expected)
    with pytest.raises(ValueError, match="equal-length"):
        metrics.spearman([1.0], [1.0, 2.0])


def test_classification_accuracy_separable_and_undersampled():
    rng = np.random.RandomState(0)
    centers = {"a": np.array([5.0, 0]), "b": np.array([0, 5.0])}
    train_y = ["a"] * 30 + ["b"] * 30
    test_y = ["a"] * 10 + ["b"] * 10
    tx = np.stack([centers[y] + rng.randn(2) * 0.3 for y in train_y])
    ex = np.stack([centers[y] + rng.randn(2) * 0.3 for y in test_y])
    assert metrics.classification_accuracy(tx, train_y, ex, test_y, samples_per_label=None) == 1.0
    assert metrics.classification_accuracy(tx, train_y, ex, test_y, samples_per_label=2, n_experiments=3) == 1.0
    # labels flipped in test: every prediction wrong
    flipped = ["b" if y == "a" else "a" for y in test_y]
    assert metrics.classification_accuracy(tx, train_y, ex, flipped, samples_per_label=None) == 0.0


def test_undersample_keeps_per_label_counts():
    labels = np.array(["a"] * 10 + ["b"] * 3)
    idx = metrics._undersample(labels, 4, seed=1)
    assert sorted(labels[idx].tolist()) == ["a"] * 4 + ["b"] * 3


@pytest.mark.parametrize("predicted, gold", [([0.5, 0.5, 0.5], [1.0, 2.0, 3.0]), ([0.1, 0.2, 0.3], [2.0, 2.0, 2.0])])
def test_spearman_of_a_constant_list_is_an_error_not_nan(predicted, gold):
    from scipy.stats import spearmanr

    assert math.isnan(spearmanr(predicted, gold).correlation)  # the reference has no value here either
    with pytest.raises(ValueError, match="Spearman is undefined"):
        metrics.spearman(predicted, gold)
