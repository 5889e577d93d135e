"""The quick book's Part III results files (the session's quick_book build, tests/conftest.py)."""

from __future__ import annotations

import json

import pytest

from tda.experiments.counterfactual.analysis import check_results

CHAPTERS = ("counterfactual_ftrace", "counterfactual_dda")


@pytest.mark.slow
@pytest.mark.parametrize("name", CHAPTERS)
def test_quick_book_writes_part_iii_results(quick_book, name):
    """Each Part III chapter traced something in the quick profile and wrote tail-patch by k,
    leave-k-out and LDS per data set and method, its claims, and its stage timings (the budget, 4
    minutes for the part on two cores, is measured and reported, not asserted: timings on a shared
    machine are noise)."""
    path = quick_book["results"] / f"{name}.json"
    data = json.loads(path.read_text())
    assert data.get("traced", True), f"{path.name}: the quick run traced nothing"
    check_results(data, path.name)
    stages = [s for s in data["seconds"]["wall"] if s.startswith(("tail-patch", "retrain", "leave-k-out", "LDS"))]
    assert stages, f"{path.name}: no Part III stage timed"
