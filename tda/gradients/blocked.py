"""Query x candidate scores over feature files in blocks, so that no full score matrix is ever held.

At FTRACE's size (31,479 queries x 1,560,453 abstracts) the score matrix would take 393 GB in
float64; the paper only needs each query's top candidates (its top 250 over all abstracts) or the
scores of given (query, candidate) pairs (its candidate sets). Both are computed here block by
block from feature matrices (``numpy`` arrays or the memmap files of
``tda.gradients.features``/``tda.gradients.shard``):

- :func:`blocked_topk`: each query's ``k`` best candidates, merging a running top-k with every
  candidate block; memory is about ``query_block x candidate_block`` scores plus the two blocks'
  features (``max_block_bytes`` bounds it);
- :func:`pair_scores`: the scores of given pairs, gathered in blocks of pairs;
- :func:`blocked_scores`: the blocks themselves, for any other reduction.

A score is ``sum_t w_t <q_t, c_t>`` over one or more *terms* ``t`` (e.g. one per checkpoint: TracIn
with projected features; ``w_t`` the learning-rate weights, or ``1/T`` for FTRACE's mean), with
``normalize=True`` unit-normalising every row of every term first (the cosine variants). Blocks
are multiplied with ``torch`` on ``device`` (the CPU by default; a CUDA device where there is
one) in ``dtype`` (float64 by default: the same numbers as the dense product up to summation
order; float32 is about twice as fast). Ties in the top-k are broken by the lower candidate row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..progress import progress
from .features import load_features

MAX_BLOCK_BYTES = 256 << 20
QUERY_BLOCK = 1024


@dataclass
class TopK:
    """Per query, the ``k`` best candidates: ``scores[i]`` (best first) and their rows ``indices[i]``."""

    scores: np.ndarray
    indices: np.ndarray


def _matrix(x, what: str) -> np.ndarray:
    m = load_features(x) if isinstance(x, (str, Path)) else x
    if not hasattr(m, "ndim") or m.ndim != 2:
        raise ValueError(f"{what} must be a 2-D feature matrix or a feature file, got {getattr(m, 'shape', type(m))}")
    return m


def _terms(queries, candidates, weights) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    qs = list(queries) if isinstance(queries, (list, tuple)) else [queries]
    cs = list(candidates) if isinstance(candidates, (list, tuple)) else [candidates]
    if len(qs) != len(cs) or not qs:
        raise ValueError(f"{len(qs)} query feature matrices but {len(cs)} candidate ones: give one of each per term")
    qs = [_matrix(q, f"query features {i}") for i, q in enumerate(qs)]
    cs = [_matrix(c, f"candidate features {i}") for i, c in enumerate(cs)]
    for i, (q, c) in enumerate(zip(qs, cs)):
        if q.shape[1] != c.shape[1]:
            raise ValueError(f"term {i}: query features have {q.shape[1]} columns, candidate features {c.shape[1]}: "
                             "they were computed with other parameters or projections")
        if q.shape[0] != qs[0].shape[0] or c.shape[0] != cs[0].shape[0]:
            raise ValueError(f"term {i} has {q.shape[0]} x {c.shape[0]} rows, term 0 {qs[0].shape[0]} x "
                             f"{cs[0].shape[0]}: every term must hold the same queries and candidates")
    w = [1.0] * len(qs) if weights is None else [float(v) for v in weights]
    if len(w) != len(qs):
        raise ValueError(f"{len(w)} weights for {len(qs)} terms")
    return qs, cs, w


def _block(m: np.ndarray, rows, normalize: bool, device, dtype) -> torch.Tensor:
    host = np.array(m[rows], dtype=np.float64 if dtype == torch.float64 else np.float32)  # a writable copy
    t = torch.from_numpy(host).to(device=device, dtype=dtype)
    if normalize:
        norms = t.norm(dim=1, keepdim=True)
        t = torch.where(norms > 0, t / norms.clamp(min=torch.finfo(dtype).tiny), torch.zeros_like(t))
    return t


def _candidate_block(n_q: int, width: int, itemsize: int, max_block_bytes: int) -> int:
    """Candidates per block such that scores (n_q x c) plus both blocks' features fit the budget."""
    room = max_block_bytes - n_q * width * itemsize
    return max(1, room // (itemsize * (n_q + width)))


def blocked_scores(queries, candidates, *, weights: Sequence[float] | None = None, normalize: bool = False,
                   query_block: int = QUERY_BLOCK, candidate_block: int | None = None,
                   max_block_bytes: int = MAX_BLOCK_BYTES, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float64, desc: str | None = "scoring blocks"
                   ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Yield ``(query rows, candidate rows, scores)`` block by block (scores a tensor on ``device``).

    ``queries``/``candidates``: a feature matrix or file each, or equal-length lists (one per
    term). ``candidate_block`` defaults to what ``max_block_bytes`` allows.
    """
    qs, cs, w = _terms(queries, candidates, weights)
    n_q, n_c = qs[0].shape[0], cs[0].shape[0]
    if query_block < 1:
        raise ValueError(f"query_block must be >= 1, got {query_block}")
    width = sum(q.shape[1] for q in qs)
    itemsize = torch.finfo(dtype).bits // 8
    step_c = candidate_block or _candidate_block(min(query_block, n_q), width, itemsize, max_block_bytes)
    starts = [(q0, c0) for q0 in range(0, n_q, query_block) for c0 in range(0, n_c, step_c)]
    held_q, held_rows = None, None
    for q0, c0 in progress(starts, desc=desc, total=len(starts)) if desc else starts:
        q_rows, c_rows = slice(q0, min(q0 + query_block, n_q)), slice(c0, min(c0 + step_c, n_c))
        if held_rows != q_rows:
            held_q = [_block(q, q_rows, normalize, device, dtype) for q in qs]
            held_rows = q_rows
        score = None
        for qt, c, wt in zip(held_q, cs, w):
            part = qt @ _block(c, c_rows, normalize, device, dtype).T
            score = part.mul_(wt) if score is None else score.add_(part, alpha=wt)
        yield q_rows, c_rows, score


def blocked_topk(queries, candidates, k: int, *, weights: Sequence[float] | None = None, normalize: bool = False,
                 query_block: int = QUERY_BLOCK, candidate_block: int | None = None,
                 max_block_bytes: int = MAX_BLOCK_BYTES, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, desc: str | None = "top-k blocks") -> TopK:
    """Each query's ``k`` highest-scoring candidates (``k`` at most the number of candidates), best
    first, ties to the lower row; the same as sorting each row of the dense score matrix."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    qs, cs, _ = _terms(queries, candidates, weights)
    n_q, k = qs[0].shape[0], min(k, cs[0].shape[0])
    scores = np.empty((n_q, k), dtype=np.float64)
    indices = np.empty((n_q, k), dtype=np.int64)
    best: tuple[torch.Tensor, torch.Tensor] | None = None
    current = None
    for q_rows, c_rows, block in blocked_scores(queries, candidates, weights=weights, normalize=normalize,
                                                query_block=query_block, candidate_block=candidate_block,
                                                max_block_bytes=max_block_bytes, device=device, dtype=dtype, desc=desc):
        if current != q_rows:
            if best is not None:
                _store(best, current, scores, indices)
            best, current = None, q_rows
        rows = torch.arange(c_rows.start, c_rows.stop, device=block.device).expand(block.shape[0], -1)
        top = _top(block, rows, k)  # the block's own top k hold every candidate of it that can win
        best = top if best is None else _top(torch.cat([best[0], top[0]], 1), torch.cat([best[1], top[1]], 1), k)
    if best is not None:
        _store(best, current, scores, indices)
    return TopK(scores, indices)


def _ordered(scores: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row sorted best first, equal scores by the lower candidate row (two stable sorts)."""
    by_row = torch.argsort(rows, dim=1, stable=True)
    scores, rows = scores.gather(1, by_row), rows.gather(1, by_row)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    return scores.gather(1, order), rows.gather(1, order)


def _top(scores: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best of each row, best first, ties to the lower candidate row.

    ``torch.topk`` selects ``k + 1`` in linear time; only a row whose ``(k+1)``-th score equals its
    k-th (a tie across the cut, rare with real-valued features) is fully sorted, so the choice among
    tied candidates is the lower row, exactly as a stable sort of the dense row.
    """
    if scores.shape[1] <= k:
        return _ordered(scores, rows)
    values, pos = torch.topk(scores, k + 1, dim=1)
    chosen, chosen_rows = values[:, :k].clone(), rows.gather(1, pos[:, :k])
    tied = (values[:, k] == values[:, k - 1]).nonzero().flatten()
    if len(tied):
        full_scores, full_rows = _ordered(scores[tied], rows[tied])
        chosen[tied], chosen_rows[tied] = full_scores[:, :k], full_rows[:, :k]
    return _ordered(chosen, chosen_rows)


def _store(best, q_rows: slice, scores: np.ndarray, indices: np.ndarray) -> None:
    scores[q_rows] = best[0].double().cpu().numpy()
    indices[q_rows] = best[1].cpu().numpy()


def pair_scores(queries, candidates, query_rows, candidate_rows, *, weights: Sequence[float] | None = None,
                normalize: bool = False, block: int = 65536, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Scores of the pairs ``(query_rows[j], candidate_rows[j])`` (FTRACE's candidate sets), ``block``
    pairs at a time; float64 array of ``len(query_rows)``."""
    qs, cs, w = _terms(queries, candidates, weights)
    qi, ci = np.asarray(query_rows, dtype=np.int64), np.asarray(candidate_rows, dtype=np.int64)
    if qi.shape != ci.shape or qi.ndim != 1:
        raise ValueError(f"query_rows and candidate_rows must be 1-D and of one length, got {qi.shape} and {ci.shape}")
    for rows, n, what in ((qi, qs[0].shape[0], "query"), (ci, cs[0].shape[0], "candidate")):
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"{what} row {rows[(rows < 0) | (rows >= n)][0]} is outside the {n} {what} features")
    out = np.empty(len(qi), dtype=np.float64)
    for start in range(0, len(qi), block):
        part = slice(start, start + block)
        total = None
        for q, c, wt in zip(qs, cs, w):
            a = _block(q, qi[part], normalize, device, dtype)
            b = _block(c, ci[part], normalize, device, dtype)
            dots = (a * b).sum(dim=1)
            total = dots.mul_(wt) if total is None else total.add_(dots, alpha=wt)
        out[part] = total.double().cpu().numpy() if total is not None else 0.0
    return out


__all__ = ["TopK", "blocked_scores", "blocked_topk", "pair_scores", "MAX_BLOCK_BYTES", "QUERY_BLOCK"]
