"""The world and its base models (``tda.base``): named in params.yml, built once, keyed by their settings."""

from __future__ import annotations

import dataclasses

import json
import re
import shutil

import pytest

from tda import base
from tda.data.world import WorldConfig
from tda.params import ParamsError, pretrain_recipe
from tda.store import Store
from tda.train import TrainConfig

from .conftest import TINY_WORLD


def test_world_config_comes_from_params_yml():
    # params.yml's default world is the code's defaults but for n_news (600: Part II's guard, issue 12)
    assert base.world_config("default") == dataclasses.replace(WorldConfig(), n_news=600)
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


def test_a_checkpoint_folder_deleted_from_an_old_base_entry_is_rebuilt(tmp_path):
    """An entry written before manifests listed their files (issue 15): a checkpoint folder deleted
    by hand went unnoticed, and the epoch before it (here the random initialisation) passed for the
    base model. Now the entry is rebuilt, with a warning naming what is missing."""
    setup = base.world_setup("quick", dict(vars(TINY_WORLD)), store=Store(tmp_path))
    recipe = {"epochs": 1, "warmup_steps": 0}
    folder = base.base_model_dir(setup, "tiny", recipe)
    trained = (folder / "epoch-001" / "model.safetensors").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]  # as written before file lists
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(folder / "epoch-001")
    with pytest.warns(UserWarning, match=r"store entry .* is damaged: .*epoch-001 is missing.*building it again"):
        again = base.base_model_dir(setup, "tiny", recipe)
    assert again == folder
    assert [c.name for c in base.base_checkpoints(setup, "tiny", recipe)] == ["epoch-000", "epoch-001"]
    assert (folder / "epoch-001" / "model.safetensors").read_bytes() == trained  # the same model again


@pytest.mark.parametrize("name", ["world.json", "tokenizer/tokenizer.json"])
def test_a_corrupt_world_or_tokenizer_is_rebuilt_with_a_warning(tmp_path, name):
    """Issue 15: a corrupt world.json or tokenizer.json ended in a bare JSONDecodeError, no path."""
    overrides = dict(vars(TINY_WORLD))
    setup = base.world_setup("quick", overrides, store=Store(tmp_path))
    path = setup.world_dir / name
    good = path.read_bytes()
    path.write_bytes(b"{" + b" " * (len(good) - 1))  # same size: the store's cheap check passes it
    with pytest.warns(UserWarning, match=rf"store entry {re.escape(str(setup.world_dir))} is damaged: "
                                         rf"{re.escape(str(path.parent if 'tokenizer' in name else path))}"):
        again = base.world_setup("quick", overrides, store=Store(tmp_path))
    assert again.world_dir == setup.world_dir and path.read_bytes() == good
    assert again.world.facts == setup.world.facts and again.tokenizer.get_vocab() == setup.tokenizer.get_vocab()
