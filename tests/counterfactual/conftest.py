"""Fixtures of the counterfactual tests: quiet single-threaded runs and the known case."""

from __future__ import annotations

import pytest
import torch

from .support import known_case


@pytest.fixture(scope="module", autouse=True)
def _quiet():
    mp = pytest.MonkeyPatch()
    mp.setenv("TDA_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="module")
def known(tiny_world, tiny_tokenizer, tmp_path_factory):
    return known_case(tiny_world, tiny_tokenizer, tmp_path_factory.mktemp("known") / "run")
