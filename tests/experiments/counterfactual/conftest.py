"""Fixtures of Part III's tests: the known case (tests/counterfactual/support.py) as a Case."""

from __future__ import annotations

import numpy as np
import pytest

from tda.experiments.counterfactual.interface import Case
from tda.task import exact_match
from tests.counterfactual.support import known_case


@pytest.fixture(scope="module", autouse=True)
def _quiet(quiet):
    yield


@pytest.fixture(scope="module")
def known(tiny_world, tiny_tokenizer, tmp_path_factory):
    return known_case(tiny_world, tiny_tokenizer, tmp_path_factory.mktemp("known") / "run")


def known_as_case(known) -> Case:
    """The known case with three methods: "oracle" ranks the teaching example first, "anti" last,
    and "partial" scores only rows 1-4 (a candidate set without the teacher)."""
    n = len(known.train)
    oracle = np.arange(n, 0, -1, dtype=float)[None, :]  # row 0 (the teacher) highest
    partial = np.full((1, n), np.nan)
    partial[0, 1:5] = [4.0, 3.0, 2.0, 1.0]

    def present(model, rows):
        return exact_match(model, known.task, known.query.subset(list(rows))).numpy()

    return Case(name="known", seed=0, run_key={"test": "known case"}, base=known.base, final=known.final,
                task=known.task, train=known.train, config=known.config, queries=known.query, counterparts=None,
                query_ids=["q0"], query_slice=["learned"], positives=[np.array([known.teacher])],
                scores={"oracle": oracle, "anti": -oracle, "partial": partial}, present=present, label_metric="mrr")


@pytest.fixture(scope="module")
def case(known):
    return known_as_case(known)
