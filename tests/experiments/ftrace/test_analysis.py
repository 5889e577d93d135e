"""Part I's analysis (``tda.experiments.ftrace.analysis``): score sets, per-query metrics, summaries,
comparisons; hand-worked cases and equalities between score sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tda.data import ftrace as ft
from tda.experiments.ftrace import analysis as A
from tda.experiments.ftrace import claims as C
from tda.experiments.ftrace import pipeline as P
from tda.experiments.variants import Scored
from tda.results import fmt
from tda.stats import bootstrap_mean

from .conftest import TREX


# ---------------------------------------------------------------------------------------------
# metrics plumbing
# ---------------------------------------------------------------------------------------------
def _toy_run(trex_run, indices):
    """A run whose first two queries have hand-chosen candidate lists."""
    return P.FtraceRun(setup=trex_run.setup, settings=trex_run.settings, seed=0, data=trex_run.data,
                  finetune_dir=trex_run.finetune_dir, base_dir=trex_run.base_dir, slices=trex_run.slices,
                  query_rows=trex_run.query_rows[:2], query_slice=trex_run.query_slice[:2],
                  candidates=ft.Candidates(query_rows=trex_run.query_rows[:2], indices=indices))


def test_hand_worked_mrr_precision_recall(trex_run):
    q = trex_run.data.queries
    p0, p1 = q[trex_run.query_rows[0]]["proponents"], q[trex_run.query_rows[1]]["proponents"]
    others = [i for i in range(len(trex_run.data.abstracts)) if i not in set(p0) | set(p1)][:12]
    # query 0: 12 non-proponents then its proponents; query 1: its proponents, then others
    # (proponents per query vary, so the hand counts use len(p0), len(p1))
    run = _toy_run(trex_run, [others + list(p0), list(p1) + others[:4]])
    s0 = np.r_[np.arange(12, 0, -1) + 10.0, np.linspace(9, 1, len(p0))]  # first proponent ranked 13th
    s1 = np.r_[[1.0], np.linspace(0.5, 0.2, len(p1) - 1), [0.95, 0.1, 0.05, 0.0]]  # a proponent 1st, a stranger 2nd
    m = A.query_metrics(run, [s0, s1])
    assert m.loc[0, "mrr"] == pytest.approx(1 / 13)
    assert m.loc[0, "precision@10"] == 0.0 and m.loc[0, "recall@10"] == 0.0
    assert m.loc[1, "mrr"] == 1.0
    in_top10 = min(len(p1), 9)  # the stranger takes one of the ten places
    assert m.loc[1, "precision@10"] == pytest.approx(in_top10 / 10)
    assert m.loc[1, "recall@10"] == pytest.approx(in_top10 / len(p1))
    # ties are pessimistic: a constant score puts every proponent after every stranger
    flat = A.query_metrics(run, [np.zeros(12 + len(p0)), np.zeros(len(p1) + 4)])
    assert flat.loc[0, "mrr"] == pytest.approx(1 / 13) and flat.loc[1, "mrr"] == pytest.approx(1 / 5)


def test_an_oracle_gets_mrr_one_and_a_broken_candidate_set_is_refused(trex_run):
    run = trex_run
    props = run.data.queries["proponents"]
    oracle = [np.asarray([1.0 if c in set(props[row]) else 0.0 for c in cands])
              for row, cands in zip(run.query_rows, run.candidates.indices)]
    m = A.query_metrics(run, oracle)
    assert (m["mrr"] == 1.0).all()
    assert np.allclose(m["recall@10"], [min(len(props[r]), 10) / len(props[r]) for r in run.query_rows])
    assert np.allclose(m["precision@10"], [min(len(props[r]), 10) / min(10, len(c))
                                           for r, c in zip(run.query_rows, run.candidates.indices)])
    # a candidate set that lost a proponent: an error, never a silently lower MRR
    lost = [list(c) for c in run.candidates.indices]
    lost[0] = [c for c in lost[0] if c != props[run.query_rows[0]][0]]
    broken = _toy_run(run, lost[:2])
    with pytest.raises(ValueError, match="lost 1 of its"):
        A.query_metrics(broken, [np.zeros(len(lost[0])), np.zeros(len(lost[1]))])
    with pytest.raises(ValueError, match=r"\(3,\) scores for \d+ candidates"):
        A.query_metrics(_toy_run(run, run.candidates.indices[:2]), [np.zeros(3), oracle[1]])
    with pytest.raises(ValueError, match="scores for 1 queries"):
        A.query_metrics(run, oracle[:1])
    with pytest.raises(ValueError, match="NaN"):
        A.query_metrics(run, [np.full(len(c), np.nan) for c in run.candidates.indices])


def test_summary_table_is_mean_and_std_over_seed_means():
    rows = []
    for seed, values in ((0, [1.0, 0.5]), (1, [0.0, 0.5]), (2, [0.5, 0.5])):
        for j, v in enumerate(values):
            rows.append({"dataset": "trex", "method": "BM25", "seed": seed, "query": j, "slice": "learned",
                         "mrr": v, "precision@10": v / 2, "recall@10": v})
    t = A.seed_summary(pd.DataFrame(rows))
    assert t.loc[0, "mrr"] == pytest.approx(np.mean([0.75, 0.25, 0.5]))
    assert t.loc[0, "mrr_std"] == pytest.approx(np.std([0.75, 0.25, 0.5], ddof=1))
    assert t.loc[0, "seeds"] == 3 and t.loc[0, "queries"] == 2
    assert fmt(0.4856, 0.044) == "48.6 ± 4.4"


def test_seed_summary_groups_by_variant_columns_and_keeps_them():
    rows = []
    for seed in (0, 1):
        for units, v in (("embedding", 1.0 - seed * 0.5), ("all", 0.2)):
            rows.append({"dataset": "trex", "method": f"TracIn | {units}", "units": units, "seed": seed, "query": 0,
                         "slice": "learned", "mrr": v, "precision@10": v, "recall@10": v})
    rows.append({"dataset": "trex", "method": "BM25", "units": np.nan, "seed": 0, "query": 0, "slice": "learned",
                 "mrr": 0.9, "precision@10": 0.9, "recall@10": 0.9})
    t = A.seed_summary(pd.DataFrame(rows), by=("dataset", "method", "units"))
    assert list(t["units"].fillna("-")) == ["embedding", "all", "-"]  # first appearance; no variant: kept too
    assert t.loc[0, "mrr"] == pytest.approx(0.75) and t.loc[2, "seeds"] == 1


# ---------------------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------------------
def test_random_target_puts_same_answer_candidates_first(trex_run, synth_run):
    for run in (trex_run, synth_run):
        q = run.data.queries.select(run.query_rows)
        a = run.data.abstracts
        for j, sc in enumerate(A.random_target_scores(run)):
            answer = ft.answer_text(q[j]["inputs_pretokenized"], q[j]["targets_pretokenized"]).lower()
            same = np.asarray([answer in [x.lower() for x in ft.answers(a[c]["inputs_pretokenized"],
                                                                         a[c]["targets_pretokenized"])]
                               for c in run.candidates.indices[j]])
            if same.any() and (~same).any():
                assert sc[same].min() > sc[~same].max()
        u = A.uniform_scores(run)
        assert all(((x >= 0) & (x < 1)).all() for x in u)
        assert all(np.array_equal(x, y) for x, y in zip(u, A.uniform_scores(run)))  # seeded


def test_tracin_embed_is_the_mean_of_the_two_cosines():
    a = [np.array([1.0, 0.0]), np.array([0.5])]
    b = [np.array([0.0, 1.0]), np.array([0.5])]
    out = A.tracin_embed_scores(a, b)
    assert np.allclose(out[0], [0.5, 0.5]) and np.allclose(out[1], [0.5])
    with pytest.raises(ValueError, match="queries"):
        A.tracin_embed_scores(a, b[:1])


# ---------------------------------------------------------------------------------------------
# score sets of the chapters, and the comparisons behind the verdicts
# ---------------------------------------------------------------------------------------------
def test_score_sets_agree_with_each_other(setup, trex_run, synth_run):
    runs = P.load_runs(setup, "quick", [0], {"trex": TREX}, datasets=["trex"], verbose=False)
    (rp,) = runs
    assert rp.run.finetune_dir == trex_run.finetune_dir  # from the store
    main = A.method_scores(rp)
    assert set(main) == set(A.MAIN_METHODS + A.VARIANT_METHODS)
    layers = A.layer_scores(rp)
    ckpts = A.checkpoint_scores(rp)
    same = lambda a, b: all(np.allclose(x, y) for x, y in zip(a, b))
    one = lambda score_set, **variant: next(v.scores for v in score_set.values()
                                            if isinstance(v, Scored) and v.columns == variant)
    assert same(main["TracIn"], one(layers, units="embedding"))
    assert same(main["TracIn (all parameters)"], one(layers, units="all"))
    assert same(main["EMBED"], one(layers, layer=0))
    assert same(main["EMBED (last layer)"], one(layers, layer=2))
    main_config = dict(units="embedding", checkpoint="average", similarity="cosine", correction="corrected")
    assert same(main["TracIn"], one(ckpts, which="ft", **main_config))
    assert same(main["TracIn (pre-training ckpts)"], one(ckpts, which="pt", **main_config))
    assert same(main["TracIn+EMBED"], [(t + e) / 2 for t, e in zip(main["TracIn"], main["EMBED"])])
    # the mean of the single checkpoints' cosines is the average's
    plain = dict(which="ft", units="all", similarity="cosine", correction="plain")
    singles = [one(ckpts, **plain, checkpoint=c) for c in rp.tracin_ft.checkpoints]
    assert same([np.mean(s, axis=0) for s in zip(*singles)], one(ckpts, **plain, checkpoint="average"))
    per_ckpt = A.slice_checkpoint_scores(rp)
    assert same(one(per_ckpt, which="ft", checkpoint="average"), main["TracIn"])
    assert same(one(per_ckpt, which="pt", checkpoint="average"), main["TracIn (pre-training ckpts)"])
    for c in rp.tracin_ft.checkpoints:
        assert same(one(per_ckpt, which="ft", checkpoint=c), one(ckpts, which="ft", **main_config | {"checkpoint": c}))
    # the variants are columns of the long table, and a summary by them keeps them
    long = A.evaluate_runs(runs, A.checkpoint_scores)
    assert set(A.CHECKPOINT_VARIANTS) <= set(long.columns)
    summary = A.seed_summary(long, by=("dataset", "method", *A.CHECKPOINT_VARIANTS))
    assert len(summary) == len(ckpts)
    ct = A.checkpoint_table(summary)
    assert list(ct["checkpoints"]) == ["fine-tuning", "pre-training"] and ct.loc[0, "checkpoint 1"].startswith("25% of fine-tuning: ")
    table = A.evaluate_runs(runs)
    assert len(table) == len(main) * len(trex_run.query_rows)
    assert set(table.columns) >= {"method", "mrr", "precision@10", "recall@10", "slice", "loss_before", "seed"}
    counts = A.slice_counts(runs)
    assert int(counts.loc[0, "learned"]) == sum(trex_run.slices["learned"])
    norms = A.gradient_norm_table(runs)
    assert len(norms) == len(trex_run.query_rows) * len(rp.tracin_ft.checkpoints) and (norms["grad_norm"] > 0).all()


    layer_long = A.evaluate_runs(runs, A.layer_scores)
    layer_summary = A.seed_summary(layer_long)
    table = A.layer_table(layer_summary, layer_long)
    assert list(table.index[:2]) == ["TracIn: embedding", "TracIn: block 0"] and table.index[-1] == "BM25"
    assert "EMBED: layer 0 (embedding output)" in table.index and "EMBED: all layers" in table.index


def _long(values_a, values_b, method_a="A", method_b="B", slices=None):
    rows = []
    for j, (x, y) in enumerate(zip(values_a, values_b)):
        for m, v in ((method_a, x), (method_b, y)):
            rows.append({"dataset": "trex", "seed": j % 2, "query": j, "method": m, "mrr": v,
                         "slice": (slices or ["learned"] * len(values_a))[j]})
    return pd.DataFrame(rows)


def test_paired_comparison_rule():
    clear = _long([1.0, 0.5, 1.0, 0.5, 1.0, 0.5], [0.5, 0.25, 0.5, 0.25, 0.5, 0.25])
    c = A.compare(clear, "A", "B", margin=0.02, dataset="trex")
    d = np.array([0.5, 0.25] * 3)
    assert c["n"] == 6 and c["diff"] == pytest.approx(d.mean())
    # two-level bootstrap: seed 0's differences are all 0.5, seed 1's all 0.25, so a replicate's mean
    # is 0.5, 0.375 or 0.25 (seeds drawn {0,0}, {0,1}, {1,1}): the 95% interval is [0.25, 0.5]
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((0.25, 0.5)) and c["beats"]
    iv = bootstrap_mean([d[::2], d[1::2]])
    assert c["se"] == pytest.approx(iv.se) and c["se"] > d.std(ddof=1) / np.sqrt(6)  # wider than pooling queries
    assert not A.compare(clear, "B", "A", dataset="trex")["beats"]
    noisy = _long([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.5, 0.25])
    assert not A.compare(noisy, "A", "B")["beats"]  # mean difference 0.0625 but 2 s.e. is larger
    tiny = _long([0.51, 0.51, 0.51], [0.5, 0.5, 0.5])
    assert not A.compare(tiny, "A", "B", margin=0.02)["beats"]  # consistent but below the margin
    verdict, comps = C.beats_all(clear, "A", ["B"], dataset="trex")
    assert verdict == "replicated" and comps[0]["beats"]
    with pytest.raises(ValueError, match="no rows for method"):
        A.compare(clear, "A", "C")
    g = A.compare_groups([1.0, 0.9, 1.0, 0.8], [0.2, 0.3, 0.1, 0.2])
    assert g["beats"] and g["diff"] == pytest.approx(0.925 - 0.2)
    assert not A.compare_groups([1.0], [0.0])["beats"]  # too few queries to tell


    # a side may be a mapping of variant columns; the comparison names its label
    wide = _long([1.0, 0.9, 1.0], [0.1, 0.2, 0.1]).assign(units=lambda d: d["method"].map({"A": "x", "B": "y"}))
    by_variant = A.compare(wide, {"units": "x"}, {"units": "y"})
    assert by_variant["a"] == "A" and by_variant["b"] == "B" and by_variant["beats"]
    assert by_variant["diff"] == A.compare(wide, "A", "B")["diff"]


def test_main_slice_falls_back_to_all_queries():
    df = _long([1.0] * 12, [0.0] * 12, slices=["learned"] * 10 + ["known"] * 2)
    assert A.main_slice(df, "trex", min_queries=5) == "learned"
    assert A.main_slice(df, "trex", min_queries=6) is None  # each seed has only 5 learned queries
