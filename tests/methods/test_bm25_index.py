"""The sparse BM25Plus index against rank_bm25 (the reference): scores, top-k order, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Plus

from tda.methods.bm25 import bm25
from tda.methods.bm25_index import BM25Index


def zipf_corpus(n_docs, vocab=60, seed=0, max_len=12, empty_share=0.05):
    """Documents of words ``w0..`` drawn from a Zipf-like law (so frequent words repeat within a
    document), with a few empty documents and exact duplicates (ties)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    docs = []
    for i in range(n_docs):
        n = 0 if rng.random() < empty_share else int(rng.integers(1, max_len + 1))
        docs.append([f"w{j}" for j in rng.choice(vocab, size=n, p=p)])
    docs += [list(docs[1]), list(docs[1]), list(docs[3])]  # identical documents score identically
    return docs


QUERIES = [
    ["w0", "w1", "w5"],
    ["w3", "w3", "w3", "w7"],          # repeated words count each time
    ["never", "seen", "w2"],           # words absent from the corpus add 0
    ["never"],                         # only absent words: every document scores 0
    [],                                # empty query
    ["w59", "w58", "w0", "w0", "w12"],  # rare words
]


@pytest.mark.parametrize("params", [dict(), dict(k1=1.2, b=0.5, delta=0.5), dict(k1=2.0, b=0.0, delta=1.0)])
def test_scores_equal_rank_bm25(params):
    corpus = zipf_corpus(300)
    ref = BM25Plus(corpus, **params)
    index = BM25Index(corpus, desc=None, **params)
    docs = np.array([0, 5, 17, 299, 300, 301, 302, 5])
    for q in QUERIES:
        expected = np.asarray(ref.get_scores(q))
        got = index.scores(q)
        assert np.abs(got - expected).max() <= 1e-6 * max(1.0, np.abs(expected).max())
        # not only close: the same float64 operations in the same order, so the same bits
        assert np.array_equal(got, expected)
        assert np.array_equal(index.scores_at(q, docs), expected[docs])
    assert np.array_equal(index.score_matrix(QUERIES[:2]), np.stack([ref.get_scores(q) for q in QUERIES[:2]]))


def test_top_k_is_stable_argsort_of_rank_bm25():
    corpus = zipf_corpus(400, seed=1)
    ref = BM25Plus(corpus)
    index = BM25Index(corpus, desc=None)
    for k in (1, 7, 50, 403, 1000):
        rows, values = index.top_k(QUERIES, k)
        assert rows.shape == (len(QUERIES), min(k, 403))
        for j, q in enumerate(QUERIES):
            expected = np.asarray(ref.get_scores(q))
            order = np.argsort(-expected, kind="stable")[:k]
            assert rows[j].tolist() == order.tolist(), (k, q)
            assert np.array_equal(values[j], expected[order])
    # ties: identical documents 400 and 401 (copies of row 1) come in row order right after row 1
    rows, values = index.top_k_one(corpus[1], 403)
    where = [rows.tolist().index(i) for i in (1, 400, 401)]
    assert values[where[0]] == values[where[1]] == values[where[2]]
    assert where == sorted(where) and where[2] - where[0] == 2
    assert len(set(values[:50].tolist())) < 50  # the test corpus really has ties near the top
    # a query without any known word: every score is 0, so the first k rows in order
    assert index.top_k([["never"]], 4)[0].tolist() == [[0, 1, 2, 3]]
    assert index.top_k([["w0"]], 0)[0].shape == (1, 0)


def test_top_k_when_few_documents_match():
    # 3 documents contain "rare"; k=5 must add the first two that do not, in row order
    corpus = [["a", "b"], ["rare", "a"], ["b"], [], ["rare"], ["c", "c"], ["rare", "rare", "b"]]
    ref = np.asarray(BM25Plus(corpus).get_scores(["rare", "b"]))
    rows, values = BM25Index(corpus, desc=None).top_k([["rare", "b"]], 5)
    assert rows[0].tolist() == np.argsort(-ref, kind="stable")[:5].tolist()
    assert np.array_equal(values[0], ref[rows[0]])


def test_dense_method_matches_rank_bm25_on_text():
    docs = ["Paris is the capital of France .", "", "Mara Holt was born in Lusto .", "Lusto Lusto Lusto ."]
    queries = ["Mara Holt was born in Lusto .", "capital capital of France", "nothing matches"]
    ref = BM25Plus([d.split() for d in docs], k1=1.5, b=0.75, delta=1.0)
    assert np.array_equal(bm25(queries, docs), np.stack([ref.get_scores(q.split()) for q in queries]))


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="empty"):
        BM25Index([], desc=None)
    with pytest.raises(ValueError, match="every document"):
        BM25Index([[], []], desc=None)
    with pytest.raises(TypeError, match="corpus\\[1\\] is a string"):
        BM25Index([["a"], "a b"], desc=None)
    with pytest.raises(ValueError, match="k1 > 0"):
        BM25Index([["a"]], b=1.0, desc=None)
    index = BM25Index([["a"], ["b"]], desc=None)
    with pytest.raises(TypeError, match="list of words"):
        index.scores("a b")
    with pytest.raises(IndexError, match="document row 2"):
        index.scores_at(["a"], [0, 2])
    with pytest.raises(ValueError, match="non-negative integer"):
        index.top_k([["a"]], -1)
