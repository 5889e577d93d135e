"""Part II's analysis (``tda.experiments.dda.analysis``): hand-worked AUCs, aggregation over queries
and seeds, the sweeps read from stored dots with their variants as columns, the chapters' tables."""

from __future__ import annotations

import random
from dataclasses import replace as dc_replace
from types import SimpleNamespace

import numpy as np
import pytest

from tda.data.world import NEWS_EVENTS, WorldConfig, build_world, news_article
from tda.experiments.dda import analysis as A
from tda.experiments.dda import claims as C
from tda.experiments.dda import pipeline as P
from tda.methods import InfluenceDots
from tda.results import fmt

from .conftest import TEST_WORLD


def test_evaluate_auc_and_recall():
    poisoned = np.array([False, True, False, True, False, False])
    perfect = np.where(poisoned, 1.0, 0.0)[None, :] + np.arange(6)[None, :] * 1e-3
    m = A.auc_recall(perfect, poisoned, ks=(1, 2, 6))
    assert m["auc"][0] == 1.0 and m["recall@1"][0] == 0.5 and m["recall@2"][0] == 1.0
    assert A.auc_recall(-perfect, poisoned)["auc"][0] == 0.0
    assert A.auc_recall(np.zeros((1, 6)), poisoned)["auc"][0] == 0.5  # ties count half
    # one poisoned document ranked 2nd of 6: it beats 4 of the 5 clean ones
    one = np.array([False, False, True, False, False, False])
    assert A.auc_recall(np.array([[6, 5, 5.5, 1, 2, 3.0]]), one)["auc"][0] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="both poisoned and clean"):
        A.auc_recall(perfect, np.zeros(6, dtype=bool))
    with pytest.raises(ValueError, match="training documents"):
        A.auc_recall(perfect[:, :5], poisoned)


def _fake_run(seed, scores, poisoned, size="tiny"):
    return SimpleNamespace(size=size, seed=seed, traced=True, scores=scores, poisoned=np.asarray(poisoned),
                           settings=P.DDASettings(recall_ks=(1,)))


def test_per_query_then_seed_aggregation():
    poisoned = [True, False, False]
    good, bad = np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    # seed 0: two queries, AUC 1 and 0 -> 0.5; seed 1: one query, AUC 1 -> 1.0
    runs_ = [_fake_run(0, {"M": np.stack([good, bad])}, poisoned), _fake_run(1, {"M": good[None]}, poisoned)]
    pq = A.per_query_table(runs_)
    assert len(pq) == 3 and set(pq.columns) >= {"auc", "recall@1", "seed", "method", "query"}
    means = A.run_means(pq)
    assert means.set_index("seed")["auc"].to_dict() == {0: 0.5, 1: 1.0}
    table = A.auc_summary(pq).iloc[0]
    assert table["auc mean"] == pytest.approx(0.75) and table["auc std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert table["seeds"] == 2 and table["queries"] == 3
    assert fmt(0.75, 0.05) == "75.0 ± 5.0" and fmt(0.5) == "50.0" and fmt(float("nan")) == "n/a"


def test_beta_curve_from_stored_dots():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(3, 2, 6))
    poisoned = np.array([True, True, False, False, False, False])
    r = _fake_run(0, {}, poisoned)
    r.dots = InfluenceDots(d, 1, np.ones(2))
    curve = A.beta_curve([r], [0.0, 0.4, 1.0])
    assert list(curve["beta"]) == [0.0, 0.4, 1.0]
    for b, auc in zip(curve["beta"], curve["auc mean"]):
        assert auc == pytest.approx(A.auc_recall(r.dots.dda(beta=b), poisoned)["auc"][0])
    pq = A.per_query_table([r], A.beta_scores([0.0, 0.4]))
    assert list(pq["beta"]) == [0.0, 0.4] and list(pq["method"]) == ["beta=0", "beta=0.4"]
    # issue 15: a bad value in the sweep is named by its place, before any run is scored
    with pytest.raises(ValueError, match=r"betas\[1\] must be finite and >= 0.*got -0.1"):
        A.beta_curve([r], [0.0, -0.1])
    with pytest.raises(TypeError, match=r"betas\[0\] must be a number, got str '0.4'"):
        A.beta_scores(["0.4"])


def test_ablation_variants_carry_their_switches():
    rng = np.random.default_rng(2)
    r = _fake_run(0, {}, np.array([True, False, False, False]))
    r.dots = InfluenceDots(rng.normal(size=(3, 2, 4)), 1, np.ones(2))
    scored = A.variant_scores(r, beta=0.5)
    assert set(scored) == set(A.VARIANTS)
    for name, switches in A.VARIANTS.items():
        assert scored[name].columns == switches
        assert np.array_equal(scored[name].scores, r.dots.dda(beta=0.5, **switches))
    pq = A.per_query_table([r], lambda run: A.variant_scores(run, 0.5))
    assert pq.set_index("method").loc["without debias", ["denoise", "debias", "contrast"]].tolist() == [True, False, True]


def test_news_event_reads_the_generator():
    world = build_world(WorldConfig(**TEST_WORLD))
    rng = random.Random(0)
    for _ in range(60):
        doc, _, slots = news_article(rng, world)
        assert A.news_event(doc) == slots["event"]
    assert A.news_event("An article from real XSum .") == "other"
    assert set(NEWS_EVENTS) >= {"flood", "match"}


def test_event_table_counts(traced):
    t = A.event_table([traced]).set_index("event")
    assert t["poisoned"].sum() == traced.poisoned.sum()
    assert t["test prompts"].sum() == traced.report.n and t["hallucinated"].sum() == traced.report.n_hallucinated
    assert ((t["poisoned share"] >= 0) & (t["poisoned share"] <= 1)).all()


def test_top_k_composition_of_a_perfect_ranking(traced):
    kinds = A.document_kinds(traced)
    assert (kinds == "poisoned").sum() == traced.poisoned.sum()
    assert set(kinds) <= {"poisoned", "about China", "about England", "other"}
    perfect = copy_run(traced, {"perfect": np.tile(traced.poisoned.astype(float), (len(traced.queries), 1))})
    comp = A.top_k_composition([perfect])
    assert comp.loc["perfect", "poisoned"] == 1.0 and comp.loc["perfect"].sum() == pytest.approx(1.0)


def copy_run(r, scores):
    return dc_replace(r, scores=scores)


def test_checkpoint_curve_and_debias_diagnostics(traced):
    curve = A.checkpoint_curve([traced])
    assert list(curve["checkpoint"]) == list(range(traced.settings.epochs + 1))
    for i, auc in zip(curve["checkpoint"], curve["auc mean"]):
        assert auc == pytest.approx(A.auc_recall(traced.dots.checkpoint(i), traced.poisoned)["auc"].mean())
    diag = A.debias_diagnostics([traced]).iloc[0]
    q = traced.dots.n_queries
    d0 = traced.dots.dots[0]
    assert diag["AUC of C[IS_θ0] alone"] == pytest.approx(A.auc_recall(d0[:q] - d0[q:], traced.poisoned)["auc"].mean())
    assert diag["AUC at β=0"] == pytest.approx(A.auc_recall(traced.dots.dda(beta=0.0), traced.poisoned)["auc"].mean())
    assert diag["scale of C[IS_θ0] / C[mean IS_θi]"] > 0 and -1 <= diag["correlation"] <= 1
    assert diag["loss at θ0"] > 0 and diag["loss at θN"] > 0
    text = C.explain_debias(A.debias_diagnostics([traced]), traced.settings.beta)
    assert "β = 0" in text and "AUC" in text
    assert "nothing to explain" in C.explain_debias(A.debias_diagnostics([]), 1.0)
