"""TRAK's agreement across projection seeds: the formula is tda.methods.trak's, the measures behave."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tda import gradients as G
from tda.methods import trak
from tda.models import make_model
from tda.task import CausalLMTask, Examples
from tda.trak_stability import features, pooled, seed_stability, table, trak_exact, trak_from_features


@pytest.fixture(scope="module", autouse=True)
def _quiet():
    mp = pytest.MonkeyPatch()
    mp.setenv("TDA_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="module")
def setting(tiny_world, tiny_tokenizer):
    model = make_model("tiny", tiny_tokenizer, seed=0)
    task = CausalLMTask(tiny_tokenizer)
    texts = [tiny_world.render(f, i % 4) for i, f in enumerate(tiny_world.facts)]
    train = Examples.texts(texts[:24])
    queries = Examples([tiny_world.cloze(f, 3)[0] + " answer :" for f in tiny_world.facts[:3]],
                       [tiny_world.cloze(f, 3)[1] for f in tiny_world.facts[:3]])
    return model, task, queries, train


@pytest.mark.parametrize("lam", [1e-3, 1.0])
@pytest.mark.parametrize("dim", [16, 32])  # fewer and more dimensions than the 24 training examples
def test_trak_from_features_is_tda_methods_trak(setting, lam, dim):
    model, task, queries, train = setting
    want = trak([model], task, queries, train, projection=G.Projector(dim, seed=1), lam=lam)
    got = trak_from_features(features(model, task, queries, "kronecker", dim, 1),
                             features(model, task, train, "kronecker", dim, 1), lam)
    assert np.allclose(got, want, rtol=1e-6, atol=1e-9 * np.abs(want).max())


def test_seed_stability_rows(setting):
    model, task, queries, train = setting
    poisoned = np.arange(len(train)) % 5 == 0
    # the projected dot products of the same projection: what TRAK tends to as the ridge grows
    dots = features(model, task, queries, "sketch", 512, 0) @ features(model, task, train, "sketch", 512, 0).T
    rows = seed_stability(model, task, queries, train, dims=[512], lams=[1e-3, 1e6], seeds=[0, 0],
                          projections=["sketch"], poisoned=poisoned, exact_dots=dots)
    assert [(r["dim"], r["lam"]) for r in rows] == [(512, 1e-3), (512, 1e6)]
    for r in rows:  # one seed twice: the same projection, so perfect agreement and no spread
        assert r["agreement"] == pytest.approx(1.0) and r["ensemble_agreement"] == pytest.approx(1.0)
        assert r["auc_sd"] == pytest.approx(0.0) and 0 <= r["auc"] <= 1
    assert rows[1]["vs_dots"] == pytest.approx(1.0, abs=1e-3) and rows[0]["vs_dots"] < 0.99
    different = seed_stability(model, task, queries, train, dims=[16], lams=[1e-3], seeds=[0, 1],
                               projections=["kronecker"])
    assert -1 <= different[0]["agreement"] < 1
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_stability(model, task, queries, train, seeds=[0])
    with pytest.raises(ValueError, match="projection must be"):
        features(model, task, queries, "dense", 16, 0)


def test_trak_exact_is_the_push_through_form_of_trak():
    """phi_q (F^T F + lambda I)^{-1} F^T = phi_q F^T (F F^T + lambda I)^{-1}, for k < n and k > n."""
    gen = np.random.default_rng(0)
    for n, k in [(6, 10), (9, 4)]:
        train, queries = gen.standard_normal((n, k)), gen.standard_normal((3, k))
        want = trak_from_features(queries, train, 0.3, relative=False)
        assert np.allclose(trak_exact(queries @ train.T, train @ train.T, 0.3), want)


def test_projected_trak_tends_to_the_exact_limit(setting):
    model, task, queries, train = setting
    dots = G.gradient_dots(model, task, queries, train, "all").dots
    gram = G.gradient_dots(model, task, train, train, "all").dots
    rows = seed_stability(model, task, queries, train, dims=[32, 8192], lams=[0.1], seeds=[0, 1],
                          projections=["sketch"], exact_dots=dots, exact_gram=gram)
    assert rows[1]["vs_limit"] > 0.9 and rows[1]["vs_limit"] > rows[0]["vs_limit"] + 0.1, rows


def test_pooled_weights_runs_by_queries():
    rows = [{"size": "tiny", "projection": "sketch", "dim": 8, "lam": 0.1, "queries": q, "agreement": a,
             "ensemble_agreement": a, "auc_sd": sd} for q, a, sd in [(1, 0.0, 0.1), (3, 1.0, 0.3)]]
    (row,) = pooled(rows)
    assert row["agreement"] == pytest.approx(0.75) and row["queries"] == 4 and row["runs"] == 2
    assert row["auc_sd"] == pytest.approx(0.2) and "auc" not in row
    assert "0.750" in table([row])
