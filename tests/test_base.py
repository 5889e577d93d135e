"""The world and its base models (``tda.base``): named in params.yml, built once, keyed by their settings."""

from __future__ import annotations

import pytest

from tda import base
from tda.data.world import WorldConfig
from tda.params import ParamsError, pretrain_recipe
from tda.store import Store
from tda.train import TrainConfig

from .conftest import TINY_WORLD


def test_world_config_comes_from_params_yml():
    assert base.world_config("default") == WorldConfig()
    quick = base.world_config("quick")
    assert quick.n_people == 60 and quick != WorldConfig()
    assert base.world_config("quick", {"seed": 3}).seed == 3
    with pytest.raises(ParamsError, match="unknown world 'nosuch'; known worlds: quick, default"):
        base.world_config("nosuch")
    with pytest.raises(ParamsError, match=r"unknown world settings \['n_peple'\]"):
        base.world_config("quick", {"n_peple": 3})


def test_world_setup_builds_once_and_pretrains_by_the_recipe(tmp_path, tiny_world):
    store = Store(tmp_path)
    overrides = {k: v for k, v in vars(TINY_WORLD).items()}
    setup = base.world_setup("quick", overrides, store=store)
    assert setup.preset == "quick" and setup.world_config == TINY_WORLD
    assert setup.world.facts == tiny_world.facts
    again = base.world_setup("quick", overrides, store=store)
    assert again.world_dir == setup.world_dir and len([p for p in (tmp_path / "world").iterdir() if p.is_dir()]) == 1
    assert base.world_params(setup.world_config)["world"]["n_people"] == TINY_WORLD.n_people
    # pre-training: the size's recipe in params.yml, with single settings overridden
    config = base.pretrain_config(setup, "tiny", {"epochs": 1})
    assert config == TrainConfig(**{**pretrain_recipe("tiny"), "epochs": 1})
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        base.pretrain_config(setup, "huge")
    with pytest.raises(ParamsError, match="unknown pre-training settings"):
        base.pretrain_config(setup, "tiny", {"epoch": 1})
    ckpts = base.base_checkpoints(setup, "tiny", {"epochs": 1, "warmup_steps": 0})
    assert [c.name for c in ckpts] == ["epoch-000", "epoch-001"]
    assert len(base.pretrain_history(setup, "tiny", {"epochs": 1, "warmup_steps": 0})) == 1
    model, tokenizer = base.load_base(setup, "tiny", {"epochs": 1, "warmup_steps": 0})
    assert model.config.n_layer == 2 and len(tokenizer) == len(setup.tokenizer)
    assert base.base_model_dir(setup, "tiny", {"epochs": 1, "warmup_steps": 0}) == ckpts[0].parent  # reused
