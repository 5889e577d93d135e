"""Ranking metrics against hand-worked cases and scikit-learn."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tda import metrics as K

# Query 0: ranking by score is c2, c0, c3, c1; relevant {c0, c1} -> first relevant at rank 2.
# Query 1: ranking c1, c3, c0, c2; relevant {c1} -> rank 1.
# Query 2: no relevant candidate.
SCORES = np.array([[0.5, 0.1, 0.9, 0.3],
                   [0.2, 0.8, 0.1, 0.4],
                   [0.3, 0.2, 0.1, 0.0]])
RELEVANT = [[0, 1], [1], []]


def test_mrr_hand_worked():
    assert np.allclose(K.mrr(SCORES, RELEVANT), [1 / 2, 1.0, 0.0])


def test_precision_and_recall_hand_worked():
    assert np.allclose(K.precision_at_k(SCORES, RELEVANT, 1), [0, 1, 0])
    assert np.allclose(K.precision_at_k(SCORES, RELEVANT, 2), [1 / 2, 1 / 2, 0])
    assert np.allclose(K.precision_at_k(SCORES, RELEVANT, 10), [2 / 4, 1 / 4, 0])  # k capped at 4
    assert np.allclose(K.recall_at_k(SCORES, RELEVANT, 1), [0, 1, 0])
    assert np.allclose(K.recall_at_k(SCORES, RELEVANT, 3), [1 / 2, 1, 0])
    assert np.allclose(K.recall_at_k(SCORES, RELEVANT, 4), [1, 1, 0])


def test_matrix_and_lists_agree():
    matrix = K.relevance_matrix(RELEVANT, SCORES.shape)
    assert matrix.dtype == bool and matrix.sum() == 3
    assert np.array_equal(K.mrr(SCORES, matrix), K.mrr(SCORES, RELEVANT))
    assert np.array_equal(K.mrr(SCORES, matrix.astype(int)), K.mrr(SCORES, RELEVANT))


def test_ties_are_pessimistic_by_default():
    scores = np.array([[1.0, 1.0, 1.0, 0.0]])
    relevant = [[0]]  # listed first, tied with two irrelevant candidates
    assert K.mrr(scores, relevant)[0] == pytest.approx(1 / 3)
    assert K.mrr(scores, relevant, ties="optimistic")[0] == 1.0
    assert K.precision_at_k(scores, relevant, 1)[0] == 0.0
    assert K.recall_at_k(scores, relevant, 3)[0] == 1.0


def test_auc_hand_worked():
    # Query 0: positives score 0.5 and 0.1, negatives 0.9 and 0.3: pairs won 1 of 4 -> 0.25.
    # Query 1: the positive beats all 3 negatives -> 1.0.
    assert np.allclose(K.roc_auc(SCORES[:2], RELEVANT[:2]), [0.25, 1.0])
    # A tie between a positive and a negative counts half.
    assert K.roc_auc(np.array([[1.0, 1.0, 0.0]]), [[0]])[0] == pytest.approx(0.75)


def test_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(20, 30)).astype(float)  # many ties
    relevant = rng.random((20, 30)) < 0.3
    relevant[:, 0], relevant[:, 1] = True, False  # every query has both classes
    ours = K.roc_auc(scores, relevant)
    theirs = [roc_auc_score(relevant[q], scores[q]) for q in range(20)]
    assert np.allclose(ours, theirs)


def test_auc_undefined_raises_or_skips():
    with pytest.raises(ValueError, match="query 2"):
        K.roc_auc(SCORES, RELEVANT)
    with pytest.raises(ValueError, match="no irrelevant"):
        K.roc_auc(SCORES[:1], [[0, 1, 2, 3]])
    skipped = K.roc_auc(SCORES, RELEVANT, undefined="skip")
    assert np.isnan(skipped[2]) and np.allclose(skipped[:2], [0.25, 1.0])
    summary = K.summarise({"auc": skipped})
    assert summary["auc"] == pytest.approx(0.625) and summary["auc_skipped"] == 1


def test_evaluate_and_seed_aggregation():
    per_query = K.evaluate(SCORES, RELEVANT, ks=(1, 3))
    assert set(per_query) == {"mrr", "precision@1", "recall@1", "precision@3", "recall@3"}
    summary = K.summarise(per_query)
    assert summary["mrr"] == pytest.approx(0.5) and summary["n_queries"] == 3
    seeds = [{"mrr": 0.5, "auc": 0.9}, {"mrr": 0.7, "auc": 0.8}, {"mrr": 0.6, "auc": 0.7}]
    agg = K.aggregate_seeds(seeds)
    assert agg["mrr"][0] == pytest.approx(0.6) and agg["mrr"][1] == pytest.approx(0.1)
    assert K.mean_std([0.3]) == (0.3, 0.0)
    with pytest.raises(ValueError):
        K.aggregate_seeds([])
    with pytest.raises(ValueError):
        K.mean_std([])


@pytest.mark.parametrize("scores,relevant", [
    (np.zeros((0, 3)), []),
    (np.array([1.0, 2.0]), [[0]]),
    (np.array([[np.nan, 1.0]]), [[0]]),
    (np.array([[1.0, 2.0]]), [[5]]),
    (np.array([[1.0, 2.0]]), [[0], [1]]),
    (np.array([[1.0, 2.0]]), np.array([[True, False, True]])),
    (np.array([[1.0, 2.0]]), np.array([[2, 0]])),
])
def test_bad_inputs_raise(scores, relevant):
    with pytest.raises(ValueError):
        K.mrr(scores, relevant)


def test_bad_k_and_ties_raise():
    with pytest.raises(ValueError):
        K.precision_at_k(SCORES, RELEVANT, 0)
    with pytest.raises(ValueError):
        K.mrr(SCORES, RELEVANT, ties="random")


@pytest.mark.parametrize("n,r", [(1, 1), (5, 1), (5, 2), (6, 6), (7, 3)])
def test_chance_mrr_is_the_mean_over_every_order(n, r):
    """Enumerate every placement of the relevant candidates: the exact expectation."""
    total = sum(1.0 / (min(pos) + 1) for pos in itertools.combinations(range(n), r))
    assert K.chance_mrr(n, r) == pytest.approx(total / comb(n, r))
    p, rec = K.chance_at_k(n, r, 3)
    k = min(3, n)
    assert p == pytest.approx(k * r / n / k) and rec == pytest.approx(k / n)


def test_chance_metrics_edge_cases():
    assert K.chance_mrr(10, 0) == 0.0
    assert K.chance_at_k(10, 0, 5) == (0.0, 0.0)
    for bad in ((0, 0), (3, 4), (3, -1)):
        with pytest.raises(ValueError, match="n_relevant"):
            K.chance_mrr(*bad)
