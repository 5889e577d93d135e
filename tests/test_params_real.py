"""The `real` profile designed in notebooks/params.yml (commented out until the pipelines read it):
every name in it must be one the code knows, so that uncommenting it is all the wiring needs."""

from __future__ import annotations

import inspect

import yaml

from tda.data.sources import DataSource, restrict_ftrace
from tda.devices import DEVICES
from tda.experiments.dda.pipeline import DDASettings
from tda.experiments.ftrace.pipeline import FtraceSettings
from tda.model_sources import ModelSource
from tda.params import PARAMS_FILE, load_params

START, END = "# >>> real profile", "# <<< real profile"


def real_block() -> dict:
    lines = PARAMS_FILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(START))
    end = next(i for i, line in enumerate(lines) if line.startswith(END))
    body = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines[start + 1: end]]
    first = body.index("worlds:")
    return yaml.safe_load("\n".join(body[first:]))


def test_the_block_is_commented_out():
    assert "real" not in load_params()["profiles"] and "real" not in load_params()["worlds"]


def test_uncommented_it_is_a_valid_params_file(tmp_path):
    block = real_block()
    params = load_params()
    params["worlds"].update(block["worlds"])
    params["profiles"].update(block["profiles"])
    path = tmp_path / "params.yml"
    path.write_text(yaml.safe_dump(params))
    assert load_params(path)["profiles"]["real"]["common"]["world"] == "real"


def test_every_setting_is_one_the_code_knows(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # hub names: no connection test
    block = real_block()
    world = block["worlds"]["real"]
    FtraceSettings(**world["ftrace"]["trex"], dataset="trex")
    DDASettings(**world["dda"])
    common = block["profiles"]["real"]["common"]
    assert DataSource.parse(common["ftrace_source"]).kind == "hub"
    assert DataSource.parse(common["xsum_source"]).limit == common["xsum_source"]["limit"]
    for key in ("ftrace_model", "xsum_model"):
        assert ModelSource.parse(common[key]).kind == "pretrained"
    inspect.signature(restrict_ftrace).bind(None, **common["ftrace_sample"])
    assert common["device"] in DEVICES
    assert common["world"] in block["worlds"]
