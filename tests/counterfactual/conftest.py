"""Fixtures of the counterfactual tests: quiet single-threaded runs and the known case."""

from __future__ import annotations

import pytest

from .support import known_case


@pytest.fixture(scope="module", autouse=True)
def _quiet(quiet):
    yield


@pytest.fixture(scope="module")
def known(tiny_world, tiny_tokenizer, tmp_path_factory):
    return known_case(tiny_world, tiny_tokenizer, tmp_path_factory.mktemp("known") / "run")
