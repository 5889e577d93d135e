"""BM25 (FTRACE's strongest baseline): lexical overlap between a query and each candidate.

FTRACE's code scores with ``rank_bm25.BM25Plus`` at its defaults (k1=1.5, b=0.75, delta=1) over
whitespace tokens of the query and the candidates, both with the mask filled in by the answer.
Document statistics (IDF, average length) come from the candidate list passed in.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rank_bm25 import BM25Okapi, BM25Plus


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
    """
    queries = _texts(queries, "queries")
    candidates = _texts(candidates, "candidates")
    corpus = [tokenize(c, lowercase) for c in candidates]
    if not any(corpus):
        raise ValueError("every candidate is empty: BM25 has no words to match")
    if variant == "plus":
        index = BM25Plus(corpus, k1=k1, b=b, delta=delta)
    elif variant == "okapi":
        index = BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)
    else:
        raise ValueError(f"variant must be 'plus' or 'okapi', got {variant!r}")
    return np.stack([np.asarray(index.get_scores(tokenize(q, lowercase)), dtype=np.float64) for q in queries])
