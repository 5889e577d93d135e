"""Ranking metrics per query, from a score matrix and the relevant candidates, and their
aggregation over seeds.

``scores`` is ``[n_queries, n_candidates]`` (higher ranks first). ``relevant`` is a 2-D NumPy
array of the same shape (booleans or 0/1) or, per query, a list of relevant candidate indices.

Ties. MRR, precision@k and recall@k rank tied candidates *pessimistically* by default
(``ties="pessimistic"``: a relevant candidate tied with irrelevant ones is ranked after them), so
a method cannot profit from the order in which candidates happen to be listed (FTRACE's candidate
sets list the proponents first); ``"optimistic"`` is the opposite. ROC AUC counts a tie as half a
correct pair (the average rank of the Mann-Whitney statistic), exactly as
``sklearn.metrics.roc_auc_score``.

Queries without relevant candidates: MRR, precision@k and recall@k are 0 for them (FTRACE: "0 if
none"). AUC is undefined when a query has no relevant or no irrelevant candidate: by default that
raises ValueError; with ``undefined="skip"`` such a query gets NaN and ``summarise`` reports how
many were skipped.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

DEFAULT_KS = (1, 3, 5, 10, 25)


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a matrix [n_queries, n_candidates], got shape {s.shape}")
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores has no queries or no candidates (shape {s.shape})")
    if not np.isfinite(s).all():
        q = int(np.argwhere(~np.isfinite(s))[0][0])
        raise ValueError(f"scores of query {q} contain NaN or infinity")
    return s


def relevance_matrix(relevant, shape: tuple[int, int]) -> np.ndarray:
    """A boolean ``[n_queries, n_candidates]`` matrix from a 2-D NumPy array (booleans or 0/1)
    or from per-query lists of relevant candidate indices (any other sequence of iterables)."""
    nq, nc = shape
    if isinstance(relevant, np.ndarray) and relevant.ndim == 2:
        rel = relevant
        if rel.shape != (nq, nc):
            raise ValueError(f"relevance matrix has shape {rel.shape}, scores {shape}")
        if rel.dtype != bool:
            if not np.isin(rel, (0, 1)).all():
                raise ValueError("a relevance matrix must hold booleans or 0/1")
            rel = rel.astype(bool)
        return rel
    lists = list(relevant)
    if len(lists) != nq:
        raise ValueError(f"relevance lists for {len(lists)} queries, scores for {nq}")
    rel = np.zeros((nq, nc), dtype=bool)
    for q, idx in enumerate(lists):
        idx = np.asarray(list(idx), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= nc):
            raise ValueError(f"query {q} lists relevant candidate {int(idx.max() if idx.max() >= nc else idx.min())}"
                             f" outside 0..{nc - 1}")
        rel[q, idx] = True
    return rel


def _prepare(scores, relevant) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores)
    return s, relevance_matrix(relevant, s.shape)


def ranking(scores, relevant, ties: str = "pessimistic") -> np.ndarray:
    """Per query, the relevance of the candidates in ranked order (``[n_queries, n_candidates]``)."""
    s, rel = _prepare(scores, relevant)
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    tiebreak = rel if ties == "pessimistic" else ~rel  # False sorts first among equal scores
    out = np.empty_like(rel)
    for q in range(s.shape[0]):
        order = np.lexsort((tiebreak[q], -s[q]))
        out[q] = rel[q, order]
    return out


def mrr(scores, relevant, ties: str = "pessimistic") -> np.ndarray:
    """Reciprocal rank of the first relevant candidate per query (0 if the query has none)."""
    ranked = ranking(scores, relevant, ties)
    first = ranked.argmax(axis=1)
    return np.where(ranked.any(axis=1), 1.0 / (first + 1), 0.0)


def _check_k(k: int, n: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(int(k), n)


def precision_at_k(scores, relevant, k: int, ties: str = "pessimistic") -> np.ndarray:
    """Share of the top ``k`` candidates that are relevant, per query (k is capped at the number
    of candidates, so the denominator is ``min(k, n_candidates)``)."""
    ranked = ranking(scores, relevant, ties)
    k = _check_k(k, ranked.shape[1])
    return ranked[:, :k].sum(axis=1) / k


def recall_at_k(scores, relevant, k: int, ties: str = "pessimistic") -> np.ndarray:
    """Share of the relevant candidates found in the top ``k``, per query (0 if none exist)."""
    ranked = ranking(scores, relevant, ties)
    k = _check_k(k, ranked.shape[1])
    total = ranked.sum(axis=1)
    return np.divide(ranked[:, :k].sum(axis=1), total, out=np.zeros(len(total)), where=total > 0)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x))
    start = 0
    for end in np.append(np.flatnonzero(np.diff(sorted_x)) + 1, len(x)):
        ranks[order[start:end]] = (start + end + 1) / 2  # mean of the 1-based ranks start+1..end
        start = end
    return ranks


def roc_auc(scores, relevant, undefined: str = "raise") -> np.ndarray:
    """ROC AUC of each query's ranking (relevant = positive), ties counted as half.

    Equals ``sklearn.metrics.roc_auc_score(relevant[q], scores[q])``. A query whose candidates
    are all relevant or all irrelevant raises ValueError, or gets NaN with ``undefined="skip"``.
    """
    if undefined not in ("raise", "skip"):
        raise ValueError(f"undefined must be 'raise' or 'skip', got {undefined!r}")
    s, rel = _prepare(scores, relevant)
    out = np.full(s.shape[0], np.nan)
    for q in range(s.shape[0]):
        n_pos = int(rel[q].sum())
        n_neg = rel.shape[1] - n_pos
        if n_pos == 0 or n_neg == 0:
            if undefined == "raise":
                kind = "no relevant" if n_pos == 0 else "no irrelevant"
                raise ValueError(f"AUC of query {q} is undefined: it has {kind} candidates "
                                 "(use undefined='skip' to leave it out)")
            continue
        ranks = _average_ranks(s[q])
        out[q] = (ranks[rel[q]].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def _mask(name: str, values, n: int) -> np.ndarray:
    m = np.asarray(values)
    if m.ndim != 1 or len(m) != n:
        raise ValueError(f"{name} must be one flag per candidate ({n}), got shape {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans or 0/1")
        m = m.astype(bool)
    return m


def set_auc(scores, labels) -> float:
    """ROC AUC of one ranking of all candidates: ``scores`` has one value per candidate (e.g. one
    ranking for a whole error set, DDA's README pipeline and CEA), ``labels`` one flag per
    candidate (positive = True). Ties count half; both classes must be present."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"set-level scores must be one value per candidate, got shape {s.shape}")
    return float(roc_auc(s[None, :], _mask("labels", labels, len(s))[None, :])[0])


def hard_negative_auc(scores, positive, negative) -> np.ndarray:
    """AUC of the positives against a chosen subset of negatives only, per query.

    ``scores``: ``[n_queries, n_candidates]`` or one value per candidate (a set-level ranking,
    returned as one query); ``positive`` and ``negative``: one flag per candidate, shared by all
    queries (e.g. the poisoned documents against the genuine documents whose summaries name the
    target word). Candidates in neither set are left out. The two sets must be disjoint and
    non-empty. Ties count half, as in :func:`roc_auc`.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2:
        raise ValueError(f"scores must be [n_queries, n_candidates] or one per candidate, got shape {s.shape}")
    pos = _mask("positive", positive, s.shape[1])
    neg = _mask("negative", negative, s.shape[1])
    if (pos & neg).any():
        raise ValueError(f"candidate {int(np.flatnonzero(pos & neg)[0])} is both positive and negative")
    if not pos.any() or not neg.any():
        raise ValueError(f"hard-negative AUC needs positives and negatives (got {int(pos.sum())} and {int(neg.sum())})")
    keep = pos | neg
    rel = np.broadcast_to(pos[keep], (s.shape[0], int(keep.sum())))
    return roc_auc(s[:, keep], np.ascontiguousarray(rel))


def bootstrap_ci(per_seed: Sequence[Sequence[float]], level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): the mean over seeds of each seed's mean over its queries, and a
    percentile confidence interval from a two-level bootstrap -- resample the seeds with
    replacement, then each drawn seed's queries with replacement (a fresh draw each time a seed is
    drawn), and take the mean of means.

    ``per_seed``: one sequence of per-query values per seed (e.g. AUC per traced query; a seed's
    queries may differ in number). Seeds vary the world, the poison and the training run, queries
    the test prompt, so both sources of variation enter the interval. Values must be finite;
    every seed needs at least one query. Deterministic for a given ``seed``.
    """
    groups = [np.asarray(v, dtype=np.float64).ravel() for v in per_seed]
    if not groups:
        raise ValueError("bootstrap_ci needs at least one seed")
    for i, g in enumerate(groups):
        if g.size == 0:
            raise ValueError(f"seed {i} has no query values")
        if not np.isfinite(g).all():
            raise ValueError(f"seed {i} has NaN or infinite values")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n_boot, n_seeds = int(n_boot), len(groups)
    rng = np.random.default_rng(seed)
    picks = rng.integers(n_seeds, size=(n_boot, n_seeds))
    # query-resample means of seed s for every (replicate, slot), so a seed drawn twice gets two draws
    query_means = np.stack([g[rng.integers(g.size, size=(n_boot, n_seeds, g.size))].mean(-1) for g in groups])
    boot = query_means[picks, np.arange(n_boot)[:, None], np.arange(n_seeds)[None, :]].mean(1)
    alpha = (1.0 - level) / 2
    estimate = float(np.mean([g.mean() for g in groups]))
    return estimate, float(np.quantile(boot, alpha)), float(np.quantile(boot, 1.0 - alpha))


def evaluate(scores, relevant, ks: Iterable[int] = DEFAULT_KS, auc: bool = False, ties: str = "pessimistic",
             undefined: str = "raise") -> dict[str, np.ndarray]:
    """Per-query metric arrays: ``mrr``, ``precision@k``, ``recall@k`` (and ``auc`` if asked)."""
    out = {"mrr": mrr(scores, relevant, ties)}
    for k in ks:
        out[f"precision@{k}"] = precision_at_k(scores, relevant, k, ties)
        out[f"recall@{k}"] = recall_at_k(scores, relevant, k, ties)
    if auc:
        out["auc"] = roc_auc(scores, relevant, undefined)
    return out


def summarise(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-query metric (NaN = skipped query), plus ``n_queries`` and ``<m>_skipped``."""
    out: dict[str, float] = {}
    for name, values in per_query.items():
        v = np.asarray(values, dtype=np.float64)
        kept = v[~np.isnan(v)]
        out[name] = float(kept.mean()) if kept.size else float("nan")
        if kept.size != v.size:
            out[f"{name}_skipped"] = int(v.size - kept.size)
        out.setdefault("n_queries", int(v.size))
    return out


def chance_mrr(n_candidates: int, n_relevant: int) -> float:
    """Expected MRR of a uniformly random order of ``n_candidates`` holding ``n_relevant`` relevant ones.

    The first relevant candidate is at rank k with probability C(N-k, R-1) / C(N, R); 0 when R = 0.
    """
    n, r = int(n_candidates), int(n_relevant)
    if n < 1 or not 0 <= r <= n:
        raise ValueError(f"need 1 <= n_candidates and 0 <= n_relevant <= n_candidates, got {n} and {r}")
    if r == 0:
        return 0.0
    p, total = r / n, 0.0  # p = P(first relevant at rank k), updated k -> k + 1
    for k in range(1, n - r + 2):
        total += p / k
        p *= (n - k - r + 1) / (n - k) if n - k > 0 else 0.0
    return total


def chance_at_k(n_candidates: int, n_relevant: int, k: int) -> tuple[float, float]:
    """Expected (precision@k, recall@k) of a uniformly random order (k capped at the candidates, as
    ``precision_at_k``): min(k, N) R / N relevant expected in the top k."""
    n, r = int(n_candidates), int(n_relevant)
    if n < 1 or not 0 <= r <= n:
        raise ValueError(f"need 1 <= n_candidates and 0 <= n_relevant <= n_candidates, got {n} and {r}")
    k = _check_k(k, n)
    found = k * r / n
    return found / k, (found / r if r else 0.0)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) over seeds."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to aggregate")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def aggregate_seeds(results: Sequence[Mapping[str, float]]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, std)}`` over per-seed summaries (metrics present in every seed)."""
    results = list(results)
    if not results:
        raise ValueError("no seeds to aggregate")
    keys = [k for k in results[0] if all(k in r for r in results) and not k.endswith("_skipped")
            and k != "n_queries"]
    return {k: mean_std([r[k] for r in results]) for k in keys}


__all__ = ["DEFAULT_KS", "relevance_matrix", "ranking", "mrr", "precision_at_k", "recall_at_k", "roc_auc",
           "set_auc", "hard_negative_auc", "bootstrap_ci", "evaluate", "summarise", "chance_mrr", "chance_at_k",
           "mean_std", "aggregate_seeds"]
