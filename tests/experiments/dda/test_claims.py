"""Part II's claims (``tda.experiments.dda.claims``): each verdict on hand-made inputs, one case per
verdict value (not tested included); the scoreboard rows and the sentences around them."""

from __future__ import annotations

import pandas as pd
import pytest

from tda.experiments.dda import claims as C
from tda.results import NOT_TESTED, VERDICTS


def test_verdict_b1():
    wide = {"DDA": [0.9, 0.92], "TracIn": [0.6, 0.55], "TRAK": [0.5, 0.52], "BM25": [0.7, 0.75]}
    assert C.verdict_b1(wide)["verdict"] == "replicated"
    narrow = {**wide, "BM25": [0.85, 0.86]}
    out = C.verdict_b1(narrow)
    assert out["verdict"] == "partly" and out["closest"] == "BM25"
    assert C.verdict_b1({**wide, "TracIn": [0.95, 0.1]})["verdict"] == "partly"  # not ahead in every seed
    assert C.verdict_b1({**wide, "TRAK": [0.95, 0.95]})["verdict"] == "not replicated"
    assert C.verdict_b1({})["verdict"] == NOT_TESTED  # nothing traced


def test_verdict_b2():
    assert C.verdict_b2(0.93, 0.68, 0.85)["verdict"] == "replicated"  # the paper's numbers
    assert C.verdict_b2(0.93, 0.88, 0.85)["verdict"] == "partly"  # both help, debias not far more
    assert C.verdict_b2(0.93, 0.80, 0.935)["verdict"] == "partly"  # debias far more, denoise no help
    assert C.verdict_b2(0.80, 0.85, 0.82)["verdict"] == "not replicated"
    assert C.verdict_b2(*C.ablation_aucs(pd.DataFrame()))["verdict"] == NOT_TESTED


def test_verdict_b3():
    betas = [0.0, 0.2, 0.4, 0.8, 1.5]
    assert C.verdict_b3(betas, [0.6, 0.8, 0.9, 0.91, 0.9])["verdict"] == "replicated"
    assert C.verdict_b3(betas, [0.6, 0.8, 0.9, 0.8, 0.7])["verdict"] == "partly"
    assert C.verdict_b3(betas, [0.9, 0.9, 0.9, 0.9, 0.9])["verdict"] == "partly"  # flat, no rise
    assert C.verdict_b3(betas, [0.9, 0.8, 0.7, 0.6, 0.5])["verdict"] == "not replicated"
    with pytest.raises(ValueError, match="must include 0 and 0.4"):
        C.verdict_b3([0.0, 1.0], [0.5, 0.6])
    assert C.verdict_b3([], [])["verdict"] == NOT_TESTED


def test_verdict_b4():
    assert C.verdict_b4({"tiny": 0.9, "small": 0.88, "medium": 0.91})["verdict"] == "replicated"
    assert C.verdict_b4({"tiny": 0.7, "small": 0.72})["verdict"] == "partly"
    assert C.verdict_b4({"tiny": 0.95, "small": 0.6})["verdict"] == "not replicated"
    one = C.verdict_b4({"tiny": 0.9})  # the rule compares sizes: fewer than two is not a test
    assert one["verdict"] == NOT_TESTED and one["status"] == "fewer than two sizes" and "only 1 size" in one["reason"]
    assert C.verdict_b4({})["status"] == "nothing to trace"




def _table(rows):
    return pd.DataFrame([{"auc std": 0.01, "seeds": 3, "queries": 12, **r} for r in rows])


def test_records_b1_b4_and_their_sentences():
    table = _table([{"method": m, "auc mean": v, "recall@10 mean": v, "recall@10 std": 0.0}
                    for m, v in (("DDA", 0.9), ("TracIn", 0.55), ("TRAK", 0.5), ("BM25", 0.7), ("random", 0.5))])
    b1 = C.verdict_b1({"DDA": [0.9, 0.9], "TracIn": [0.55, 0.55], "TRAK": [0.5, 0.5], "BM25": [0.7, 0.7]})
    ours = C.ours_b1(b1, table)
    assert ours == "AUC %: DDA 90.0 ± 1.0, TracIn 55.0 ± 1.0, TRAK 50.0 ± 1.0, BM25 70.0 ± 1.0, random 50.0 ± 1.0 (2 seeds, 12 queries)"
    (row,) = C.record_b1(b1, ours)
    assert row["verdict"] == b1["verdict"] == "replicated" and row["rule"] == C.B1_RULE
    assert row["paper"] == C.PAPER_CLAIMS["B1"] and set(row["margins"]) == {"TracIn", "TRAK", "BM25"}
    assert C.closest_baseline_sentence(b1) == "The closest baseline, BM25, is 20.0 points below DDA."
    untested = C.verdict_b1({})
    assert C.record_b1(untested, C.ours_b1(untested, table)) == [] and C.ours_b1(untested, table) == C.NO_TRACE
    assert C.PAPER_CLAIMS["B2"] == "full 93.5, without denoise 84.8, without debias 67.9 (AUC %) [seed]"
    comparison = C.method_comparison(table, 10)
    assert list(comparison["method"]) == ["DDA", "TracIn", "TRAK", "BM25", "random"]
    assert comparison.loc[0, "paper: AUC %"] == C.PAPER_AUC["DDA"] and comparison.loc[0, "ours: AUC %"] == "90.0 ± 1.0"
    sizes = _table([{"size": z, "method": "DDA", "auc mean": v} for z, v in (("tiny", 0.5), ("small", 0.52))])
    by_size = C.dda_auc_by_size(sizes, ["tiny", "small", "medium"])
    b4 = C.verdict_b4(by_size)
    assert b4["verdict"] == "partly" and "stably low" in C.b4_note(b4)
    ours4 = C.ours_b4(b4, sizes, by_size, {"tiny": 100_000, "small": 400_000})
    assert ours4 == "DDA AUC %: tiny (0.10M) 50.0 ± 1.0, small (0.40M) 52.0 ± 1.0; spread 2.0 points"
    (row4,) = C.record_b4(b4, ours4, by_size, {"tiny": 100_000, "small": 400_000, "medium": 1})
    assert row4["parameters"] == {"tiny": 100_000, "small": 400_000} and row4["verdict"] in VERDICTS


def test_ablation_table_and_its_aucs():
    pq = pd.DataFrame([{"size": "tiny", "seed": s, "method": m, "query": 0, "auc": v + 0.01 * s}
                       for s in (0, 1) for m, v in (("DDA (full)", 0.9), ("without debias", 0.6),
                                                    ("without denoise", 0.85))])
    table = C.ablation_table(pq)
    assert list(table["variant"]) == ["DDA (full)", "without debias", "without denoise"]
    assert list(table["change vs full (points)"]) == [0.0, -30.0, -5.0]
    assert table.loc[1, "paper AUC %"].startswith("67.9") and table.loc[0, "ours AUC %"] == "90.5 ± 0.7"
    b2 = C.verdict_b2(*C.ablation_aucs(table))
    assert b2["verdict"] == "replicated" and C.b2_changes(b2).startswith("Removing debias lowers the mean AUC by 30.0")
    assert C.ablation_table(pq.iloc[:0]).empty


def test_explain_debias_follows_the_numbers():
    def diag(at0, at1, alone, scale):
        return pd.DataFrame([{"AUC at β=0": at0, "AUC at β=1": at1, "AUC of C[IS_θ0] alone": alone,
                              "scale of C[IS_θ0] / C[mean IS_θi]": scale, "correlation": 0.5}])
    hurt = C.explain_debias(diag(0.95, 0.4, 0.8, 10.0), 1.0)
    assert "Debiasing hurts" in hurt and "outweighs" in hurt and "leans towards" in hurt
    assert "as the paper argues" in C.explain_debias(diag(0.7, 0.9, 0.4, 0.5), 1.0)
    assert "changes little" in C.explain_debias(diag(0.9, 0.9, 0.5, 0.1), 1.0)


def test_change_sentence():
    assert C.change_sentence({"debias": 0.637, "denoise": -0.018}) == (
        "Removing debias raises the mean AUC by 63.7 points; removing denoise lowers the mean AUC by 1.8 points.")
    assert C.change_sentence({"contrast": 0.0}) == "Removing contrast leaves the mean AUC unchanged."
