"""Part II's claims (``tda.experiments.dda.claims``): each verdict on hand-made inputs, one case per
verdict value ("not testable" included); testability from the runs' label check and guards; the
scoreboard rows and the sentences around them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tda.experiments.dda import analysis as A
from tda.experiments.dda import claims as C
from tda.results import NOT_TESTABLE, VERDICTS


def _baselines(dda, **others):
    base = {"TracIn": [0.6, 0.55], "TracIn (contrast)": [0.7, 0.72], "TRAK": [0.5, 0.52], "TRAK (contrast)": [0.6, 0.6],
            "BM25": [0.7, 0.75]}
    return {C.RECORDED: dda, **base, **others}


def test_verdict_b1_against_all_five_baselines():
    b1 = C.verdict_b1(_baselines([0.9, 0.92]))
    assert b1["verdict"] == "replicated"
    # the headline: DDA's lead over the closest baseline (BM25, mean 0.725), the paper's 91.64 minus 60
    assert b1["headline"]["ours"] == pytest.approx((0.91 - 0.725) * 100)
    assert b1["headline"]["paper"] == pytest.approx(91.64 - 60) and b1["headline"]["threshold"] == pytest.approx(10)
    narrow = C.verdict_b1(_baselines([0.9, 0.92], **{"TracIn (contrast)": [0.85, 0.86]}))
    assert narrow["verdict"] == "partly" and narrow["closest"] == "TracIn (contrast)"
    assert narrow["margins"]["TracIn (contrast)"] == pytest.approx(0.91 - 0.855)
    assert narrow["headline"]["ours"] == pytest.approx((0.91 - 0.855) * 100)
    # ahead on the mean by the margin but not in every seed: partly
    assert C.verdict_b1(_baselines([0.9, 0.92], TracIn=[0.95, 0.1]))["verdict"] == "partly"
    # a contrast control that matches DDA is enough to refute the claim
    assert C.verdict_b1(_baselines([0.9, 0.92], **{"TRAK (contrast)": [0.95, 0.95]}))["verdict"] == "not replicated"
    # the minimal pair judged by the same rule
    mp = C.verdict_b1({**_baselines([0.1, 0.1]), "DDA": [0.95, 0.97]}, dda=C.MINIMAL)
    assert mp["verdict"] == "replicated" and mp["method"] == "DDA"
    assert C.verdict_b1({})["verdict"] == NOT_TESTABLE and "headline" not in C.verdict_b1({})


def test_verdict_b2():
    b2 = C.verdict_b2(0.93, 0.68, 0.85)
    assert b2["verdict"] == "replicated"  # the paper's numbers
    # what removing debias costs beyond what removing denoise costs: 25 - 8 points; the paper's 25.6 - 8.7
    assert b2["headline"]["ours"] == pytest.approx(17.0) and b2["headline"]["paper"] == pytest.approx(16.9)
    assert C.verdict_b2(0.30, 0.95, 0.32)["headline"]["ours"] == pytest.approx(-65.0 - (-2.0))
    assert C.verdict_b2(0.93, 0.88, 0.85)["verdict"] == "partly"  # both help, debias not far more
    assert C.verdict_b2(0.93, 0.80, 0.935)["verdict"] == "partly"  # debias far more, denoise no help
    assert C.verdict_b2(0.30, 0.95, 0.32)["verdict"] == "not replicated"  # removing debias raises the AUC
    assert C.verdict_b2(*C.ablation_aucs(pd.DataFrame()))["verdict"] == NOT_TESTABLE


def test_verdict_b3():
    betas = [0.0, 0.2, 0.4, 0.8, 1.5]
    b3 = C.verdict_b3(betas, [0.6, 0.8, 0.9, 0.91, 0.9])
    assert b3["verdict"] == "replicated"
    assert b3["headline"]["ours"] == pytest.approx(30.0) and b3["headline"]["paper"] is None  # no number in the paper
    assert b3["headline"]["threshold"] == pytest.approx(5)
    assert C.verdict_b3(betas, [0.6, 0.8, 0.9, 0.8, 0.7])["verdict"] == "partly"
    assert C.verdict_b3(betas, [0.9, 0.9, 0.9, 0.9, 0.9])["verdict"] == "partly"  # flat, no rise
    out = C.verdict_b3(betas, [0.9, 0.8, 0.7, 0.6, 0.5])
    assert out["verdict"] == "not replicated" and out["best_beta"] == 0.0 and out["rise"] == pytest.approx(-0.2)
    assert out["headline"]["ours"] == pytest.approx(-20.0)
    with pytest.raises(ValueError, match="must include 0 and 0.4"):
        C.verdict_b3([0.0, 1.0], [0.5, 0.6])
    assert C.verdict_b3([], [])["verdict"] == NOT_TESTABLE


def test_verdict_b4_and_its_note():
    b4 = C.verdict_b4({"small": 0.9, "medium": 0.88})
    assert b4["verdict"] == "replicated"
    # the lowest AUC across sizes, against the paper's "about 90" at each size and the rule's floor of 80
    assert b4["headline"]["ours"] == pytest.approx(88.0) and b4["headline"]["paper"] == pytest.approx(90.0)
    assert b4["headline"]["threshold"] == pytest.approx(80.0)
    low = C.verdict_b4({"small": 0.3, "medium": 0.32})
    assert low["verdict"] == "partly" and "stably low" in C.b4_note(low) and "below chance" in C.b4_note(low)
    assert C.verdict_b4({"small": 0.95, "medium": 0.6})["verdict"] == "not replicated"
    status = pd.DataFrame([{"size": "tiny", "in B4": False, "why not": "no run is left to test it"},
                           {"size": "small", "in B4": True, "why not": ""}])
    one = C.verdict_b4({"small": 0.9}, status)
    assert one["verdict"] == NOT_TESTABLE and "only 1 size(s)" in one["reason"]
    assert "tiny (no run is left" in one["reason"]
    assert C.ours_b4(C.verdict_b4({"small": 0.5, "medium": 0.52}), {"small": 400_000, "medium": 1_600_000}) == (
        "DDA AUC % at normalised β = 1: small (0.40M) 50.0, medium (1.60M) 52.0; spread 2.0 points")


def _run(size="small", seed=0, traced=True, flagged=False, guards=()):
    return SimpleNamespace(size=size, seed=seed, traced=traced, flagged=traced and flagged,
                           usable=traced and not flagged, guard_failures=lambda: list(guards))


def test_testability_leaves_out_flagged_and_untraced_runs_and_a_failed_guard_stops_the_verdict():
    ok = C.testability([_run(seed=0), _run(seed=1, flagged=True), _run(seed=2, traced=False)])
    assert ok["testable"] and (ok["runs"], ok["untraced"], ok["flagged"], ok["usable"]) == (3, 1, 1, 1)
    assert "1 produced no hallucinated output and 1 failed the label check" in C.left_out_sentence(ok)
    assert "none is left out" in C.left_out_sentence(C.testability([_run()]))
    none_left = C.testability([_run(flagged=True), _run(seed=1, traced=False)])
    assert not none_left["testable"] and "no run is left to test it" in none_left["reason"]
    guard = C.testability([_run(), _run(seed=1, guards=["6 poisoned documents are 6.7% of the 90 (guard: <= 5%)"])])
    assert not guard["testable"] and "small seed 1: 6 poisoned documents are 6.7%" in guard["reason"]
    status = C.size_status([_run("tiny", flagged=True), _run("small")], ["tiny", "small"])
    assert list(status["in B4"]) == [False, True] and status.loc[0, "failed label check"] == 1


def test_records_and_sentences():
    b1 = C.verdict_b1(_baselines([0.9, 0.92]))
    (row,) = C.record("B1", b1, "ours", C.B1_RULE, margins=b1["margins"])
    assert row["verdict"] == "replicated" and row["rule"] == C.B1_RULE and row["paper"] == C.PAPER_CLAIMS["B1"]
    assert set(row["margins"]) == set(C.B1_BASELINES)
    assert row["headline"] == b1["headline"]  # the row carries the verdict's headline for the scoreboard figure
    (row,) = C.record("B1", C.not_testable("a guard of the setup fails: x"), "ignored", C.B1_RULE)
    assert row["verdict"] == NOT_TESTABLE and row["ours"] == "not testable here: a guard of the setup fails: x"
    assert "headline" not in row
    assert row["verdict"] in VERDICTS
    assert C.closest_baseline_sentence(b1) == (
        f"The closest baseline, BM25, is 18.5 points below {C.RECORDED}.")
    sentence = C.verdict_sentence("The minimal pair", C.not_testable("why"), "x")
    assert sentence == "The minimal pair: not testable — why."
    assert C.PAPER_CLAIMS["B2"] == "full 93.5, without denoise 84.8, without debias 67.9 (AUC %) [seed]"


def test_ours_b1_and_method_comparison_read_the_comparison_table():
    names = [C.RECORDED, *C.B1_BASELINES, "random"]
    table = pd.DataFrame([{"method": m, "auc mean": np.nan, "auc std": np.nan, "auc low": np.nan,
                           "auc high": np.nan, "hard_auc mean": np.nan, "set auc mean": 0.9 - 0.1 * i,
                           "set auc std": 0.01, "set auc low": 0.85 - 0.1 * i, "set auc high": 0.95 - 0.1 * i,
                           "set hard_auc mean": 0.5, "set hard_auc std": 0.0, "set recall@10 mean": 0.4, "seeds": 2,
                           "queries": 2} for i, m in enumerate(names)])
    b1 = C.verdict_b1({m: [0.9 - 0.1 * i] * 2 for i, m in enumerate(names)})
    ours = C.ours_b1(b1, table)
    assert ours.startswith(f"AUC % (per error set): {C.RECORDED} 90.0 ± 1.0, TracIn 80.0 ± 1.0")
    assert "(2 seeds)" in ours
    comp = C.method_comparison(table, 10)
    assert list(comp["method"]) == names
    assert comp.loc[0, "ours: AUC % per error set"] == "90.0 ± 1.0 [85, 95]"
    assert comp.loc[0, "ours: AUC % per query"] == "n/a" and comp.loc[0, "paper: AUC %"] == C.PAPER_AUC[C.RECORDED]


def test_ablation_table_and_its_aucs():
    pq = pd.DataFrame([{"size": "small", "seed": s, "method": m, "query": 0, "auc": v + 0.01 * s}
                       for s in (0, 1) for m, v in (("DDA (full)", 0.9), ("without debias", 0.6),
                                                    ("without denoise", 0.85))])
    table = C.ablation_table(A.auc_summary(pq))
    assert list(table["variant"]) == ["DDA (full)", "without debias", "without denoise"]
    assert list(table["change vs full (points)"]) == [0.0, -30.0, -5.0]
    assert table.loc[1, "paper AUC %"].startswith("67.9") and table.loc[0, "ours AUC %"] == "90.5 ± 0.7"
    b2 = C.verdict_b2(*C.ablation_aucs(table))
    assert b2["verdict"] == "replicated"
    assert C.b2_changes(b2) == "Removing debias lowers the mean AUC by 30.0 points; removing denoise lowers the mean " \
                               "AUC by 5.0 points."
    readme = pq.assign(method="DDA (README pipeline): " + pq["method"])
    assert list(C.ablation_table(A.auc_summary(readme), "DDA (README pipeline): ")["variant"]) == list(table["variant"])
    assert C.ablation_table(A.auc_summary(pq.iloc[:0])).empty
