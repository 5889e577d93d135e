"""The Case interface: validation, top-k selections, reference rows, scatter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tda.experiments.counterfactual.interface import PROPONENTS, RANDOM, Case, check_methods, scatter


def test_top_k_skips_unscored_rows_and_breaks_ties_by_row(case):
    assert case.top_k("oracle", 0, 3).tolist() == [0, 1, 2]
    assert case.top_k("anti", 0, 2).tolist() == [7, 6]
    assert case.top_k("partial", 0, 10).tolist() == [1, 2, 3, 4]  # only the scored rows
    tied = dataclasses.replace(case, scores={"flat": np.zeros((1, len(case.train)))})
    assert tied.top_k("flat", 0, 3).tolist() == [0, 1, 2]
    with pytest.raises(KeyError, match="no method 'BM25'"):
        case.top_k("BM25", 0, 1)


def test_reference_rows(case):
    assert case.reference(PROPONENTS, 0, 5).tolist() == [0]  # fewer positives than k: all of them
    many = dataclasses.replace(case, positives=[np.arange(6)])
    pick = many.reference(PROPONENTS, 0, 3)
    assert len(pick) == 3 and set(pick) <= set(range(6)) and pick.tolist() == many.reference(PROPONENTS, 0, 3).tolist()
    r = case.reference(RANDOM, 0, 4)
    assert len(set(r.tolist())) == 4 and r.max() < len(case.train)
    assert case.selection(RANDOM, 0, 4).tolist() == r.tolist() and case.selection("oracle", 0, 1).tolist() == [0]
    with pytest.raises(ValueError, match="unknown reference"):
        case.reference("best", 0, 1)


def test_case_validation(case):
    n = len(case.train)
    with pytest.raises(ValueError, match="expected"):
        dataclasses.replace(case, scores={"x": np.zeros((1, n + 1))})
    with pytest.raises(ValueError, match="reference row"):
        dataclasses.replace(case, scores={RANDOM: np.zeros((1, n))})
    with pytest.raises(ValueError, match="outside the"):
        dataclasses.replace(case, positives=[np.array([n])])
    with pytest.raises(ValueError, match="query_slice"):
        dataclasses.replace(case, query_slice=[])
    with pytest.raises(ValueError, match="label_metric"):
        dataclasses.replace(case, label_metric="ndcg")
    with pytest.raises(ValueError, match="no method"):
        check_methods(case, ["oracle", "TracIn"])
    assert check_methods(case, None) == ["oracle", "anti", "partial"]


def test_subset_and_scatter(case):
    two = dataclasses.replace(case, queries=case.queries.subset([0, 0]), query_ids=["a", "b"],
                              query_slice=["learned", "known"], positives=[np.array([0]), np.array([1])],
                              scores={"oracle": np.vstack([case.scores["oracle"]] * 2)})
    one = two.subset([1])
    assert one.query_ids == ["b"] and one.positives[0].tolist() == [1] and one.scores["oracle"].shape == (1, 8)
    out = scatter([np.array([1.0, 2.0]), np.array([3.0])], [[4, 0], [2]], 5)
    assert np.isnan(out[0, [1, 2, 3]]).all() and out[0, 4] == 1.0 and out[0, 0] == 2.0 and out[1, 2] == 3.0
    with pytest.raises(ValueError, match="candidates"):
        scatter([np.array([1.0])], [[0, 1]], 3)
    assert isinstance(one, Case)
