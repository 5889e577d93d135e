"""BM25 (FTRACE's strongest baseline): lexical overlap between a query and each candidate.

FTRACE's code scores with ``rank_bm25.BM25Plus`` at its defaults (k1=1.5, b=0.75, delta=1) over
whitespace tokens of the query and the candidates, both with the mask filled in by the answer.
Document statistics (IDF, average length) come from the candidate list passed in.

``variant="plus"`` is scored by :class:`tda.methods.bm25_index.BM25Index`, a sparse index whose
scores are ``rank_bm25.BM25Plus``'s bit for bit and which scales to FTRACE's 1.56M abstracts
(``BM25Index.top_k``); ``variant="okapi"`` (not used by the book) still goes through ``rank_bm25``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rank_bm25 import BM25Okapi

from .bm25_index import BM25Index


def tokenize(text: str, lowercase: bool = False) -> list[str]:
    """Whitespace tokens (optionally lowercased), as in FTRACE's BM25 runs."""
    return (text.lower() if lowercase else text).split()


def _texts(values, what: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    values = list(values)
    if not values:
        raise ValueError(f"{what} is empty")
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{what}[{bad[0]}] is {type(values[bad[0]]).__name__}, not a string")
    return values


def bm25(queries: Sequence[str], candidates: Sequence[str], *, variant: str = "plus", k1: float = 1.5,
         b: float = 0.75, delta: float = 1.0, epsilon: float = 0.25, lowercase: bool = False) -> np.ndarray:
    """BM25 scores ``[n_queries, n_candidates]`` of each query against every candidate.

    ``variant="plus"`` is ``BM25Plus(k1, b, delta)`` (FTRACE's choice); ``"okapi"`` is
    ``BM25Okapi(k1, b, epsilon)``. Tokens are whitespace-separated words, lowercased if asked.
    Empty query or candidate lists, or candidates that are all empty, raise ValueError.
    For a large candidate set, build a :class:`BM25Index` once and ask it for ``top_k`` or
    ``scores_at`` instead of this dense matrix.
    """
    queries = _texts(queries, "queries")
    candidates = _texts(candidates, "candidates")
    if variant not in ("plus", "okapi"):
        raise ValueError(f"variant must be 'plus' or 'okapi', got {variant!r}")
    corpus = [tokenize(c, lowercase) for c in candidates]
    if not any(corpus):
        raise ValueError("every candidate is empty: BM25 has no words to match")
    if variant == "plus":
        return BM25Index(corpus, k1=k1, b=b, delta=delta, desc=None).score_matrix(
            [tokenize(q, lowercase) for q in queries])
    index = BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)
    return np.stack([np.asarray(index.get_scores(tokenize(q, lowercase)), dtype=np.float64) for q in queries])
