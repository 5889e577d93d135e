"""Fixtures shared by the FTRACE data tests: a small TREx analogue and a small SYNTH."""

from __future__ import annotations

import pytest

from tda.data import ftrace as ft


@pytest.fixture(scope="module")
def trex(data_world):
    return ft.build_trex(data_world, n_queries=20, known_share=0.4, seed=3)


@pytest.fixture(scope="module")
def synth(data_world):
    return ft.build_synth(data_world, n_facts=30, n_query_facts=5, seed=1)
