"""Part II's settings (``tda.experiments.dda.settings``): LoRA fine-tuning as an option, validated, and the
store keys of full fine-tuning unchanged by it."""

import pytest
from tda.store import param_key

from tda.experiments.dda import pipeline as P
from tda.experiments.dda.settings import DDASettings
from tda.lora import LORA_GROUP

from .conftest import fake_generations


def test_the_pipeline_re_exports_the_settings():
    assert P.DDASettings is DDASettings


def test_full_fine_tuning_is_the_default_and_takes_gradients_over_its_group():
    s = DDASettings()
    assert s.finetune == "full" and not s.lora and s.lora_config(0) is None
    assert s.gradient_group == "all" and s.finetune_key() == {}
    assert DDASettings(group="block.0").gradient_group == "block.0"


def test_lora_settings_give_the_adapters_and_their_group():
    s = DDASettings.for_world("quick", {"finetune": "lora", "lora_rank": 4, "lora_alpha": 8})
    cfg = s.lora_config(3)
    assert (cfg.rank, cfg.alpha, cfg.mlp) == (4, 8.0, False)
    assert cfg.seed != s.lora_config(4).seed  # each seed its own draw of A
    assert s.gradient_group == LORA_GROUP
    assert s.finetune_key()["finetune"]["rank"] == 4


@pytest.mark.parametrize("bad, match", [
    ({"finetune": "qlora"}, r"finetune must be one of \['full', 'lora'\], got 'qlora'"),
    ({"finetune": "lora", "lora_rank": 0}, "lora_rank must be a positive whole number, got 0"),
    ({"finetune": "lora", "lora_rank": 2.5}, "lora_rank must be a positive whole number"),
    ({"finetune": "lora", "lora_alpha": float("nan")}, "lora_alpha must be a finite number > 0"),
    ({"finetune": "lora", "lora_alpha": -1}, "lora_alpha must be a finite number > 0"),
    ({"finetune": "lora", "lora_mlp": "yes"}, "lora_mlp must be True or False"),
    ({"finetune": "lora", "group": "block.0"}, "group='block.0' with finetune='lora'"),
    ({"lora_rank": 4}, r"\{'lora_rank': 4\} apply to LoRA fine-tuning only"),
])
def test_bad_fine_tuning_settings_are_errors_naming_them(bad, match):
    with pytest.raises(ValueError, match=match):
        DDASettings.for_world("quick", bad)


# Every store key of the test world's traced run with full fine-tuning, computed on main at 63b90ac
# (before LoRA existed). LoRA settings must not enter them: each stored artifact of the book keeps its key.
KEYS_BEFORE_LORA = {('base', '8f3f37c74e48c06f'), ('dda-cea', '15e44913a7af90d4'), ('dda-dots', '457b7853d05426e3'),
                    ('dda-finetune', 'bef422cd138d7097'), ('dda-gram', 'fe60e3eaea1079c7'),
                    ('dda-label-check', '40cf4993722e3665'), ('dda-losses', 'bef422cd138d7097'),
                    ('dda-pairs', '59910e1cdce2870e')}


def _keys(setup, settings, monkeypatch):
    seen = set()
    original = setup.store.get_or_create

    def record(stage, params, *args, **kwargs):
        seen.add((stage, param_key(params)))
        return original(stage, params, *args, **kwargs)

    monkeypatch.setattr(setup.store, "get_or_create", record)
    monkeypatch.setattr(P, "generations", fake_generations(2))
    P.run(setup, settings, "tiny", seed=0, verbose=False)
    return seen


def test_store_keys_of_full_fine_tuning_are_those_before_lora(setup, fast, traced, monkeypatch):
    # traced built the run already: every stage comes from the store (the base model is not asked for again)
    assert _keys(setup, fast, monkeypatch) == {k for k in KEYS_BEFORE_LORA if k[0].startswith("dda-")}


def test_lora_run_key_differs_from_full(setup, fast):
    data = P.poisoned_data(setup, fast, 0)
    lora = DDASettings(**{**fast.__dict__, "finetune": "lora"})
    full_key, lora_key = P.run_key(setup, fast, "tiny", 0, data), P.run_key(setup, lora, "tiny", 0, data)
    assert param_key(full_key) != param_key(lora_key)
    assert {k: v for k, v in lora_key.items() if k != "finetune"} == full_key
