"""Retrains in the store (tda.counterfactual.stored): keyed by subset, reused, and on the known case
removing the one teaching example costs the query most."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tda.counterfactual import (keep_mask, load_retrained, retrain_all, retrain_params, retrain_without,
                                stored_retrain, subset_digest, support)
from tda.counterfactual import stored as stored_module
from tda.store import Store

REPO = Path(__file__).resolve().parents[2]

RUN = {"test": "known case"}


def test_subset_key_changes_when_the_subset_does(known):
    n = len(known.train)
    a = keep_mask([0, 1, 2], n)
    assert subset_digest(a) == subset_digest(keep_mask(np.array([2, 0, 1]), n))  # indices or a mask
    assert subset_digest(a) != subset_digest(keep_mask([0, 1, 3], n))
    assert subset_digest(a) != subset_digest(keep_mask([0, 1, 2], n + 1))  # another training set size
    p = retrain_params(RUN, known.train, known.config, a)
    assert p != retrain_params(RUN, known.train, known.config, keep_mask([0, 1, 3], n))
    assert p != retrain_params({"test": "another run"}, known.train, known.config, a)
    assert p["n_kept"] == 3 and p["run"] == RUN


def test_stored_retrains_are_reused(known, tmp_path, monkeypatch):
    store = Store(tmp_path)
    calls = []
    real = stored_module.finetune_subset
    monkeypatch.setattr(stored_module, "finetune_subset", lambda *a, **k: calls.append(1) or real(*a, **k))
    keep = keep_mask([1, 2, 3, 4, 5, 6, 7], len(known.train))
    first = stored_retrain(store, RUN, known.base, known.task, known.train, known.config, keep)
    again = stored_retrain(store, RUN, known.base, known.task, known.train, known.config, keep)
    assert first == again and len(calls) == 1  # the second call does not train
    # what is stored is the retrain: the same weights as retraining in memory
    direct, _ = retrain_without(known.base, known.task, known.train, [0], known.config)
    for (name, a), b in zip(direct.state_dict().items(), load_retrained(first).state_dict().values()):
        assert torch.equal(a, b), name
    # retrain_all: each distinct subset once, stored ones read, order kept
    other = keep_mask([0, 2, 3, 4, 5, 6, 7], len(known.train))
    folders = retrain_all(store, RUN, known.base, known.task, known.train, known.config, [other, keep, other])
    assert len(calls) == 2 and folders[0] == folders[2] != folders[1] == first
    with pytest.raises(ValueError, match="workers"):
        retrain_all(store, RUN, known.base, known.task, known.train, known.config, [keep], workers=0)


def test_removing_the_teaching_example_costs_the_query_most(known, tmp_path):
    n = len(known.train)
    keeps = [~keep_mask([i], n) for i in range(n)] + [np.ones(n, dtype=bool)]
    folders = retrain_all(Store(tmp_path), RUN, known.base, known.task, known.train, known.config, keeps)
    after = np.array([support(load_retrained(f), known.task, known.query)[0] for f in folders])
    loss_change = after[-1] - after[:-1]  # support lost by each removal
    assert int(np.argmax(loss_change)) == known.teacher and loss_change[known.teacher] > 1.0, loss_change


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*retraining workers:RuntimeWarning")  # on 2 cores: about speed, not weights
def test_worker_processes_train_the_same_weights(known, tmp_path):
    n = len(known.train)
    keeps = [~keep_mask([i], n) for i in (2, 5)]
    pooled = retrain_all(Store(tmp_path / "a"), RUN, known.base, known.task, known.train, known.config, keeps,
                         workers=2)
    here = retrain_all(Store(tmp_path / "b"), RUN, known.base, known.task, known.train, known.config, keeps)
    for f, g in zip(pooled, here):
        for a, b in zip(load_retrained(f).state_dict().values(), load_retrained(g).state_dict().values()):
            assert torch.equal(a, b)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_busy_retraining_worker_ends_when_its_parent_is_killed(tmp_path):
    # The parent starts a pool as retrain_all does, gives its worker a long job, prints the
    # worker's pid and waits; killing the parent must end the worker at once, not after its job.
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import concurrent.futures as cf, multiprocessing, os, sys, time
        from tda.counterfactual import stored
        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=stored._worker_init,
                                          initargs=(os.getpid(),))
            print(pool.submit(os.getpid).result(), flush=True)
            pool.submit(time.sleep, 120)
            time.sleep(120)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        worker = int(parent.stdout.readline())
        time.sleep(1.0)  # the worker is in its 120 s job
        os.kill(worker, 0)  # alive
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline and _alive(worker):
            time.sleep(0.2)
        assert not _alive(worker), "the worker outlived its killed parent"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has ended (its parent is gone, init reaps it)
    except FileNotFoundError:
        return False


def test_more_training_threads_than_cores_is_named_before_a_pool_starts(known, tmp_path, monkeypatch):
    """Two workers of 2 threads on 2 cores ran each retrain 5x slower (measured); retrain_all says so."""
    assert stored_module.oversubscription(1, 2, 2) is None
    assert stored_module.oversubscription(2, 1, 2) is None
    assert stored_module.oversubscription(2, 2, 4) is None
    assert stored_module.oversubscription(2, 2, None) is None  # cores unknown: no claim made
    why = stored_module.oversubscription(2, 2, 2)
    assert "4 threads on 2 CPU cores" in why and "workers=1" in why
    # retrain_all warns before it starts the pool (the pool itself is stubbed: nothing is trained)
    monkeypatch.setattr(stored_module.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("TDA_THREADS", raising=False)

    class Stop(Exception):
        pass

    def no_pool(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(stored_module.cf, "ProcessPoolExecutor", no_pool)
    n = len(known.train)
    with pytest.warns(RuntimeWarning, match="4 threads on 2 CPU cores"), pytest.raises(Stop):
        retrain_all(Store(tmp_path), RUN, known.base, known.task, known.train, known.config,
                    [keep_mask([0], n), keep_mask([1], n)], workers=2)
