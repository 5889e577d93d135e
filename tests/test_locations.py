"""Local path or hub name, decided by syntax and existence, and refused at once with the path named."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tda import locations
from tda.locations import SourceNotFoundError, hub_unreachable_reason, resolve


@pytest.fixture
def no_probe(monkeypatch):
    """A hub probe that must not be consulted (the decision is made by syntax and existence)."""
    def forbidden(*_a, **_k):
        raise AssertionError("the hub was probed for a source that can only be a local path")
    monkeypatch.setattr(locations, "hub_unreachable_reason", forbidden)


@pytest.fixture
def hub_down(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(locations, "hub_unreachable_reason", lambda *a, **k: "huggingface.co:443 cannot be reached "
                                                                             "(test: no network)")


def test_existing_paths_are_local(tmp_path, monkeypatch, no_probe):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "ftrace").mkdir(parents=True)
    (tmp_path / "x.jsonl").write_text("{}\n")
    got = resolve("data/ftrace", "FTRACE folder")
    assert got.is_local and got.path == tmp_path / "data" / "ftrace"
    assert resolve("x.jsonl", "XSum file").path == tmp_path / "x.jsonl"
    assert resolve(tmp_path / "x.jsonl", "XSum file").is_local
    # relative to another base folder
    assert resolve("ftrace", "FTRACE folder", base=tmp_path / "data").path == tmp_path / "data" / "ftrace"


@pytest.mark.parametrize("source", ["./data/ftrace", "../ftrace", "/no/such/folder", "~/no-such-tda-folder",
                                    "a/b/c", "queries.jsonl", "owner/model.safetensors", r"data\ftrace",
                                    "has space", "-bad", "a--b"])
def test_path_syntax_is_a_missing_local_path(tmp_path, monkeypatch, no_probe, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceNotFoundError, match=r"no FTRACE folder at .*nothing exists at that path") as err:
        resolve(source, "FTRACE folder")
    assert source in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_a_path_object_is_never_a_hub_name(tmp_path, no_probe):
    with pytest.raises(SourceNotFoundError, match="nothing exists"):
        resolve(Path("owner/name"), "model", base=tmp_path)


def test_existing_first_folder_means_a_local_path(tmp_path, monkeypatch, no_probe):
    """``data/ftrace`` with a ``data/`` folder here is a local path (no hub request), and the message
    says what the folder holds instead."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "ftrace-trex").mkdir(parents=True)
    with pytest.raises(SourceNotFoundError, match=r"no FTRACE folder at data/ftrace .*data/ exists and holds: "
                                                  r"ftrace-trex/"):
        resolve("data/ftrace", "FTRACE folder")


def test_unreachable_hub_refuses_at_once_naming_both_readings(tmp_path, monkeypatch, hub_down):
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(SourceNotFoundError) as err:
        resolve("data/ftrace", "FTRACE folder")
    assert time.perf_counter() - start < 1.0
    message = str(err.value)
    assert "no FTRACE folder at data/ftrace" in message and str(tmp_path / "data" / "ftrace") in message
    assert "cannot be reached (test: no network)" in message and "HF_HUB_OFFLINE=1" in message


def test_reachable_or_offline_hub_names_are_hub_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(locations, "hub_unreachable_reason", lambda *a, **k: None)
    assert resolve("ekinakyurek/ftrace", "FTRACE folder") == locations.Location("hub", name="ekinakyurek/ftrace")
    assert resolve("xsum", "XSum file").name == "xsum"
    monkeypatch.setattr(locations, "hub_unreachable_reason", lambda *a, **k: "down")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the libraries read their cache: no probe, no refusal
    assert resolve("EdinburghNLP/xsum", "XSum file").name == "EdinburghNLP/xsum"


def test_the_probe_reports_a_closed_port_quickly_and_once():
    locations._probe_cache.pop("http://127.0.0.1:9", None)
    start = time.perf_counter()
    reason = hub_unreachable_reason("http://127.0.0.1:9", timeout=2.0)  # the discard port: nothing listens
    assert reason is not None and "127.0.0.1:9" in reason
    assert time.perf_counter() - start < 3.0
    assert hub_unreachable_reason("http://127.0.0.1:9") == reason  # cached
    locations._probe_cache.pop("http://127.0.0.1:9", None)


def test_empty_source(no_probe):
    with pytest.raises(SourceNotFoundError, match="no model given"):
        resolve("  ", "model")
