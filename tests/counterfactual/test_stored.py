"""Retrains in the store (tda.counterfactual.stored): keyed by subset, reused, and on the known case
removing the one teaching example costs the query most."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tda.counterfactual import (keep_mask, load_retrained, retrain_all, retrain_params, retrain_without,
                                stored_retrain, subset_digest, support)
from tda.counterfactual import stored as stored_module
from tda.store import Store

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
def test_worker_processes_train_the_same_weights(known, tmp_path):
    n = len(known.train)
    keeps = [~keep_mask([i], n) for i in (2, 5)]
    pooled = retrain_all(Store(tmp_path / "a"), RUN, known.base, known.task, known.train, known.config, keeps,
                         workers=2)
    here = retrain_all(Store(tmp_path / "b"), RUN, known.base, known.task, known.train, known.config, keeps)
    for f, g in zip(pooled, here):
        for a, b in zip(load_retrained(f).state_dict().values(), load_retrained(g).state_dict().values()):
            assert torch.equal(a, b)
