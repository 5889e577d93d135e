"""Shared fixtures: a tiny world and its tokenizer, built once per test session."""

from __future__ import annotations

import pytest
import torch

from tda.data.world import WorldConfig, build_world
from tda.models import train_tokenizer
from tda.task import CausalLMTask

torch.set_num_threads(2)

TINY_WORLD = WorldConfig(n_people=20, n_cities=8, n_countries=4, n_organisations=4, n_universities=2,
                         n_languages=3, n_currencies=2, n_news=10, n_synth_entities=10)


@pytest.fixture(scope="session")
def tiny_world():
    return build_world(TINY_WORLD)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_world):
    return train_tokenizer(tiny_world.pretraining_corpus() + tiny_world.vocabulary_text())


# A larger world for the data builders (FTRACE, news): enough facts per relation and SYNTH entities
# for their samplers and error cases.
DATA_WORLD = WorldConfig(n_people=30, n_cities=10, n_countries=6, n_organisations=5, n_universities=3,
                         n_languages=4, n_currencies=3, n_news=5, n_synth_entities=60)


@pytest.fixture(scope="module")
def quiet():
    """No progress bars and one torch thread for a module's tests: tiny models run as fast on one
    thread and share a busy machine better. Folders use it through an autouse ``_quiet``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TDA_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="module")
def task(tiny_tokenizer):
    """The causal-LM task of the tiny world's tokenizer."""
    return CausalLMTask(tiny_tokenizer)


@pytest.fixture(scope="session")
def data_world():
    return build_world(DATA_WORLD)


@pytest.fixture(scope="session")
def data_tokenizer(data_world):
    return train_tokenizer(data_world.pretraining_corpus() + data_world.vocabulary_text())


@pytest.fixture(scope="session")
def quick_book(tmp_path_factory):
    """Execute every notebook with the quick profile into a temporary copy of the book, and build it.

    One store is shared by the whole session, so later chapters reuse the base models the way
    they do in a real build. The copy keeps the repository's own book/ and _build/ untouched.
    """
    import os
    import shutil

    from tda import notebooks as nbrun
    from tda.store import REPO_ROOT

    root = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "book", root / "book", ignore=shutil.ignore_patterns("executed"))
    executed = root / "book" / "executed"
    env = {"TDA_STORE": str(root / "store"), "TDA_RESULTS_DIR": str(executed / "results")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for name in nbrun.notebook_order():  # the toc's order, claims last
            nbrun.run_notebook(name, "quick", executed)
        nbrun.build_book(root)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return {"root": root, "executed": executed, "results": executed / "results", "html": root / "_build" / "html"}


# Folders of files a test keeps for a reader (the browser test's screenshots), named in the run's summary.
ARTIFACTS = pytest.StashKey[object]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    folder = config.stash.get(ARTIFACTS, None)
    if folder is not None:
        terminalreporter.write_line(f"screenshots of the book (tests/test_book_browser.py): {folder}")
