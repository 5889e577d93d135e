"""LDS (tda.counterfactual.lds) against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from tda.counterfactual import lds_per_query, lds_summary, random_subsets, spearman, summed_scores


def test_random_subsets():
    m = random_subsets(10, 4, seed=3)
    assert m.shape == (4, 10) and (m.sum(1) == 5).all()
    assert np.array_equal(m, random_subsets(10, 4, seed=3))
    assert np.array_equal(random_subsets(10, 6, seed=3)[:4], m)  # more subsets keep the first ones
    assert not np.array_equal(m, random_subsets(10, 4, seed=4))
    assert (random_subsets(9, 2, seed=0, fraction=1 / 3).sum(1) == 3).all()
    with pytest.raises(ValueError, match="fraction"):
        random_subsets(10, 2, seed=0, fraction=1.0)
    with pytest.raises(ValueError, match="nothing would vary"):
        random_subsets(3, 2, seed=0, fraction=0.1)


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    # ties take average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4) -> Pearson of the ranks
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
    assert spearman([0, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_lds_on_a_toy_case_by_hand():
    # 2 queries x 4 training examples; query 1 has one unscored example (NaN = 0)
    scores = np.array([[3.0, 1.0, 0.0, -1.0], [1.0, np.nan, 2.0, 0.5]])
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 1]], dtype=bool)
    predicted = summed_scores(scores, masks)
    assert predicted[:, 0].tolist() == [4.0, 1.0, 2.0, -1.0]
    assert predicted[:, 1].tolist() == [1.0, 2.0, 1.5, 2.5]
    measured = np.array([[-0.1, -2.0], [-1.0, -1.0], [-0.5, -3.0], [-2.0, -0.5]])
    got = lds_per_query(scores, masks, measured)
    # query 0: predicted ranks (4, 2, 3, 1), measured ranks (4, 2, 3, 1) -> 1
    # query 1: predicted ranks (1, 3, 2, 4), measured ranks (2, 3, 1, 4): d^2 = 1 + 0 + 1 + 0 -> 1 - 12/60
    assert got == pytest.approx([1.0, 0.8])
    with pytest.raises(ValueError, match="measured outcomes"):
        lds_per_query(scores, masks, measured[:3])


def test_lds_summary():
    out = lds_summary(np.array([0.2, 0.4, np.nan, 0.6]), n_boot=500)
    assert out["mean"] == pytest.approx(0.4) and out["queries"] == 3 and out["undefined"] == 1
    assert out["low"] <= out["mean"] <= out["high"]
    none = lds_summary(np.array([np.nan]))
    assert np.isnan(none["mean"]) and none["queries"] == 0
