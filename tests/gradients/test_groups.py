"""Parameter groups and units (``tda.gradients.groups``)."""

from __future__ import annotations

import copy
import re

import pytest

from tda import gradients as G


def test_groups_gpt2(gpt2):
    assert G.select_parameters(gpt2, "embedding") == ["transformer.wte.weight"]
    assert G.select_parameters(gpt2, "head") == ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    block0 = G.select_parameters(gpt2, "block.0")
    assert block0 and all(n.startswith("transformer.h.0.") for n in block0)
    assert G.select_parameters(gpt2, "all") == G.parameter_names(gpt2)
    union = G.select_parameters(gpt2, ["head", "embedding"])
    assert union == ["transformer.wte.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"]
    assert G.select_parameters(gpt2, re.compile(r"c_fc\.weight")) == ["transformer.h.0.mlp.c_fc.weight",
                                                                        "transformer.h.1.mlp.c_fc.weight"]
    assert G.select_parameters(gpt2, "transformer.wpe.weight") == ["transformer.wpe.weight"]
    untied_config = copy.deepcopy(gpt2.config)
    untied_config.tie_word_embeddings = False
    untied = type(gpt2)(untied_config)
    assert G.select_parameters(untied, "head") == ["transformer.ln_f.weight", "transformer.ln_f.bias",
                                                   "lm_head.weight"]


@pytest.mark.parametrize("group", ["block.7", "no_such_param", ["embedding", "nothing_here"], []])
def test_group_matching_nothing_raises(gpt2, group):
    with pytest.raises(ValueError) as err:
        G.select_parameters(gpt2, group)
    if group:
        assert "transformer.wte.weight" in str(err.value)  # lists the available names


def test_groups_t5(t5):
    assert G.select_parameters(t5, "embedding") == ["shared.weight"]
    assert G.select_parameters(t5, "head") == ["decoder.final_layer_norm.weight"]  # lm_head is tied
    both = G.select_parameters(t5, "block.0")
    assert any(n.startswith("encoder.") for n in both) and any(n.startswith("decoder.") for n in both)
    assert all(n.startswith("encoder.block.0.") for n in G.select_parameters(t5, "encoder.block.0"))


def test_units_partition_the_group_in_order(gpt2):
    units = G.parameter_units(gpt2)
    assert list(units) == ["embedding", "block.0", "block.1", "head", "other"]
    assert units["other"] == ["transformer.wpe.weight"]  # the position embeddings: no alias claims them
    flat = [n for names in units.values() for n in names]
    assert sorted(flat) == sorted(G.parameter_names(gpt2)) and len(flat) == len(set(flat))
    assert G.unit_order(["head", "block.10", "other", "block.2", "embedding"]) == [
        "embedding", "block.2", "block.10", "head", "other"]
    part = G.parameter_units(gpt2, ["block.1", "head"])
    assert list(part) == ["block.1", "head"] and part["head"] == G.select_parameters(gpt2, "head")
