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


# ---- set-level and hard-negative AUC, bootstrap (issue 12) --------------------------------------
def test_set_auc_hand_worked():
    # ranking 0.9(+) 0.8(-) 0.5(+) 0.1(-): pairs (+,-) correct: 0.9>0.8, 0.9>0.1, 0.5>0.1 -> 3 of 4
    assert K.set_auc([0.9, 0.8, 0.5, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half: 1 + 0.5 of 2 pairs
    assert K.set_auc([0.5, 0.5, 0.9], [0, 1, 1]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="one value per candidate"):
        K.set_auc([[0.1, 0.2]], [0, 1])
    with pytest.raises(ValueError, match="one flag per candidate"):
        K.set_auc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="undefined"):
        K.set_auc([0.1, 0.2], [1, 1])


def test_hard_negative_auc_ignores_easy_negatives():
    # candidates: 0,1 positives; 2,3 hard negatives; 4,5 easy negatives (scored lowest)
    scores = np.array([[0.6, 0.2, 0.9, 0.1, -5.0, -6.0],
                       [0.9, 0.8, 0.1, 0.2, -5.0, -6.0]])
    pos = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    hard = np.array([0, 0, 1, 1, 0, 0], dtype=bool)
    # query 0: pairs (0.6>0.9 no, 0.6>0.1 yes, 0.2>0.9 no, 0.2>0.1 yes) -> 2/4; query 1: 4/4
    assert np.allclose(K.hard_negative_auc(scores, pos, hard), [0.5, 1.0])
    assert np.allclose(K.roc_auc(scores, np.broadcast_to(pos, scores.shape)), [(2 + 4) / 8, 1.0])
    assert np.allclose(K.hard_negative_auc(scores[0], pos, hard), [0.5])  # a set-level ranking
    # a lexical detector that scores every target-word summary 1 is exactly at chance on hard negatives
    detector = pos | hard
    assert np.allclose(K.hard_negative_auc(detector.astype(float), pos, hard), [0.5])
    assert K.set_auc(detector.astype(float), pos) == pytest.approx(1 - 0.5 * 2 / 4)  # 1 - f/2, f = 2 of 4 negatives
    with pytest.raises(ValueError, match="both positive and negative"):
        K.hard_negative_auc(scores, pos, pos)
    with pytest.raises(ValueError, match="needs positives and negatives"):
        K.hard_negative_auc(scores, pos, np.zeros(6, dtype=bool))


def test_recall_at_k_of_a_set_ranking():
    assert K.recall_at_k(np.array([[0.9, 0.8, 0.5, 0.1]]), np.array([[1, 0, 1, 0]]), 2)[0] == pytest.approx(0.5)


def test_bootstrap_ci_hand_worked():
    # one seed, one query: no variation at all
    assert K.bootstrap_ci([[0.7]]) == pytest.approx((0.7, 0.7, 0.7))
    # seeds constant within: the bootstrap mean of two draws from {0, 1} is 0, 0.5 or 1 with
    # probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 1] and the estimate 0.5
    est, lo, hi = K.bootstrap_ci([[0.0, 0.0, 0.0], [1.0, 1.0]], n_boot=4000)
    assert (est, lo, hi) == pytest.approx((0.5, 0.0, 1.0))
    # the estimate weighs seeds equally, not queries: (mean 0.2 of 4 queries + 1.0) / 2
    est, lo, hi = K.bootstrap_ci([[0.0, 0.0, 0.4, 0.4], [1.0]], n_boot=4000)
    assert est == pytest.approx(0.6) and lo < est < hi and lo >= 0.0 and hi <= 1.0
    # two-level: with one seed, the interval is that of the query bootstrap of its mean
    values = np.arange(20) / 20
    _, lo, hi = K.bootstrap_ci([values], n_boot=4000, level=0.9)
    se = values.std() / np.sqrt(len(values))
    assert lo == pytest.approx(values.mean() - 1.645 * se, abs=0.02)
    assert hi == pytest.approx(values.mean() + 1.645 * se, abs=0.02)
    assert K.bootstrap_ci([values, values[::-1]], seed=3) == K.bootstrap_ci([values, values[::-1]], seed=3)


@pytest.mark.parametrize("bad, match", [([], "at least one seed"), ([[0.1], []], "no query values"),
                                        ([[np.nan]], "NaN")])
def test_bootstrap_ci_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        K.bootstrap_ci(bad)
