"""A tiny world, its store and two runs (TREx analogue, SYNTH), built once for Part I's tests."""

from __future__ import annotations

import pytest

from tda import base
from tda.experiments.ftrace.pipeline import FtraceSettings, prepare
from tda.store import Store

TEST_WORLD = dict(n_people=16, n_cities=6, n_countries=4, n_organisations=3, n_universities=2, n_languages=3,
                  n_currencies=2, n_news=4, n_synth_entities=30)
RELATIONS = ("P19", "P27", "P36")
FAST = dict(size="tiny", pretrain={"epochs": 2}, relations=RELATIONS, epochs=2, lr=5e-3, ft_checkpoints=(0.25, 1.0),
            pt_checkpoints=(0.1, 0.5), k=4, m=3, r=3, grad_batch_size=16)
TREX = {**FAST, "n_queries": 12, "known_share": 0.5, "max_learned": None, "max_known": None, "max_other": None}


@pytest.fixture(scope="package")
def setup(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("store"))
    return base.world_setup("quick", TEST_WORLD, store=store)


@pytest.fixture(scope="package")
def trex_run(setup):
    return prepare(setup, FtraceSettings.for_world("quick", "trex", TREX), seed=0, verbose=False)


@pytest.fixture(scope="package")
def synth_run(setup):
    s = FtraceSettings.for_world("quick", "synth", {**FAST, "n_queries": 2, "synth_facts": 12})
    return prepare(setup, s, seed=1, verbose=False)
