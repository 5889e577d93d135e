"""Data sources: synthetic or real, one schema; missing paths refused at once by the loaders."""

from __future__ import annotations

import time

import pytest

from tda import locations
from tda.data import ftrace as ft
from tda.data.samples import write_ftrace_sample, write_xsum_sample
from tda.data.sources import (DataSource, DataSourceError, load_ftrace_source, load_xsum_source, load_xsum_splits,
                              restrict_ftrace)
from tda.data.xsum import contains_word, load_xsum, save_jsonl
from tda.locations import SourceNotFoundError


@pytest.fixture
def hub_down(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(locations, "hub_unreachable_reason", lambda *a, **k: "huggingface.co:443 cannot be reached")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {"ftrace": write_ftrace_sample(root / "ftrace"), "xsum": write_xsum_sample(root / "news.jsonl")}


def test_a_missing_relative_path_fails_at_once_naming_it(tmp_path, monkeypatch, hub_down):
    """Before: ``load_ftrace("data/ftrace")`` went to the hub as a dataset name and failed after ~25 s
    of retries with a ConnectionError that did not say the folder was missing."""
    monkeypatch.chdir(tmp_path)
    for call, source, what in ((ft.load_ftrace, "data/ftrace", "FTRACE folder"), (load_xsum, "data/xsum", "XSum file"),
                               (load_xsum, "news.jsonl", "XSum file"), (ft.load_ftrace, "ftrace", "FTRACE folder")):
        start = time.perf_counter()
        with pytest.raises(FileNotFoundError, match=f"no {what} at {source}") as err:
            call(source)
        assert time.perf_counter() - start < 2.0
        assert str(tmp_path / source) in str(err.value)


def test_an_existing_file_is_not_an_ftrace_folder(tmp_path):
    path = tmp_path / "abstracts.jsonl"
    path.write_text("{}\n")
    with pytest.raises(FileNotFoundError, match="exists but is not a FTRACE folder"):
        ft.load_ftrace(str(path))


def test_parse_settings(sample, tmp_path, monkeypatch, hub_down):
    assert DataSource.parse(None).synthetic and DataSource.parse("synthetic").synthetic
    assert DataSource.parse(" Synthetic ").location is None
    local = DataSource.parse(str(sample["ftrace"]))
    assert local.kind == "local" and local.location == str(sample["ftrace"].resolve())
    monkeypatch.chdir(sample["ftrace"].parent)
    relative = DataSource.parse({"source": "news.jsonl", "limit": 5, "split": "train"})
    assert relative.location == str(sample["xsum"].resolve()) and relative.limit == 5  # kept absolute
    with pytest.raises(DataSourceError, match=r"unknown field\(s\) \['sorce'\]"):
        DataSource.parse({"sorce": "x"})
    with pytest.raises(DataSourceError, match="limit applies to a real source"):
        DataSource.parse({"source": "synthetic", "limit": 3})
    with pytest.raises(DataSourceError, match="positive number"):
        DataSource.parse({"source": "news.jsonl", "limit": 0})
    with pytest.raises(DataSourceError, match="must be 'synthetic', a local path or a hub name"):
        DataSource.parse(3)
    with pytest.raises(SourceNotFoundError, match="no data source at data/nope"):
        DataSource.parse("data/nope")
    monkeypatch.setattr(locations, "hub_unreachable_reason", lambda *a, **k: None)
    assert DataSource.parse("EdinburghNLP/xsum") == DataSource("hub", "EdinburghNLP/xsum")


def test_real_and_synthetic_sources_give_one_schema(sample, data_world):
    real = load_ftrace_source(str(sample["ftrace"]), synthetic=lambda: pytest.fail("synthetic built for a real source"))
    synthetic = load_ftrace_source("synthetic", synthetic=lambda: ft.build_trex(data_world, n_queries=10, seed=0))
    for part in ("queries", "abstracts"):
        fields = ft.QUERY_FIELDS if part == "queries" else ft.ABSTRACT_FIELDS
        for data in (real, synthetic):
            assert set(fields) <= set(getattr(data, part).column_names)
    assert "proponents" in real.queries.column_names and "proponents" in synthetic.queries.column_names
    news = load_xsum_source({"source": str(sample["xsum"]), "limit": 7}, synthetic=lambda: pytest.fail("built"))
    assert len(news) == 7 and news.column_names == ["document", "summary", "id", "poisoned"]
    with pytest.raises(DataSourceError, match="restrict_ftrace"):
        load_ftrace_source({"source": str(sample["ftrace"]), "limit": 3}, synthetic=None)


def test_restrict_ftrace_keeps_queries_with_their_proponents(sample):
    data = ft.load_ftrace(sample["ftrace"])
    small = restrict_ftrace(data, n_queries=5, n_abstracts=40, seed=3)
    assert len(small.queries) == 5 and len(small.abstracts) == 40
    # every proponent still states the query's fact, and the proponents are exactly those of the full data
    for q in small.queries:
        original = data.queries[[r["uuid"] for r in data.queries].index(q["uuid"])]
        assert sorted(small.abstracts[j]["id"] for j in q["proponents"]) == \
            sorted(data.abstracts[j]["id"] for j in original["proponents"])
        assert all(ft.query_key(q) in small.abstracts[j]["facts"].split(";") for j in q["proponents"])
    assert small.queries["proponents"] == ft.proponents_of(small.queries, small.abstracts)
    again = restrict_ftrace(data, n_queries=5, n_abstracts=40, seed=3)
    assert again.queries["uuid"] == small.queries["uuid"] and again.abstracts["id"] == small.abstracts["id"]
    assert len(restrict_ftrace(data, 2, None).abstracts) == len(data.abstracts)
    with pytest.raises(ValueError, match="n_queries must be between 1 and 60"):
        restrict_ftrace(data, 61)
    with pytest.raises(ValueError, match="20 proponents, more than n_abstracts=10"):
        restrict_ftrace(data, 5, 10)


def test_xsum_splits_hold_out_a_stratified_test_set_or_read_the_sources_own(sample, tmp_path):
    news = load_xsum(sample["xsum"])
    splits = load_xsum_splits(str(sample["xsum"]), synthetic=None, test_fraction=0.25, seed=1)
    train, test = splits["train"], splits["test"]
    assert sorted(list(train["id"]) + list(test["id"])) == sorted(news["id"]) and not set(train["id"]) & set(test["id"])
    naming = [contains_word(x, "England") for x in news["summary"]]
    assert sum(contains_word(x, "England") for x in test["summary"]) == round(0.25 * sum(naming))
    assert len(test) == round(0.25 * sum(naming)) + round(0.25 * (len(news) - sum(naming)))
    assert list(load_xsum_splits(str(sample["xsum"]), synthetic=None, seed=1)["test"]["id"]) == list(test["id"])
    folder = tmp_path / "xsum"
    save_jsonl(news.select(range(30)), folder / "train.jsonl")
    save_jsonl(news.select(range(30, 40)), folder / "test.jsonl")
    own = load_xsum_splits(str(folder), synthetic=None)
    assert list(own["test"]["id"]) == list(news["id"])[30:40] and len(own["train"]) == 30
    assert load_xsum_splits("synthetic", synthetic=lambda: "built") == "built"
