"""Fixtures of the method tests: two tiny models, a short real training run, queries and candidates."""

from __future__ import annotations

import pytest

from tda.checkpoints import list_checkpoints
from tda.models import make_model
from tda.task import Examples
from tda.train import TrainConfig, train


@pytest.fixture(scope="module", autouse=True)
def _quiet(quiet):
    yield



@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    return make_model("tiny", tiny_tokenizer, seed=0), make_model("tiny", tiny_tokenizer, seed=1)


@pytest.fixture(scope="module")
def queries(tiny_world):
    facts = tiny_world.facts
    return Examples.texts([tiny_world.render(facts[0], 0), tiny_world.render(facts[1], 0)])


@pytest.fixture(scope="module")
def candidates(tiny_world):
    facts = tiny_world.facts
    return Examples.texts([tiny_world.render(facts[0], 1), tiny_world.render(facts[2], 2), tiny_world.render(facts[1], 3),
                           tiny_world.render(facts[3], 1), tiny_world.render(facts[0], 3)])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_tokenizer, task, tiny_world):
    """epoch-000 (no optimizer state), epoch-001, epoch-002 of a short real training run."""
    out = tmp_path_factory.mktemp("ckpts")
    model = make_model("tiny", tiny_tokenizer, seed=2)
    texts = Examples.texts([tiny_world.render(f, 0) for f in tiny_world.facts[:12]])
    train(model, tiny_tokenizer, task, texts, out, TrainConfig(epochs=2, batch_size=4, lr=1e-3))
    return list_checkpoints(out)
