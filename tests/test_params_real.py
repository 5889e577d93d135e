"""The `real` world and profile of notebooks/params.yml: every name in them must be one the code
knows, and the chapters it names must take it (without loading anything: hub names are not fetched)."""

from __future__ import annotations

import inspect

import pytest

from tda import notebooks as nbrun
from tda.data.sources import DataSource, restrict_ftrace
from tda.devices import DEVICES
from tda.experiments import sources
from tda.experiments.dda.pipeline import DDASettings
from tda.experiments.ftrace.pipeline import FtraceSettings
from tda.model_sources import ModelSource
from tda.params import load_params, world_names
from tda.store import Store

SOURCE_PARAMETERS = {"ftrace": ("ftrace_source", "ftrace_sample", "ftrace_model", "device"),
                     "xsum": ("xsum_source", "xsum_model", "device")}
CHAPTERS = {"ftrace": ("ftrace_methods", "ftrace_layers", "ftrace_checkpoints", "ftrace_saturation"),
            "xsum": ("dda_main", "dda_ablation", "dda_beta", "dda_sizes")}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # hub names: no connection test


@pytest.fixture(scope="module")
def common() -> dict:
    return load_params()["profiles"]["real"]["common"]


def test_the_real_world_and_profile_are_defined(common):
    assert "real" in world_names() and common["world"] == "real"


def test_every_setting_is_one_the_code_knows(offline, common):
    FtraceSettings.for_world("real", "trex")
    DDASettings.for_world("real")
    assert DataSource.parse(common["ftrace_source"]).kind == "hub"
    assert DataSource.parse(common["xsum_source"]).limit == common["xsum_source"]["limit"]
    for key in ("ftrace_model", "xsum_model"):
        assert ModelSource.parse(common[key]).kind == "pretrained"
    inspect.signature(restrict_ftrace).bind(None, **common["ftrace_sample"])
    assert sources.check_sample(common["ftrace_sample"]) == common["ftrace_sample"]
    assert common["device"] in DEVICES


def test_part1_settings_sample_nothing_of_the_synthetic_world():
    s = FtraceSettings.for_world("real", "trex")
    assert s.n_queries is None and s.known_share is None and s.relations is None  # ftrace_data would refuse them


@pytest.mark.parametrize("part", ["ftrace", "xsum"])
def test_each_chapter_takes_the_profile_and_builds_its_setup(offline, part, tmp_path):
    for chapter in CHAPTERS[part]:
        resolved = nbrun.resolve_parameters(chapter, "real")
        assert set(SOURCE_PARAMETERS[part]) <= set(resolved), chapter
    resolved = nbrun.resolve_parameters(CHAPTERS[part][0], "real")
    options = {"source": resolved[f"{part}_source"], "model": resolved[f"{part}_model"], "device": resolved["device"],
               "store": Store(tmp_path)}
    if part == "ftrace":
        options["sample"] = resolved["ftrace_sample"]
    setup = sources.chapter_setup(part, resolved["world"], **options)  # parsed and checked, nothing loaded
    assert sources.is_source(setup) and setup.world_config.part == part
    assert setup.world_config.model["name"] == ModelSource.parse(resolved[f"{part}_model"]).name
