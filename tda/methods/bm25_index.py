"""BM25Plus at corpus scale: a sparse inverted index whose scores are ``rank_bm25.BM25Plus``'s, bit for bit.

FTRACE ranks 1.56M abstracts for each of 31k queries (top 250 over the whole set). ``rank_bm25``
loops in Python over every document for every query word, which takes days at that size; this
index keeps the term frequencies in a ``scipy.sparse`` CSC matrix (documents x terms), so that a
query touches only the postings of its own words.

The definition is ``rank_bm25.BM25Plus`` (Trotman et al. 2014, as that package implements it)::

    score(q, d) = sum over the words w of q, repeats included, of
                  idf(w) * (delta + tf(w, d) * (k1 + 1) / (k1 * (1 - b + b * |d| / avgdl) + tf(w, d)))
    idf(w) = log((N + 1) / df(w))      (0 for a word that no document contains)

Note the ``delta`` term: every document gets ``idf(w) * delta`` for every query word, also when it
does not contain the word, so BM25Plus is dense. A document that shares no word with the query
scores the query's constant ``sum idf(w) * delta``.

Exactness (why not ``bm25s``): ``bm25s`` 0.3 implements the same BM25+ formula (its "non-occurrence"
array adds the ``delta`` part back), but it sums in its own order and in float32 by default, and its
top-k (``argpartition``) leaves the order of tied scores unspecified. Candidate sets take the BM25
top-k in ``np.argsort(-scores, kind="stable")`` order of ``rank_bm25``'s scores, ties by ascending
document index, and the book's numbers must not move. So this module evaluates the formula with
``rank_bm25``'s own float64 operations in its order (:meth:`BM25Index.scores`, :meth:`scores_at`),
which gives identical bits and so identical tie order, and uses the sparse sum only to find the few
documents that can reach the top k (:meth:`BM25Index.top_k`): those are then scored exactly.

Memory: the index holds three numbers per distinct (document, word) pair (document row, term
frequency, precomputed weight: 16 bytes) and one vector per document; scoring keeps one dense
vector of N floats per query at a time, never a queries x documents matrix.
"""

from __future__ import annotations

import math
from array import array
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from ..progress import progress

# Relative slack of the sparse pre-selection in top_k. The sparse sum and rank_bm25's fold differ by
# a few ulps per query word (relative 1e-16 each); 1e-9 covers queries of millions of words.
PRESELECT_SLACK = 1e-9


class BM25Index:
    """A BM25Plus index over a tokenised corpus (lists of words), scored as ``rank_bm25.BM25Plus``.

    ``k1 > 0`` and ``0 <= b < 1`` (at ``k1 = 0`` or ``b = 1`` with an empty document rank_bm25's
    formula divides 0 by 0); ``delta >= 0``. The corpus may contain empty documents but not only
    empty ones (the average length would be 0).
    """

    def __init__(self, corpus: Iterable[Sequence[str]], k1: float = 1.5, b: float = 0.75, delta: float = 1.0,
                 desc: str | None = "BM25 index"):
        if not (k1 > 0 and 0 <= b < 1 and delta >= 0):
            raise ValueError(f"BM25Plus needs k1 > 0, 0 <= b < 1 and delta >= 0; got k1={k1}, b={b}, "
                             f"delta={delta}")
        self.k1, self.b, self.delta = k1, b, delta
        self.vocab: dict[str, int] = {}
        words, lengths = array("i"), array("q")
        items = corpus if desc is None else progress(corpus, desc=desc)
        for row, doc in enumerate(items):
            if isinstance(doc, str):
                raise TypeError(f"corpus[{row}] is a string; pass each document as a list of words")
            ids = [self.vocab.setdefault(w, len(self.vocab)) for w in doc]
            words.extend(ids)
            lengths.append(len(ids))
        n = len(lengths)
        if n == 0:
            raise ValueError("the corpus is empty")
        total = sum(lengths)
        if total == 0:
            raise ValueError("every document of the corpus is empty: BM25 has no words to match")
        self.n_docs = n
        self.doc_len = np.frombuffer(lengths, dtype=np.int64).copy()
        self.avgdl = total / n  # Python int / int, as rank_bm25
        # Per-document length normalisation, written as rank_bm25 writes it (same float64 operations).
        self.norm = self.k1 * (1 - self.b + self.b * self.doc_len / self.avgdl)

        word_ids = np.frombuffer(words, dtype=np.int32)
        rows = np.repeat(np.arange(n, dtype=np.int32), self.doc_len)
        counts = sp.csc_matrix((np.ones(len(word_ids), dtype=np.int32), (rows, word_ids)),
                               shape=(n, len(self.vocab)))  # duplicates summed: term frequencies
        counts.sort_indices()
        del word_ids, rows
        self.indptr, self.rows = counts.indptr, counts.indices  # postings of term t: rows[indptr[t]:indptr[t+1]]
        self.tf = counts.data
        df = np.diff(self.indptr)
        self.idf = np.array([math.log((n + 1) / int(f)) for f in df], dtype=np.float64)
        # Sparse part of each posting (without the delta that every document gets): the fast path.
        tf = self.tf.astype(np.float64)
        norm = self.norm[self.rows]
        self.weight = np.repeat(self.idf, df) * ((tf * (self.k1 + 1)) / (norm + tf))

    def __len__(self) -> int:
        return self.n_docs

    def term_ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Index ids of the query's words, in order and with repeats; words not in the corpus are dropped
        (their idf is 0, so rank_bm25 adds exactly 0.0 for them)."""
        if isinstance(tokens, str):
            raise TypeError("pass a query as a list of words, not a string")
        vocab = self.vocab
        return np.array([vocab[w] for w in tokens if w in vocab], dtype=np.int64)

    def _term_rate(self, idf, tf, norm):
        """One query word's contribution, in rank_bm25's operations and order."""
        return idf * (self.delta + (tf * (self.k1 + 1)) / (norm + tf))

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """Scores of one query against every document: ``rank_bm25.BM25Plus.get_scores``, bit for bit."""
        score = np.zeros(self.n_docs)
        tf = np.zeros(self.n_docs)
        for t in self.term_ids(tokens):
            start, end = self.indptr[t], self.indptr[t + 1]
            tf[self.rows[start:end]] = self.tf[start:end]
            score += self._term_rate(self.idf[t], tf, self.norm)
            tf[self.rows[start:end]] = 0.0
        return score

    def scores_at(self, tokens: Sequence[str], docs) -> np.ndarray:
        """Scores of one query at the given document rows (exactly as :meth:`scores` there)."""
        docs = np.asarray(docs, dtype=np.int64)
        if docs.size and (docs.min() < 0 or docs.max() >= self.n_docs):
            bad = docs[(docs < 0) | (docs >= self.n_docs)][0]
            raise IndexError(f"document row {bad} is outside the index of {self.n_docs} documents")
        score = np.zeros(len(docs))
        norm = self.norm[docs]
        for t in self.term_ids(tokens):
            start, end = self.indptr[t], self.indptr[t + 1]
            rows = self.rows[start:end]
            pos = np.minimum(np.searchsorted(rows, docs), max(len(rows) - 1, 0))
            hit = rows[pos] == docs
            tf = np.where(hit, self.tf[start:end][pos], 0).astype(np.float64)
            score += self._term_rate(self.idf[t], tf, norm)
        return score

    def _sparse_part(self, ids: np.ndarray, out: np.ndarray) -> None:
        """``out`` (zeros) += the postings' weights of each distinct query word times its count."""
        terms, counts = np.unique(ids, return_counts=True)
        for t, c in zip(terms, counts):
            start, end = self.indptr[t], self.indptr[t + 1]
            out[self.rows[start:end]] += c * self.weight[start:end]

    def top_k_one(self, tokens: Sequence[str], k: int, _buffer: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best documents of one query and their exact scores.

        Order: ``np.argsort(-scores, kind="stable")[:k]`` of :meth:`scores` (higher first, ties by
        ascending document row), but without scoring every document exactly. The sparse part
        (0 for a document without any query word, > 0 otherwise) selects the documents within
        ``PRESELECT_SLACK`` of the k-th best; they, and the first k documents without any query
        word, are scored exactly and sorted. No other document can enter the top k: its exact score
        is below that of k selected documents by more than the rounding of either sum.
        """
        k = min(int(k), self.n_docs)
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        ids = self.term_ids(tokens)
        acc = np.zeros(self.n_docs) if _buffer is None else _buffer
        self._sparse_part(ids, acc)
        matched = np.flatnonzero(acc)
        values = acc[matched]
        if _buffer is not None:
            acc[matched] = 0.0  # leave the buffer clean for the next query
        if len(matched) > k:
            kth = np.partition(values, len(values) - k)[len(values) - k]
            constant = float(self.idf[ids].sum()) * self.delta
            slack = PRESELECT_SLACK * (1.0 + abs(constant) + abs(kth))
            pool = matched[values >= kth - slack]
        else:
            pool = matched
        # The first k documents that share no word with the query (they all score the constant).
        span = np.arange(min(self.n_docs, k + len(matched)))
        others = np.setdiff1d(span, matched, assume_unique=True)[:k]
        docs = np.concatenate([pool, others])
        exact = self.scores_at(tokens, docs)
        order = np.lexsort((docs, -exact))[:k]
        return docs[order], exact[order]

    def top_k(self, queries: Sequence[Sequence[str]], k: int, desc: str | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` document rows ``[n_queries, min(k, N)]`` and their exact scores, one query at a
        time (one dense vector of N floats in memory). See :meth:`top_k_one` for the order."""
        if int(k) != k or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k}")
        width = min(int(k), self.n_docs)
        rows = np.zeros((len(queries), width), dtype=np.int64)
        values = np.zeros((len(queries), width))
        buffer = np.zeros(self.n_docs)
        items = enumerate(queries)
        for j, tokens in (items if desc is None else progress(items, desc=desc, total=len(queries))):
            rows[j], values[j] = self.top_k_one(tokens, width, _buffer=buffer)
        return rows, values

    def score_matrix(self, queries: Sequence[Sequence[str]], desc: str | None = None) -> np.ndarray:
        """Dense ``[n_queries, N]`` scores (for small corpora; at scale use :meth:`top_k` or :meth:`scores_at`)."""
        out = np.zeros((len(queries), self.n_docs))
        items = enumerate(queries)
        for j, tokens in (items if desc is None else progress(items, desc=desc, total=len(queries))):
            out[j] = self.scores(tokens)
        return out


__all__ = ["BM25Index", "PRESELECT_SLACK"]
