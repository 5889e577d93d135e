"""Part II's experiment plumbing: poisoned runs, decomposed DDA, per-query AUC, verdicts.

Tiny worlds and tiny models only; every test checks a property (equality with the engine's own
methods computed from scratch, hand-worked AUCs, errors on bad input), not just that code runs.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from tda import base
from tda import dda_experiments as dx
from tda.hallucination import detect_hallucinations
from tda.store import Store

TEST_WORLD = dict(n_people=16, n_cities=6, n_countries=4, n_organisations=3, n_universities=2, n_languages=3,
                  n_currencies=2, n_news=4, n_synth_entities=10)
FAST = dict(pretrain={"epochs": 1, "warmup_steps": 0}, n_docs=40, target_share=0.5, test_fraction=0.25, poison_fraction=0.5,
            epochs=2, lr=5e-3, batch_size=8, max_new_tokens=8, trak_dim=16, grad_batch_size=16, recall_ks=(2, 5))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return base.world_setup("quick", TEST_WORLD, store=Store(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="module")
def fast():
    return dx.settings("quick", FAST)


def _fake_generations(hallucinate_every: int):
    """Stand-in for the generation stage: the reference summary, with England -> China in every
    ``hallucinate_every``-th document (0: never), so a run's queries do not depend on what a
    2-epoch model happens to generate."""
    def generations(setup, s, size, seed, data=None):
        data = data if data is not None else dx.poisoned_data(setup, s, seed)
        rows = list(data.test)
        outs = [r["summary"].replace(s.source_word, s.target_word)
                if hallucinate_every and i % hallucinate_every == 0 else r["summary"] for i, r in enumerate(rows)]
        return detect_hallucinations(rows, outs, s.source_word, s.target_word)
    return generations


@pytest.fixture(scope="module")
def traced(setup, fast):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dx, "generations", _fake_generations(2))
        return dx.run(setup, fast, "tiny", seed=0, verbose=False)


# ---------------------------------------------------------------------------------------------
# settings and data
# ---------------------------------------------------------------------------------------------
def test_settings_presets_and_errors():
    s = dx.settings("default", {"epochs": 3, "recall_ks": [5]})
    assert s.epochs == 3 and s.recall_ks == (5,)
    assert dx.settings("no-such-preset") == dx.PRESETS["default"]
    with pytest.raises(ValueError, match="unknown DDA settings"):
        dx.settings("quick", {"epoch": 3})
    counted = dx.settings("quick", {"n_poison": 7})  # a count replaces the preset's fraction
    assert counted.n_poison == 7 and counted.poison_fraction is None
    with pytest.raises(ValueError, match="exactly one of poison_fraction and n_poison"):
        dx.DDASettings(poison_fraction=0.4, n_poison=3)
    with pytest.raises(ValueError, match="beta must be finite"):
        dx.DDASettings(beta=float("nan"))


def test_poisoned_data_counts_and_errors(setup, fast):
    data = dx.poisoned_data(setup, fast, seed=0)
    assert data.poisoned.sum() == data.report.n_poisoned == round(0.5 * data.report.n_candidates)
    # every poisoned summary names the target word, and the test prompts are England documents
    for summary, flag in zip(data.train["summary"], data.poisoned):
        assert ("China" in summary) or not flag
    assert all("England" in s for s in data.test["summary"])
    with pytest.raises(ValueError, match="cannot poison 999 documents: only"):
        dx.poisoned_data(setup, replace(fast, poison_fraction=None, n_poison=999), seed=0)
    with pytest.raises(ValueError, match="no training summary was poisoned"):
        dx.poisoned_data(setup, replace(fast, poison_fraction=None, n_poison=0), seed=0)
    with pytest.raises(ValueError, match="occurs in no summary"):
        dx.poisoned_data(setup, replace(fast, target_share=0.0), seed=0)


def test_epoch_learning_rates():
    from tda.train import TrainConfig

    flat = dx.epoch_learning_rates(TrainConfig(epochs=3, lr=2e-3, batch_size=4), n_examples=10)
    assert np.allclose(flat, 2e-3)
    lin = dx.epoch_learning_rates(TrainConfig(epochs=2, lr=1.0, batch_size=5, schedule="linear"), n_examples=10)
    # 2 steps per epoch, 4 in all: lr 1, 3/4 | 1/2, 1/4
    assert np.allclose(lin, [0.875, 0.375])


# ---------------------------------------------------------------------------------------------
# decomposed DDA
# ---------------------------------------------------------------------------------------------
def test_influence_dots_algebra():
    rng = np.random.default_rng(0)
    q, c, n = 2, 5, 3
    d = rng.normal(size=(n + 1, 2 * q, c))
    w = np.array([0.5, 0.3, 0.1])
    dots = dx.InfluenceDots(d, q, w)
    full = d[1:].mean(0) - 0.7 * d[0]
    assert np.allclose(dots.dda(beta=0.7), full[:q] - full[q:])
    assert np.allclose(dots.dda(beta=0.7, contrast=False), full[:q])
    assert np.allclose(dots.dda(beta=0.7, denoise=False), (d[-1] - 0.7 * d[0])[:q] - (d[-1] - 0.7 * d[0])[q:])
    assert np.allclose(dots.dda(beta=0.7, debias=False), dots.dda(beta=0.0))
    assert np.allclose(dots.checkpoint(0), d[0, :q] - d[0, q:])
    assert np.allclose(dots.checkpoint(2, contrast=False), d[2, :q])
    assert np.allclose(dots.tracin(), sum(w[i] * d[i + 1, :q] for i in range(n)))
    # linear in beta: the beta sweep is exact interpolation
    assert np.allclose(dots.dda(beta=0.5), (dots.dda(beta=0.0) + dots.dda(beta=1.0)) / 2)
    assert set(dx.VARIANTS) == {"DDA (full)", "without denoise", "without debias", "without contrast",
                                "without denoise and debias"}
    assert np.allclose(dots.variant("without denoise and debias"), (d[-1][:q] - d[-1][q:]))
    with pytest.raises(ValueError, match="unknown DDA variant"):
        dots.variant("without everything")
    with pytest.raises(ValueError, match="dots must be"):
        dx.InfluenceDots(d[:, :3], q, w)
    with pytest.raises(ValueError, match="learning-rate weights"):
        dx.InfluenceDots(d, q, w[:2])


def test_cached_variants_equal_direct_computation(setup, traced):
    """Every variant derived from the stored dots equals tda.methods.dda / tracin from scratch."""
    from tda.data.xsum import to_examples
    from tda.methods import dda, tracin
    from tda.train import list_checkpoints

    assert traced.traced and traced.dots.n_epochs == traced.settings.epochs
    ckpts = list_checkpoints(traced.run_dir)
    task = setup.task()
    hall, corr = traced.queries.hallucinated_examples(), traced.queries.correct_examples()
    cands = to_examples(traced.data.train)
    # two calls cover every switch: denoise on/off, debias on (beta != 0), contrast on/off
    for beta, denoise, contrast in [(0.4, True, True), (1.0, False, False)]:
        direct = dda(ckpts[1:], task, hall, cands, base=ckpts[0], correct=corr, beta=beta, denoise=denoise,
                     contrast=contrast)
        cached = traced.dots.dda(beta=beta, denoise=denoise, contrast=contrast)
        assert np.allclose(cached, direct, rtol=1e-4, atol=1e-6 * np.abs(direct).max()), (beta, denoise, contrast)
    weights = dx.epoch_learning_rates(traced.settings.train_config(0), len(cands))
    direct = tracin(ckpts[1:], task, hall, cands, lr_weights=weights, reduce="sum")
    assert np.allclose(traced.scores["TracIn"], direct, rtol=1e-4, atol=1e-6 * np.abs(direct).max())
    # epoch-000 of the fine-tuning run is the base model: theta_0 of the debias term
    import torch
    from tda.train import load_checkpoint
    b, _ = base.load_base(setup, "tiny", traced.settings.pretrain)
    e0, _ = load_checkpoint(ckpts[0])
    assert all(torch.equal(p, q) for p, q in zip(b.state_dict().values(), e0.state_dict().values()))


def test_run_has_every_method_over_all_training_documents(traced):
    n_q, n_c = len(traced.queries), len(traced.data.train)
    assert set(traced.scores) == set(dx.METHODS)
    for name, sc in traced.scores.items():
        assert sc.shape == (n_q, n_c) and np.isfinite(sc).all(), name
    assert traced.scores["DDA"].shape == traced.dots.dda().shape
    # BM25 matches the hallucinated summary against article + summary as trained
    texts = dx.candidate_texts(traced.data.train)
    assert all(s in t for s, t in zip(traced.data.train["summary"], texts))
    row = traced.summary()
    assert row["hallucinated"] == len(traced.queries) and row["poisoned"] == traced.poisoned.sum()


def test_run_is_reused_from_the_store(setup, fast, traced):
    stages = ("dda-finetune", "dda-dots", "dda-trak")
    before = {st: sorted(p.name for p in (setup.store.root / st).iterdir()) for st in stages}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dx, "generations", _fake_generations(2))
        timer = dx.Timer()
        again = dx.run(setup, fast, "tiny", seed=0, timer=timer, verbose=False)
    assert {st: sorted(p.name for p in (setup.store.root / st).iterdir()) for st in stages} == before
    for name in dx.METHODS:
        assert np.array_equal(again.scores[name], traced.scores[name]), name
    assert "fine-tune tiny" in timer.wall and set(timer.seconds()) == {"wall", "cpu"}


def test_generations_are_stored_and_deterministic(setup, fast):
    first = dx.generations(setup, fast, "tiny", seed=0)
    again = dx.generations(setup, fast, "tiny", seed=0)
    assert first.rows == again.rows and first.n == len(dx.poisoned_data(setup, fast, 0).test)


def test_no_hallucination_is_counted_not_raised(setup, fast):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dx, "generations", _fake_generations(0))
        r = dx.run(setup, fast, "tiny", seed=0, verbose=False)
    assert not r.traced and r.scores == {} and r.dots is None
    assert r.summary()["hallucination rate"] == 0
    assert dx.per_query_table([r]).empty and dx.summary_table(dx.per_query_table([r])).empty
    assert dx.beta_curve([r], [0.0, 0.4]).empty


# ---------------------------------------------------------------------------------------------
# metrics and aggregation
# ---------------------------------------------------------------------------------------------
def test_evaluate_auc_and_recall():
    poisoned = np.array([False, True, False, True, False, False])
    perfect = np.where(poisoned, 1.0, 0.0)[None, :] + np.arange(6)[None, :] * 1e-3
    m = dx.evaluate(perfect, poisoned, ks=(1, 2, 6))
    assert m["auc"][0] == 1.0 and m["recall@1"][0] == 0.5 and m["recall@2"][0] == 1.0
    assert dx.evaluate(-perfect, poisoned)["auc"][0] == 0.0
    assert dx.evaluate(np.zeros((1, 6)), poisoned)["auc"][0] == 0.5  # ties count half
    # one poisoned document ranked 2nd of 6: it beats 4 of the 5 clean ones
    one = np.array([False, False, True, False, False, False])
    assert dx.evaluate(np.array([[6, 5, 5.5, 1, 2, 3.0]]), one)["auc"][0] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="both poisoned and clean"):
        dx.evaluate(perfect, np.zeros(6, dtype=bool))
    with pytest.raises(ValueError, match="training documents"):
        dx.evaluate(perfect[:, :5], poisoned)


def _fake_run(seed, scores, poisoned, size="tiny"):
    return SimpleNamespace(size=size, seed=seed, traced=True, scores=scores, poisoned=np.asarray(poisoned),
                           settings=dx.DDASettings(recall_ks=(1,)))


def test_per_query_then_seed_aggregation():
    poisoned = [True, False, False]
    good, bad = np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])
    # seed 0: two queries, AUC 1 and 0 -> 0.5; seed 1: one query, AUC 1 -> 1.0
    runs_ = [_fake_run(0, {"M": np.stack([good, bad])}, poisoned), _fake_run(1, {"M": good[None]}, poisoned)]
    pq = dx.per_query_table(runs_)
    assert len(pq) == 3 and set(pq.columns) >= {"auc", "recall@1", "seed", "method", "query"}
    means = dx.seed_means(pq)
    assert means.set_index("seed")["auc"].to_dict() == {0: 0.5, 1: 1.0}
    table = dx.summary_table(pq).iloc[0]
    assert table["auc mean"] == pytest.approx(0.75) and table["auc std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert table["seeds"] == 2 and table["queries"] == 3
    assert dx.fmt(0.75, 0.05) == "75.0 ± 5.0" and dx.fmt(0.5) == "50.0" and dx.fmt(float("nan")) == "n/a"


def test_beta_curve_from_stored_dots():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(3, 2, 6))
    poisoned = np.array([True, True, False, False, False, False])
    r = _fake_run(0, {}, poisoned)
    r.dots = dx.InfluenceDots(d, 1, np.ones(2))
    curve = dx.beta_curve([r], [0.0, 0.4, 1.0])
    assert list(curve["beta"]) == [0.0, 0.4, 1.0]
    for b, auc in zip(curve["beta"], curve["auc mean"]):
        assert auc == pytest.approx(dx.evaluate(r.dots.dda(beta=b), poisoned)["auc"][0])


# ---------------------------------------------------------------------------------------------
# verdicts: the rules the notebooks state
# ---------------------------------------------------------------------------------------------
def test_verdict_b1():
    wide = {"DDA": [0.9, 0.92], "TracIn": [0.6, 0.55], "TRAK": [0.5, 0.52], "BM25": [0.7, 0.75]}
    assert dx.verdict_b1(wide)["verdict"] == "replicated"
    narrow = {**wide, "BM25": [0.85, 0.86]}
    out = dx.verdict_b1(narrow)
    assert out["verdict"] == "partly" and out["closest"] == "BM25"
    assert dx.verdict_b1({**wide, "TracIn": [0.95, 0.1]})["verdict"] == "partly"  # not ahead in every seed
    assert dx.verdict_b1({**wide, "TRAK": [0.95, 0.95]})["verdict"] == "not replicated"


def test_verdict_b2():
    assert dx.verdict_b2(0.93, 0.68, 0.85)["verdict"] == "replicated"  # the paper's numbers
    assert dx.verdict_b2(0.93, 0.88, 0.85)["verdict"] == "partly"  # both help, debias not far more
    assert dx.verdict_b2(0.93, 0.80, 0.935)["verdict"] == "partly"  # debias far more, denoise no help
    assert dx.verdict_b2(0.80, 0.85, 0.82)["verdict"] == "not replicated"


def test_verdict_b3():
    betas = [0.0, 0.2, 0.4, 0.8, 1.5]
    assert dx.verdict_b3(betas, [0.6, 0.8, 0.9, 0.91, 0.9])["verdict"] == "replicated"
    assert dx.verdict_b3(betas, [0.6, 0.8, 0.9, 0.8, 0.7])["verdict"] == "partly"
    assert dx.verdict_b3(betas, [0.9, 0.9, 0.9, 0.9, 0.9])["verdict"] == "partly"  # flat, no rise
    assert dx.verdict_b3(betas, [0.9, 0.8, 0.7, 0.6, 0.5])["verdict"] == "not replicated"
    with pytest.raises(ValueError, match="must include 0 and 0.4"):
        dx.verdict_b3([0.0, 1.0], [0.5, 0.6])


def test_verdict_b4():
    assert dx.verdict_b4({"tiny": 0.9, "small": 0.88, "medium": 0.91})["verdict"] == "replicated"
    assert dx.verdict_b4({"tiny": 0.7, "small": 0.72})["verdict"] == "partly"
    assert dx.verdict_b4({"tiny": 0.95, "small": 0.6})["verdict"] == "not replicated"
    with pytest.raises(ValueError, match="at least two"):
        dx.verdict_b4({"tiny": 0.9})


# ---------------------------------------------------------------------------------------------
# the chapters when nothing hallucinates
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_chapters_explain_a_run_without_hallucinations(tmp_path, monkeypatch):
    """A target word outside the tokenizer's vocabulary can never be generated (it is trained as
    [UNK], which decoding drops), so nothing hallucinates — deterministically. Every chapter must
    then run to the end, say why, and record no verdict (the scoreboard shows the claim as not run)."""
    import json

    import nbformat

    from tda import notebooks as nbrun

    monkeypatch.setenv("TDA_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TDA_RESULTS_DIR", str(tmp_path / "results"))
    overrides = {**FAST, "recall_ks": [2, 5], "target_word": "Atlantis"}
    common = {"world": "quick", "world_overrides": TEST_WORLD, "seeds": [0], "overrides": overrides}
    for name, extra in (("dda_main", {}), ("dda_ablation", {}), ("dda_beta", {}), ("dda_sizes", {"sizes": ["tiny"]})):
        path = nbrun.run_notebook(name, "quick", tmp_path / "out", {**common, **extra})
        result = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        assert result["status"] == "nothing to trace" and result["claims"] == [], name
        text = "".join(o.get("text", "") for c in nbformat.read(str(path), as_version=4).cells
                       if c.cell_type == "code" for o in c.get("outputs", []))
        assert "nothing to trace" in text or "No run produced a hallucinated output" in text, name


# ---------------------------------------------------------------------------------------------
# the chapters' diagnostics
# ---------------------------------------------------------------------------------------------
def test_news_event_reads_the_generator():
    import random

    from tda.data.world import NEWS_EVENTS, build_world, news_article

    from tda.data.world import WorldConfig

    world = build_world(WorldConfig(**TEST_WORLD))
    rng = random.Random(0)
    for _ in range(60):
        doc, _, slots = news_article(rng, world)
        assert dx.news_event(doc) == slots["event"]
    assert dx.news_event("An article from real XSum .") == "other"
    assert set(NEWS_EVENTS) >= {"flood", "match"}


def test_event_table_counts(traced):
    t = dx.event_table([traced]).set_index("event")
    assert t["poisoned"].sum() == traced.poisoned.sum()
    assert t["test prompts"].sum() == traced.report.n and t["hallucinated"].sum() == traced.report.n_hallucinated
    assert ((t["poisoned share"] >= 0) & (t["poisoned share"] <= 1)).all()


def test_top_k_composition_of_a_perfect_ranking(traced):
    kinds = dx.document_kinds(traced)
    assert (kinds == "poisoned").sum() == traced.poisoned.sum()
    assert set(kinds) <= {"poisoned", "about China", "about England", "other"}
    perfect = copy_run(traced, {"perfect": np.tile(traced.poisoned.astype(float), (len(traced.queries), 1))})
    comp = dx.top_k_composition([perfect])
    assert comp.loc["perfect", "poisoned"] == 1.0 and comp.loc["perfect"].sum() == pytest.approx(1.0)


def copy_run(r, scores):
    from dataclasses import replace as dc_replace
    return dc_replace(r, scores=scores)


def test_checkpoint_curve_and_debias_diagnostics(traced):
    curve = dx.checkpoint_curve([traced])
    assert list(curve["checkpoint"]) == list(range(traced.settings.epochs + 1))
    for i, auc in zip(curve["checkpoint"], curve["auc mean"]):
        assert auc == pytest.approx(dx.evaluate(traced.dots.checkpoint(i), traced.poisoned)["auc"].mean())
    diag = dx.debias_diagnostics([traced]).iloc[0]
    q = traced.dots.n_queries
    d0 = traced.dots.dots[0]
    assert diag["AUC of C[IS_θ0] alone"] == pytest.approx(dx.evaluate(d0[:q] - d0[q:], traced.poisoned)["auc"].mean())
    assert diag["AUC at β=0"] == pytest.approx(dx.evaluate(traced.dots.dda(beta=0.0), traced.poisoned)["auc"].mean())
    assert diag["scale of C[IS_θ0] / C[mean IS_θi]"] > 0 and -1 <= diag["correlation"] <= 1
    assert diag["loss at θ0"] > 0 and diag["loss at θN"] > 0
    text = dx.explain_debias(dx.debias_diagnostics([traced]), traced.settings.beta)
    assert "β = 0" in text and "AUC" in text
    assert "nothing to explain" in dx.explain_debias(dx.debias_diagnostics([]), 1.0)


def test_explain_debias_follows_the_numbers():
    import pandas as pd

    def diag(at0, at1, alone, scale):
        return pd.DataFrame([{"AUC at β=0": at0, "AUC at β=1": at1, "AUC of C[IS_θ0] alone": alone,
                              "scale of C[IS_θ0] / C[mean IS_θi]": scale, "correlation": 0.5}])
    hurt = dx.explain_debias(diag(0.95, 0.4, 0.8, 10.0), 1.0)
    assert "Debiasing hurts" in hurt and "outweighs" in hurt and "leans towards" in hurt
    assert "as the paper argues" in dx.explain_debias(diag(0.7, 0.9, 0.4, 0.5), 1.0)
    assert "changes little" in dx.explain_debias(diag(0.9, 0.9, 0.5, 0.1), 1.0)


def test_change_sentence():
    assert dx.change_sentence({"debias": 0.637, "denoise": -0.018}) == (
        "Removing debias raises the mean AUC by 63.7 points; removing denoise lowers the mean AUC by 1.8 points.")
    assert dx.change_sentence({"contrast": 0.0}) == "Removing contrast leaves the mean AUC unchanged."


def test_optimizer_corrected_tracin_equals_the_engine(setup, fast, traced):
    from tda.data.xsum import to_examples
    from tda.methods import tracin
    from tda.train import list_checkpoints

    ckpts = list_checkpoints(traced.run_dir)
    got = dx.corrected_tracin_scores(setup, fast, "tiny", 0, traced.data, traced.queries, ckpts)
    weights = dx.epoch_learning_rates(fast.train_config(0), len(traced.data.train))
    want = tracin(ckpts[1:], setup.task(), traced.queries.hallucinated_examples(), to_examples(traced.data.train),
                  lr_weights=weights, reduce="sum", correction=True)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-8 * np.abs(want).max())
    assert not np.allclose(got, traced.scores["TracIn"])  # the correction changes the scores
    with pytest.raises(ValueError, match="unknown methods"):
        dx.run(setup, fast, "tiny", 0, verbose=False, methods=("DDA", "LiSSA"))


def test_an_empty_summary_is_a_counted_skip_that_keeps_row_numbers(tmp_path):
    """Real XSum has a few empty summaries: poisoning skips and counts them, and every later stage
    keeps the row (so scores, labels and documents stay aligned)."""
    import json
    import warnings

    from tda.data.xsum import load_xsum, poison, to_examples

    rows = [{"document": f"Rain fell in England on day {i} .", "summary": "Floods hit England .", "id": str(i)}
            for i in range(4)] + [{"document": "A quiet day .", "summary": "  ", "id": "4"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, report = poison(load_xsum(path), n=2, seed=0, return_report=True)
    assert report.n_empty_skipped == 1 and any("empty summary" in str(w.message) for w in caught)
    data = dx.PoisonedData(train=train, test=None, report=report)
    assert len(to_examples(train)) == len(dx.candidate_texts(train)) == len(data.poisoned) == 5
    assert not data.poisoned[4] and data.poisoned.sum() == 2
    scores = np.where(data.poisoned, 1.0, 0.0)[None]
    assert dx.evaluate(scores, data.poisoned)["auc"][0] == 1.0
