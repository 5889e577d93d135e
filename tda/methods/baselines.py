"""Baselines that know nothing about the model: random scores and FTRACE's Random-Target."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..task import Examples


def _sized(values, what: str) -> int:
    try:
        n = len(values)
    except TypeError as err:
        raise TypeError(f"{what} must be a sized collection (Examples or a list)") from err
    if n == 0:
        raise ValueError(f"{what} is empty")
    return n


def random_scores(queries, candidates, seed: int = 0) -> np.ndarray:
    """Uniform random scores ``[n_queries, n_candidates]`` from a seeded generator (chance level)."""
    nq, nc = _sized(queries, "queries"), _sized(candidates, "candidates")
    return np.random.default_rng(seed).random((nq, nc))


def _answers(values, what: str) -> list[str]:
    if isinstance(values, Examples):
        return [t.strip() for t in values.targets]
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of answers (or Examples), not a single string")
    return [str(v).strip() for v in values]


def random_target(queries: Examples | Sequence[str], candidates: Examples | Sequence[str],
                  seed: int = 0) -> np.ndarray:
    """FTRACE's Random-Target: candidates with the query's answer first, in random order.

    ``queries`` and ``candidates`` are ``Examples`` (their targets are the answers) or lists of
    answer strings; answers are compared after stripping whitespace. Score = 1 + u for a
    candidate with the same answer, u otherwise, with u ~ U[0, 1) seeded.
    """
    _sized(queries, "queries")
    _sized(candidates, "candidates")
    qa, ca = _answers(queries, "queries"), _answers(candidates, "candidates")
    same = np.asarray(qa, dtype=object)[:, None] == np.asarray(ca, dtype=object)[None, :]
    return same.astype(np.float64) + random_scores(qa, ca, seed)
