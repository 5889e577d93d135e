"""The baselines (``tda.methods.baselines``): random scores and Random-Target."""

import numpy as np
import pytest

from tda import methods as M
from tda.task import Examples


def test_random_baselines(queries, candidates):
    a = M.random_scores(queries, candidates, seed=3)
    assert a.shape == (2, 5) and np.array_equal(a, M.random_scores(queries, candidates, seed=3))
    assert not np.array_equal(a, M.random_scores(queries, candidates, seed=4))
    answers = ["Paris", "Rome"]
    cands = ["Rome", "Paris", "Oslo", "Paris", "Rome "]
    rt = M.random_target(answers, cands, seed=0)
    for q, ans in enumerate(answers):
        same = [j for j, c in enumerate(cands) if c.strip() == ans]
        ranked = np.argsort(-rt[q])
        assert set(ranked[: len(same)]) == set(same)
    ex = Examples(["q1", "q2"], answers)
    assert np.array_equal(M.random_target(ex, Examples([""] * 5, cands), seed=0), rt)
    with pytest.raises(ValueError, match="empty"):
        M.random_target([], cands)
    with pytest.raises(ValueError, match="empty"):
        M.random_scores(queries, [])
