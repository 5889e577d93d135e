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
from tda.experiments.dda import pipeline as P
from tda.methods import InfluenceDots, PairInfluence
from tda.metrics import hard_negative_auc, roc_auc
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


def test_auc_on_hard_negatives_only():
    poisoned = np.array([True, False, False, False])
    genuine = np.array([False, True, False, False])
    # the poisoned document beats the two other clean ones but not the genuine China document
    m = A.auc_recall(np.array([[2.0, 3.0, 1.0, 0.0]]), poisoned, (1,), genuine)
    assert m["auc"][0] == pytest.approx(2 / 3) and m["hard_auc"][0] == 0.0


def _fake_run(seed, scores, poisoned, size="small", genuine=None):
    poisoned = np.asarray(poisoned)
    if genuine is None:  # the last document is a genuine China document (a hard negative)
        genuine = np.arange(len(poisoned)) == len(poisoned) - 1
    genuine = np.asarray(genuine)
    return SimpleNamespace(size=size, seed=seed, traced=True, scores=scores, poisoned=poisoned, genuine=genuine,
                           settings=P.DDASettings(recall_ks=(1,)), dots=None, pairs=None)


def test_per_query_then_seed_aggregation():
    poisoned = [True, False, False]
    good, bad = np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    # seed 0: two queries, AUC 1 and 0 -> 0.5; seed 1: one query, AUC 1 -> 1.0
    runs_ = [_fake_run(0, {"M": np.stack([good, bad])}, poisoned), _fake_run(1, {"M": good[None]}, poisoned)]
    pq = A.per_query_table(runs_)
    assert len(pq) == 3 and set(pq.columns) >= {"auc", "hard_auc", "recall@1", "seed", "method", "query"}
    means = A.run_means(pq)
    assert means.set_index("seed")["auc"].to_dict() == {0: 0.5, 1: 1.0}
    table = A.auc_summary(pq).iloc[0]
    assert table["auc mean"] == pytest.approx(0.75) and table["auc std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert table["seeds"] == 2 and table["queries"] == 3
    assert fmt(0.75, 0.05) == "75.0 ± 5.0" and fmt(0.5) == "50.0" and fmt(float("nan")) == "n/a"


def test_set_level_ranking_is_the_mean_over_queries_and_set_methods_have_no_query_rows():
    poisoned, genuine = [True, False, False, False], [False, True, False, False]
    # two queries that each rank the poisoned document 2nd; their mean ranks it 1st
    per_query = np.array([[2.0, 3.0, 0.0, 0.0], [2.0, 0.0, 3.0, 0.0]])
    r = _fake_run(0, {"M": per_query, "CEA": np.array([[1.0, 2.0, 0.0, -1.0]])}, poisoned, genuine=genuine)
    st = A.set_table([r]).set_index("method")
    assert st.loc["M", "auc"] == 1.0 and st.loc["M", "hard_auc"] == 1.0
    assert st.loc["CEA", "auc"] == pytest.approx(2 / 3) and st.loc["CEA", "hard_auc"] == 0.0
    pq = A.per_query_table([r])
    assert set(pq["method"]) == {"M"} and list(pq["auc"]) == pytest.approx([2 / 3, 2 / 3])
    assert A.is_set_level("CEA") and A.is_set_level("DDA (README pipeline), β = 0") and not A.is_set_level("DDA")


def test_comparison_has_both_levels_and_bootstrap_intervals():
    poisoned = [True, False, False, False]
    runs_ = [_fake_run(s, {"M": np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]]),
                           "CEA": np.array([[3.0, 2.0, 1.0, 0.0]])}, poisoned) for s in (0, 1)]
    comp = A.comparison(runs_, ["M", "CEA"]).set_index("method")
    assert comp.loc["M", "auc mean"] == 0.5 and comp.loc["M", "set auc mean"] == 0.5  # ties in the mean: half
    assert comp.loc["CEA", "set auc mean"] == 1.0 and np.isnan(comp.loc["CEA", "auc mean"])
    assert comp.loc["CEA", "set auc low"] == comp.loc["CEA", "set auc high"] == 1.0
    assert comp.loc["M", "auc low"] <= comp.loc["M", "auc mean"] <= comp.loc["M", "auc high"]
    assert comp.loc["M", "seeds"] == 2 and list(comp.index) == ["M", "CEA"]


def test_beta_curve_from_stored_dots_raw_and_normalised():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(3, 2, 6))
    poisoned = np.array([True, True, False, False, False, False])
    r = _fake_run(0, {}, poisoned)
    r.dots = InfluenceDots(d, 1, np.ones(2))
    curve = A.beta_curve([r], [0.0, 0.4, 1.0])
    assert list(curve["beta"]) == [0.0, 0.4, 1.0] and set(curve["units"]) == {"raw"}
    for b, auc in zip(curve["beta"], curve["auc mean"]):
        assert auc == pytest.approx(A.auc_recall(r.dots.dda(beta=b), poisoned)["auc"][0])
    norm = A.beta_curve([r], [1.0], units="normalised")
    signal, bias = r.dots.terms()
    want = signal - np.linalg.norm(signal) / np.linalg.norm(bias) * bias  # β' = β ||signal|| / ||bias||
    assert norm["auc mean"].iloc[0] == pytest.approx(A.auc_recall(want, poisoned)["auc"][0])
    pq = A.per_query_table([r], A.beta_scores([0.0, 0.4]))
    assert list(pq["beta"]) == [0.0, 0.4] and list(pq["method"]) == ["beta=0", "beta=0.4"]
    # the README reconstruction: one ranking per error set, at the set level
    r.pairs = PairInfluence(rng.normal(size=(3, 1, 6)))
    readme = A.beta_curve([r], [0.0, 1.0], reconstruction="README pipeline")
    assert readme["auc mean"].iloc[1] == pytest.approx(A.auc_recall(r.pairs.dda(beta=1.0), poisoned)["auc"][0])
    # issue 15: a bad value in the sweep is named by its place, before any run is scored
    with pytest.raises(ValueError, match=r"betas\[1\] must be finite and >= 0.*got -0.1"):
        A.beta_curve([r], [0.0, -0.1])
    with pytest.raises(TypeError, match=r"betas\[0\] must be a number, got str '0.4'"):
        A.beta_scores(["0.4"])
    with pytest.raises(ValueError, match="reconstruction must be one of"):
        A.beta_scores([0.0], reconstruction="nope")


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
    switches = pq.set_index("method").loc["without debias", ["denoise", "debias", "contrast"]]
    assert switches.tolist() == [True, False, True]
    r.pairs = PairInfluence(rng.normal(size=(3, 1, 4)))
    readme = A.variant_scores(r, 0.5, "README pipeline")
    assert set(readme) == {f"DDA (README pipeline): {v}" for v in A.README_VARIANTS}
    assert np.array_equal(readme["DDA (README pipeline): without denoise"].scores,
                          r.pairs.dda(beta=0.5, denoise=False, debias=True))


def test_all_scores_adds_the_controls_from_the_stored_parts():
    rng = np.random.default_rng(3)
    r = _fake_run(0, {"DDA": np.zeros((1, 4))}, np.array([True, False, False, False]))
    r.dots = InfluenceDots(rng.normal(size=(3, 2, 4)), 1, np.ones(2), test_sq=np.ones((3, 2)), train_sq=np.ones((3, 4)))
    r.pairs = PairInfluence(rng.normal(size=(3, 1, 4)))
    out = A.all_scores(r)
    assert set(out) == {"DDA", *A.CONTROLS}
    assert np.array_equal(out["DDA, base term alone"], r.dots.checkpoint(0))
    assert np.array_equal(out["DDA (README pipeline), base term alone"], r.pairs.scores[0])
    # unit norms: cosine scores are the dot scores
    assert np.allclose(out["DDA (cosine)"], r.dots.dda(beta=r.settings.beta))


def test_news_event_reads_the_generator():
    world = build_world(WorldConfig(**TEST_WORLD))
    rng = random.Random(0)
    for _ in range(60):
        doc, _, slots = news_article(rng, world)
        assert A.news_event(doc) == slots["event"]
    assert A.news_event("An article from real XSum .") == "other"
    assert set(NEWS_EVENTS) >= {"flood", "match"}


def test_top_k_composition_of_a_perfect_ranking(traced):
    kinds = A.document_kinds(traced)
    assert (kinds == "poisoned").sum() == traced.poisoned.sum()
    assert set(kinds) <= {"poisoned", "about China", "about England", "other"}
    perfect = copy_run(traced, {"perfect": np.tile(traced.poisoned.astype(float), (len(traced.queries), 1))})
    comp = A.top_k_composition([perfect])
    assert comp.loc["perfect", "poisoned"] == 1.0 and comp.loc["perfect"].sum() == pytest.approx(1.0)


def copy_run(r, scores):
    return dc_replace(r, scores=scores)


def test_checkpoint_curve(traced):
    curve = A.checkpoint_curve([traced])
    assert list(curve["checkpoint"]) == list(range(traced.settings.epochs + 1))
    for i, auc, pair in zip(curve["checkpoint"], curve["auc mean"], curve["README pair set auc mean"]):
        assert auc == pytest.approx(A.auc_recall(traced.dots.checkpoint(i), traced.poisoned)["auc"].mean())
        assert pair == pytest.approx(A.auc_recall(traced.pairs.checkpoint(i), traced.poisoned)["auc"][0])


def test_setup_summary_and_tables_of_a_run(traced):
    summary = A.setup_summary([traced])
    row = traced.setup_row()
    assert {k: summary[k] for k in ("n_train", "n_poisoned", "n_genuine_target")} == \
        {k: row[k] for k in ("n_train", "n_poisoned", "n_genuine_target")}
    assert summary["counterfactual_remaining"] == traced.label_check.n_remaining and summary["runs"] == 1
    assert summary["hallucination_rate"] == traced.report.rate and summary["per_run"] == [row]
    assert "test seed 0" not in summary["guard_failures"] and list(summary["guard_failures"]) == ["tiny seed 0"]
    setup_rows = A.setup_table([traced])
    assert "6.7%" in setup_rows.loc[0, "guards failed"]
    lex = A.lexical_table([traced]).set_index("detector")
    assert (lex["set hard_auc"] >= 0).all() and (lex["set auc"] <= 1).all()
    assert len(A.example_outputs([traced], n=2)) <= 2


def test_finetune_tables_compare_kinds_of_fine_tuning_run_by_run(traced):
    """The full-vs-LoRA tables: each kind's column holds its runs' own numbers (here the same run
    under two names, and a run without hallucinations under a third)."""
    untraced = dc_replace(traced, queries=None, scores={}, label_check=None)
    setup = A.finetune_setup_table({"full": [traced], "LoRA": [traced], "none": [untraced]},
                                   seconds={"full": 1.0, "LoRA": 2.0, "none": 0.0})
    assert setup.loc["hallucinated", "full"] == traced.report.n_hallucinated
    assert setup.loc["parameters trained", "LoRA"] == traced.n_trainable > 0
    assert setup.loc["seconds", "LoRA"] == 2.0 and setup.loc["label check flagged", "none"] == 0
    methods = A.finetune_method_table({"full": [traced], "LoRA": [traced]})
    ranking = traced.scores["DDA"].mean(0)
    assert methods.loc["DDA", ("set AUC", "full")] == pytest.approx(roc_auc(ranking[None], traced.poisoned[None])[0])
    assert methods.loc["DDA", ("set hard-negative AUC", "LoRA")] == pytest.approx(
        hard_negative_auc(ranking[None], traced.poisoned, traced.genuine)[0])
    assert np.isnan(methods.loc["CEA", ("per-query AUC", "full")])  # set-level: no per-query ranking
    assert list(methods.columns[:2]) == [("per-query AUC", "full"), ("per-query AUC", "LoRA")]


def test_finetune_sentence_says_what_was_measured(traced):
    assert A.finetune_sentence([traced], []) == A.LORA_OFF
    lora_like = dc_replace(traced, settings=dc_replace(traced.settings, finetune="lora", lora_rank=4))
    text = A.finetune_sentence([traced], [lora_like])
    n = traced.report.n_hallucinated
    assert "rank 4, alpha 16" in text and f"hallucinated on {n} of {traced.report.n} prompts" in text
    assert f"full fine-tuning on {n}" in text and "no verdict reads" in text
    auc = A.finetune_method_table({"full": [traced]}).loc["CEA", ("set AUC", "full")]
    assert f"CEA {auc:.2f} against {auc:.2f}" in text
