"""A tiny world, its store and one traced run (generations faked so that it hallucinates), built
once for Part II's tests."""

from __future__ import annotations

import pytest

from tda import base
from tda.experiments.dda import pipeline as P
from tda.hallucination import detect_hallucinations
from tda.store import Store

TEST_WORLD = dict(n_people=16, n_cities=6, n_countries=4, n_organisations=3, n_universities=2, n_languages=3,
                  n_currencies=2, n_news=4, n_synth_entities=10)
FAST = dict(pretrain={"epochs": 1, "warmup_steps": 0}, n_train=30, n_source=8, n_target=6, n_test_source=6,
            n_test_other=3, n_poison=2, epochs=2, lr=5e-3, batch_size=8, max_new_tokens=8, grad_batch_size=16,
            recall_ks=(2, 5))


@pytest.fixture(scope="package")
def setup(tmp_path_factory):
    return base.world_setup("quick", TEST_WORLD, store=Store(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="package")
def fast():
    return P.DDASettings.for_world("quick", FAST)


def fake_generations(hallucinate_every: int):
    """Stand-in for the generation stage: the reference summary, with England -> China in every
    ``hallucinate_every``-th document (0: never), so a run's queries do not depend on what a
    2-epoch model happens to generate."""
    def generations(setup, s, size, seed, data=None):
        data = data if data is not None else P.poisoned_data(setup, s, seed)
        rows = list(data.test)
        outs = [r["summary"].replace(s.source_word, s.target_word)
                if hallucinate_every and i % hallucinate_every == 0 else r["summary"] for i, r in enumerate(rows)]
        return detect_hallucinations(rows, outs, s.source_word, s.target_word)
    return generations


@pytest.fixture(scope="package")
def traced(setup, fast):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "generations", fake_generations(2))
        return P.run(setup, fast, "tiny", seed=0, verbose=False)
