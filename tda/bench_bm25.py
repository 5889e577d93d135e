"""BM25 at FTRACE's scale: the sparse index against rank_bm25, in one run (``python -m tda.bench --bm25``).

The corpus is generated, not downloaded: ``n_docs`` abstract-like "sentences" of 12-40 words
(mean 26, about a Wikipedia abstract sentence) drawn from a Zipf law (exponent 1, as in English
text) over 100,000 pseudo-words ``w0 .. w99999``. What BM25's cost turns on is the spread of
document frequencies, and a Zipf law gives real text's: a handful of words in most documents
(``w0`` is in about 9 of 10), a long tail in a few. Queries are 8-16 words from the same law,
like FTRACE's queries with the mask filled.

Measured, all in one process started for the purpose (so that its peak RSS is BM25's and the
imports', reported apart as ``baseline_rss_mb``):

- ``index_s``: building :class:`tda.methods.bm25_index.BM25Index` from the texts (whitespace split
  included);
- ``docs_per_s``: query-document pairs ranked per second by ``BM25Index.top_k`` (top ``k`` over the
  whole corpus, exact rank_bm25 order), i.e. queries per second times the corpus size;
- ``rank_bm25_docs_per_s``: ``rank_bm25.BM25Plus.get_scores`` on a subsample (the first
  ``ref_docs`` documents, ``ref_queries`` queries): pairs per second; ``vs_rank_bm25`` is the ratio
  of the two per pair (goal >= 10). ``vs_rank_bm25_same_docs`` compares both on the subsample
  itself (our exact dense scores against rank_bm25's), and ``exact`` checks there that our top-k
  is rank_bm25's stable argsort, ties included.
"""

from __future__ import annotations

import multiprocessing
import resource
import time

import numpy as np
from rank_bm25 import BM25Plus

from .methods.bm25_index import BM25Index

GOAL_VS_RANK_BM25 = 10.0
VOCABULARY = 100_000
ZIPF_EXPONENT = 1.0
DOC_WORDS = (12, 40)
QUERY_WORDS = (8, 16)


def zipf_texts(n: int, words: tuple[int, int], seed: int, vocabulary: int = VOCABULARY,
               exponent: float = ZIPF_EXPONENT) -> list[str]:
    """``n`` texts of ``words[0]..words[1]`` pseudo-words drawn from a Zipf law (see the module docstring)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocabulary + 1) ** exponent
    cdf = np.cumsum(p / p.sum())
    lengths = rng.integers(words[0], words[1] + 1, size=n)
    ids = np.minimum(np.searchsorted(cdf, rng.random(int(lengths.sum()))), vocabulary - 1)
    names = [f"w{i}" for i in range(vocabulary)]
    ends = np.cumsum(lengths)
    flat = ids.tolist()
    return [" ".join([names[i] for i in flat[e - m: e]]) for e, m in zip(ends.tolist(), lengths.tolist())]


def _memory_mb(field: str) -> float:
    """This process's ``VmHWM`` (peak) or ``VmRSS`` (now) from /proc, in MB. Not ``ru_maxrss``: that
    keeps the parent's peak across fork and exec, so a fresh process would report its parent's."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # no /proc: Linux ru_maxrss in KiB


def measure_bm25(n_docs: int = 1_500_000, n_queries: int = 500, k: int = 250, ref_docs: int = 20_000,
                 ref_queries: int = 10, seed: int = 0) -> dict:
    """One BM25 benchmark in this process (see the module docstring); returns a flat dict."""
    if min(n_docs, n_queries, k, ref_docs, ref_queries) < 1:
        raise ValueError("n_docs, n_queries, k, ref_docs and ref_queries must be >= 1")
    ref_docs = min(ref_docs, n_docs)
    baseline = _memory_mb("VmRSS")  # the interpreter, numpy, torch (imported by tda.methods)
    start = time.perf_counter()
    texts = zipf_texts(n_docs, DOC_WORDS, seed)
    queries = [q.split() for q in zipf_texts(max(n_queries, ref_queries), QUERY_WORDS, seed + 1)]
    generate_s = time.perf_counter() - start

    start = time.perf_counter()
    index = BM25Index((t.split() for t in texts), desc=None)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    index.top_k(queries[:n_queries], k)
    topk_s = time.perf_counter() - start
    queries_per_s = n_queries / topk_s
    peak = _memory_mb("VmHWM")
    del index

    # rank_bm25 and our exact dense scores on the same subsample, side by side
    sub = [t.split() for t in texts[:ref_docs]]
    ref = BM25Plus(sub)
    small = BM25Index(sub, desc=None)
    probe = queries[:ref_queries]
    start = time.perf_counter()
    ref_scores = [np.asarray(ref.get_scores(q)) for q in probe]
    ref_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = [small.scores(q) for q in probe]
    ours_s = time.perf_counter() - start
    top_rows, _ = small.top_k(probe, k)
    exact = all(np.array_equal(a, b) for a, b in zip(ours, ref_scores)) and all(
        top_rows[j].tolist() == np.argsort(-s, kind="stable")[:k].tolist() for j, s in enumerate(ref_scores))

    docs_per_s = queries_per_s * n_docs
    ref_docs_per_s = ref_queries * ref_docs / ref_s
    out = {
        "bm25_corpus_size": n_docs, "bm25_vocabulary": VOCABULARY, "bm25_queries": n_queries, "bm25_k": k,
        "bm25_generate_s": generate_s, "bm25_index_s": index_s,
        "bm25_queries_per_s": queries_per_s, "bm25_docs_per_s": docs_per_s,
        "bm25_peak_rss_mb": max(peak, _memory_mb("VmHWM")), "bm25_baseline_rss_mb": baseline,
        "bm25_rank_bm25_subsample": [ref_queries, ref_docs],
        "bm25_rank_bm25_docs_per_s": ref_docs_per_s,
        "bm25_vs_rank_bm25": docs_per_s / ref_docs_per_s,
        "bm25_vs_rank_bm25_same_docs": (ref_s / ours_s) if ours_s > 0 else None,
        "bm25_exact": exact,
    }
    out["bm25_goal_met"] = out["bm25_vs_rank_bm25"] >= GOAL_VS_RANK_BM25 and exact
    return out


def measure_bm25_apart(**kwargs) -> dict:
    """:func:`measure_bm25` in a fresh process, so that ``bm25_peak_rss_mb`` is BM25's own peak."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_bm25, kwds=kwargs)


def table(result: dict) -> str:
    """The BM25 rows of the bench's table."""
    rows = [
        ("BM25 corpus", f"{result['bm25_corpus_size']:,} generated abstracts (Zipf over "
                        f"{result['bm25_vocabulary']:,} words), top {result['bm25_k']} of {result['bm25_queries']} queries"),
        ("BM25 index", f"{result['bm25_index_s']:9.1f} s"),
        ("BM25 top-k", f"{result['bm25_queries_per_s']:9.1f} queries/s = {result['bm25_docs_per_s']:.3g} docs/s"),
        ("rank_bm25", f"{result['bm25_rank_bm25_docs_per_s']:9.3g} docs/s on {result['bm25_rank_bm25_subsample'][1]:,} "
                      f"docs x {result['bm25_rank_bm25_subsample'][0]} queries"),
        ("BM25 / rank_bm25", f"{result['bm25_vs_rank_bm25']:9.1f}   per query-document pair (goal >= "
                             f"{GOAL_VS_RANK_BM25:.0f}); same docs, dense: {result['bm25_vs_rank_bm25_same_docs']:.1f}"),
        ("BM25 equals rank_bm25", f"{result['bm25_exact']!s:>9}   (scores bit for bit, top-k order)"),
        ("BM25 peak RSS", f"{result['bm25_peak_rss_mb']:9.0f} MB (of which {result['bm25_baseline_rss_mb']:.0f} MB "
                          "before the corpus: Python, numpy, torch)"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


__all__ = ["zipf_texts", "measure_bm25", "measure_bm25_apart", "table", "GOAL_VS_RANK_BM25"]
