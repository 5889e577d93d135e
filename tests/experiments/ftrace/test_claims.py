"""Part I's claims (``tda.experiments.ftrace.claims``): each verdict on hand-made per-query tables, one
case per verdict value; the paper's figures as the chapters print them; the scoreboard rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tda.experiments.ftrace import claims as C
from tda.experiments.ftrace import guards as G
from tda.experiments.ftrace.analysis import CHECKPOINT_VARIANTS, compare_groups, seed_summary
from tda.results import NOT_TESTABLE, VERDICTS

N = 10  # queries per method in the hand-made tables: 5 per seed, enough for the learned slice
# every guard holds (values on the right side of each threshold)
OK = G.check({"bm25_whole_set_mrr": 0.8, "known_retained_min": 0.95, "new_learned": 0.6, "synth_learned": 0.9})


def long_table(values: dict, dataset: str = "trex", slice_="learned", n: int = N, **variant_columns) -> pd.DataFrame:
    """A per-query table: ``values[label]`` is the MRR of every query of that method (constant but
    for a small alternating wobble, so that paired differences have a standard error)."""
    rows = []
    for label, v in values.items():
        for q in range(n):
            rows.append({"dataset": dataset, "seed": q % 2, "query": q, "method": label, "slice": slice_,
                         "mrr": float(np.clip(v + (0.01 if q % 2 else -0.01), 0, 1)),
                         **{col: f(label) for col, f in variant_columns.items()}})
    return pd.DataFrame(rows)


def test_extreme_is_undefined_when_one_value_is():
    assert C.extreme([0.3, -0.1]) == -0.1 and C.extreme([0.3, -0.1], max) == 0.3
    for values in ([float("nan"), 0.3], [0.3, float("nan")], []):  # wherever the NaN stands
        assert np.isnan(C.extreme(values)) and np.isnan(C.extreme(values, max))
    comps = [{"a": "BM25", "b": "TracIn", "diff": 0.3}, {"a": "BM25", "b": "EMBED", "diff": float("nan")}]
    assert C.beats_all_headline(comps, "trex", 0.02) is None  # nothing to draw: the row says so
    assert C.beats_all_headline(comps[:1], "trex", 0.02)["paper"] == pytest.approx(77.55 - 48.56)


def test_paper_figures_are_printed_as_the_paper_reads():
    assert C.paper_figure(77.55, 1.50) == "77.6 ± 1.5"  # half up on the printed decimal, not the binary float
    assert C.paper_figure(100.0, 0.0) == "100.0 ± 0" and C.paper_figure(19.7) == "19.7"
    table = C.paper_vs_ours(pd.DataFrame([{"dataset": "trex", "method": "BM25", "mrr": 0.5, "mrr_std": 0.1,
                                           "recall@10": 0.4, "recall@10_std": 0.0, "precision@10": 0.2,
                                           "precision@10_std": 0.0}]), "trex", ["BM25", "EMBED"])
    assert table.loc[0, "mrr paper"] == "77.6 ± 1.5" and table.loc[0, "mrr ours"] == "50.0 ± 10.0"
    assert table.loc[0, "precision@10 paper"] == "" and table.loc[1, "mrr ours"] == "n/a"


# ---------------------------------------------------------------------------------------------
# A1 and A5: one method beats two others
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tracin, embed, verdict", [(0.5, 0.6, "replicated"), (0.5, 0.89, "partly"),
                                                     (0.95, 0.89, "not replicated")])
def test_verdict_a1(tracin, embed, verdict):
    pq = long_table({"BM25": 0.9, "TracIn": tracin, "EMBED": embed})
    a1 = C.verdict_a1(pq, margin=0.02, slice_="learned", guards=OK)
    assert a1["verdict"] == verdict and [c["b"] for c in a1["comparisons"]] == ["TracIn", "EMBED"]
    # the headline: BM25's lead over the better of the two, ours and the paper's (77.55 - 64.29), in MRR points
    assert a1["headline"]["ours"] == pytest.approx((0.9 - max(tracin, embed)) * 100)
    assert a1["headline"]["ours"] == pytest.approx(min(c["diff"] for c in a1["comparisons"]) * 100)
    assert a1["headline"]["paper"] == pytest.approx(77.55 - 64.29) and a1["headline"]["threshold"] == pytest.approx(2)
    assert a1["headline"]["unit"] == "MRR points" and "BM25's MRR minus" in a1["headline"]["metric"]
    other = long_table({"BM25": 0.0, "TracIn": 1.0, "EMBED": 1.0}, dataset="synth")  # the rule reads TREx only
    assert C.verdict_a1(pd.concat([pq, other]), margin=0.02, slice_="learned", guards=OK)["verdict"] == verdict
    # BM25 at its ceiling over the whole set: A1 is not testable here, whatever the rule gives
    ceiling = G.check({"bm25_whole_set_mrr": 0.97, "known_retained_min": 0.95, "new_learned": 0.6})
    guarded = C.verdict_a1(pq, margin=0.02, slice_="learned", guards=ceiling)
    assert guarded["verdict"] == NOT_TESTABLE and guarded["rule_outcome"] == verdict
    assert "whole-set BM25 MRR" in guarded["reason"] and "0.970, required < 0.95 (short by 0.020)" in guarded["reason"]


@pytest.mark.parametrize("bm25, embed, verdict", [(0.5, 0.6, "replicated"), (0.95, 0.6, "partly"),
                                                   (0.95, 0.99, "not replicated")])
def test_verdict_a5(bm25, embed, verdict):
    pq = pd.concat([long_table({"TracIn": 0.9, "BM25": bm25, "EMBED": embed}, dataset="synth"),
                    long_table({"TracIn": 0.0, "BM25": 1.0, "EMBED": 1.0}, dataset="trex")])  # ignored
    a5 = C.verdict_a5(pq, margin=0.02, guards=OK)
    assert a5["verdict"] == verdict
    assert a5["headline"]["ours"] == pytest.approx((0.9 - max(bm25, embed)) * 100)
    assert a5["headline"]["paper"] == pytest.approx(100.0 - 99.58)  # TracIn's lead over EMBED in the paper
    few = G.check({"synth_learned": 0.5})
    assert C.verdict_a5(pq, margin=0.02, guards=few)["verdict"] == NOT_TESTABLE


def test_records_a1_a5_carry_the_papers_figures_and_ours():
    pq = pd.concat([long_table({"BM25": 0.9, "TracIn": 0.5, "EMBED": 0.6}),
                    long_table({"TracIn": 0.9, "BM25": 0.5, "EMBED": 0.6}, dataset="synth")])
    summary = seed_summary(pq.assign(**{"precision@10": pq["mrr"], "recall@10": pq["mrr"]}))
    a1, a5 = C.verdict_a1(pq, slice_="learned", guards=OK), C.verdict_a5(pq, slice_="learned", guards=OK)
    row = C.record_a1(a1, a1, summary, "learned", 2, 0.02)
    assert row["paper"] == "MRR (%): BM25 77.6 ± 1.5, TracIn 48.6 ± 4.4, EMBED 64.3 ± 1.3 [2nd]"
    assert row["ours"].startswith("MRR (%): BM25 90.0 ± ") and "fine-tune-learned queries, 2 seeds" in row["ours"]
    assert row["verdict"] == "replicated" and row["verdict_with_variants"] == "replicated"
    assert row["headline"] == a1["headline"] and row["headline"]["ours"] == pytest.approx(30.0)
    assert "more than 0.02" in row["rule"] and len(row["comparisons"]) == 2
    assert row["failed_guards"] == [] and [g["name"] for g in row["guards"]] == ["bm25_whole_set_mrr"]
    bad = C.verdict_a1(pq, slice_="learned", guards=G.check({"bm25_whole_set_mrr": 0.99}))
    row = C.record_a1(bad, bad, summary, "learned", 2, 0.02)
    assert row["verdict"] == NOT_TESTABLE and "not testable here: the world failed its guard" in row["ours"]
    assert row["rule_outcome"] == "replicated" and row["failed_guards"][0]["name"] == "bm25_whole_set_mrr"
    row5 = C.record_a5(a5, a5, summary, None, 2)
    assert row5["paper"] == "MRR (%): TracIn 100.0 ± 0, EMBED 99.6 ± 0.2, BM25 87.7 ± 1.7 [2nd]"
    assert "all attributed queries" in row5["ours"] and row5["claim"] == C.STATEMENTS["A5"]


# ---------------------------------------------------------------------------------------------
# A2: the embedding layer against every other unit and layer
# ---------------------------------------------------------------------------------------------
def _layers(tracin: dict, embed: dict) -> pd.DataFrame:
    values = {**{f"TracIn | {u}": v for u, v in tracin.items()}, **{f"EMBED | layer {i}": v for i, v in embed.items()}}
    return long_table(values, units=lambda m: m.split(" | ")[1] if m.startswith("TracIn") else np.nan,
                      layer=lambda m: int(m.split()[-1]) if m.startswith("EMBED") else np.nan)


@pytest.mark.parametrize("block0, layer1, verdict", [(0.5, 0.5, "replicated"), (0.95, 0.5, "partly"),
                                                      (0.95, 0.95, "not replicated")])
def test_verdict_a2(block0, layer1, verdict):
    pq = _layers({"embedding": 0.8, "block.0": block0, "head": 0.4, "other": 0.99}, {0: 0.8, 1: layer1})
    a2 = C.verdict_a2(pq, margin=0.02, slice_="learned", guards=OK)
    assert a2["verdict"] == verdict
    # TracIn's embedding lead over its best other block (head 0.4, 'other' left out), the paper's 0.496 - 0.409
    assert a2["headline"]["ours"] == pytest.approx((0.8 - max(block0, 0.4)) * 100)
    assert a2["headline"]["paper"] == pytest.approx(8.7) and a2["headline"]["threshold"] == pytest.approx(-2)
    assert [c["a"] for c in a2["comparisons"]] == ["TracIn | block.0", "TracIn | head", "EMBED | layer 1"]  # not 'other'
    table = C.a2_comparison_table(a2)
    assert list(table["beats the embedding"]) == [block0 > 0.9, False, layer1 > 0.9]
    summary = seed_summary(pq.assign(**{"precision@10": 0.0, "recall@10": 0.0}))
    row = C.record_a2(a2, summary, pq, "learned", 2, 0.02)
    assert f"TracIn embedding 0.800 vs best other unit (block 0) {block0:.3f}" in row["ours"]
    assert f"EMBED layer 0 0.800 vs best other layer (1) {layer1:.3f}" in row["ours"]
    assert row["paper"].startswith("TracIn: embedding-only MRR 0.496 vs next-best block 0.409")
    assert row["headline"] == a2["headline"]

def test_a2_needs_evidence_that_the_embedding_is_best():
    """With one query there is no interval: nothing beats the embedding, yet nothing shows it is best
    (the rule before issue 11's review called this "replicated")."""
    pq = _layers({"embedding": 0.8, "block.0": 0.5, "head": 0.4}, {0: 0.8, 1: 0.5})
    one = pq[pq["query"] == 0]
    a2 = C.verdict_a2(one, margin=0.02, slice_="learned", guards=OK)
    assert a2["verdict"] == "not replicated"
    assert not a2["tracin_embedding_best"] and not a2["tracin_embedding_beaten"]
    assert C.verdict_a2(pq, margin=0.02, slice_="learned", guards=OK)["verdict"] == "replicated"
    # a challenger within the margin but whose interval reaches past it: no evidence either
    noisy = pq.copy()
    rows = noisy["units"] == "block.0"
    noisy.loc[rows, "mrr"] = [0.8 + (0.2 if q % 5 == 0 else -0.05) for q in noisy.loc[rows, "query"]]
    out = C.verdict_a2(noisy, margin=0.02, slice_="learned", guards=OK)
    block0 = next(c for c in out["comparisons"] if c["a"] == "TracIn | block.0")
    assert block0["diff"] < 0.02 < block0["ci_high"] and not block0["beats"]
    assert out["verdict"] == "partly" and not out["tracin_embedding_best"] and out["embed_layer0_best"]


# ---------------------------------------------------------------------------------------------
# A3: the best single checkpoint against the average
# ---------------------------------------------------------------------------------------------
def _checkpoints(values: dict) -> pd.DataFrame:
    """``values[(which, checkpoint)]``: TracIn's MRR in the main configuration (labels as
    ``checkpoint_scores`` writes them; the variant columns built beside them)."""
    labels = {f"{w} | embedding | {c} | cosine | corrected": v for (w, c), v in values.items()}
    columns = {k: (lambda m, i=i: m.split(" | ")[i]) for i, k in enumerate(CHECKPOINT_VARIANTS)}
    return pd.concat([long_table(labels, dataset=d, **columns) for d in ("trex", "synth")], ignore_index=True)


@pytest.mark.parametrize("ft_avg, pt_avg, verdict", [(0.7, 0.7, "replicated"), (0.95, 0.7, "partly"),
                                                      (0.95, 0.95, "not replicated")])
def test_verdict_a3(ft_avg, pt_avg, verdict):
    pq = _checkpoints({("ft", "12.5%"): 0.6, ("ft", "100%"): 0.7, ("ft", "average"): ft_avg,
                       ("pt", "0.5%"): 0.7, ("pt", "1.5%"): 0.5, ("pt", "average"): pt_avg})
    by = ("dataset", "method", *CHECKPOINT_VARIANTS)
    summary = seed_summary(pq.assign(**{"precision@10": 0.0, "recall@10": 0.0}), by=by)
    a3 = C.verdict_a3(summary, pq, {"trex": "learned", "synth": "learned"}, margin=0.02, guards=OK)
    assert a3["verdict"] == verdict
    # the best single checkpoint (0.7 for both kinds) minus the average, the lower of the two; no paper number
    assert a3["headline"]["ours"] == pytest.approx((0.7 - max(ft_avg, pt_avg)) * 100)
    assert a3["headline"]["paper"] is None and a3["headline"]["threshold"] == pytest.approx(-2)
    assert a3["parts"]["ft"]["best single"] == "100%" and a3["parts"]["pt"]["best single"] == "0.5%"
    # the last checkpoint by how far into the run (not by the label's spelling: "12.5%" > "100%" as text)
    assert a3["parts"]["ft"]["last"] == "100%" and a3["parts"]["pt"]["last"] == "1.5%" and set(a3["synth"]) == {"ft", "pt"}
    row = C.record_a3(a3, "learned", 2, 0.02)
    assert row["headline"] == a3["headline"]
    assert "fine-tuning best single 100% 0.700" in row["ours"] and row["parts"]["pt"]["best MRR"] == pytest.approx(0.7)
    assert len(C.a3_table(a3)) == 4


# ---------------------------------------------------------------------------------------------
# A4: pre-training checkpoints and the known slice
# ---------------------------------------------------------------------------------------------
def _saturation(pt: float, known: float) -> pd.DataFrame:
    learned = long_table({"TracIn": 0.6, "TracIn (pre-training ckpts)": pt, "BM25": 0.8})
    known_rows = long_table({"TracIn": known, "TracIn (pre-training ckpts)": 0.6, "BM25": 0.8}, slice_="known")
    known_rows["query"] += N
    synth = long_table({"TracIn": 0.9, "TracIn (pre-training ckpts)": 0.9, "BM25": 0.5}, dataset="synth")
    return pd.concat([learned, known_rows, synth], ignore_index=True)


@pytest.mark.parametrize("pt, known, verdict", [(0.9, 0.2, "replicated"), (0.9, 0.6, "partly"),
                                                 (0.6, 0.6, "not replicated")])
def test_verdict_a4(pt, known, verdict):
    a4 = C.verdict_a4(_saturation(pt, known), margin=0.02, guards=OK)
    assert a4["verdict"] == verdict and a4["slice"] == "learned"
    # part (a): pre-training minus fine-tuning checkpoints (0.6), the paper's 62.38 - 48.56
    assert a4["headline"]["ours"] == pytest.approx((pt - 0.6) * 100) == pytest.approx(a4["part_a"]["diff"] * 100)
    assert a4["headline"]["paper"] == pytest.approx(62.38 - 48.56)
    assert not a4["control_bm25"]["beats"] and a4["synth"]["n"] == N
    row = C.record_a4(a4, 2, 0.02)
    assert row["headline"] == a4["headline"]
    assert row["paper"] == ("TracIn MRR (%) on the learned slice: 62.4 ± 2.0 with pre-training checkpoints vs "
                            "48.6 ± 4.4 with fine-tuning ones [2nd]")
    assert row["verdict"] in VERDICTS and set(row) >= {"part_a", "part_b", "control_bm25", "synth"}
    assert list(C.a4_table(a4)["holds"])[:2] == [pt > 0.8, known < 0.5]
    # known facts forgotten during fine-tuning, or few new facts learned: not testable here
    for values, name in (({"known_retained_min": 0.85, "new_learned": 0.6}, "known_retained_min"),
                         ({"known_retained_min": 0.95, "new_learned": 0.3}, "new_learned")):
        guarded = C.verdict_a4(_saturation(pt, known), margin=0.02, guards=G.check(values))
        assert guarded["verdict"] == NOT_TESTABLE and [g["name"] for g in guarded["failed_guards"]] == [name]


def test_explain_saturation_follows_the_numbers():
    norms = pd.DataFrame({"dataset": "trex", "checkpoint": ["6.25%"] * 4 + ["100%"] * 4,
                          "slice": ["known", "known", "learned", "learned"] * 2,
                          "grad_norm": [0.1, 0.3, 0.8, 1.2, 0.01, 0.01, 0.02, 0.02]})
    # medians at the first checkpoint: known 0.2, learned 1.0 -> 5.0 times larger
    worse = compare_groups([0.9, 1.0, 0.95], [0.2, 0.3, 0.25])
    text = C.explain_saturation(norms, worse)
    assert "median gradient of a known query is 0.2, against 1 " in text and "(5.0 times larger)" in text
    assert "beyond the noise" in text
    noisy = compare_groups([1.0, 0.0, 1.0], [0.5, 0.5, 0.0])  # diff 0.33, s.e. ~0.4
    assert "cannot tell it from noise" in C.explain_saturation(norms, noisy)
    same = compare_groups([0.5, 0.6, 0.7], [0.6, 0.6, 0.6])
    assert "does as well on them" in C.explain_saturation(norms, same)
    assert "cannot be compared" in C.explain_saturation(norms[norms["slice"] == "known"], same)
