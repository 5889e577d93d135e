"""Part III's own claims (``tda.experiments.counterfactual.claims``): each verdict on hand-made
inputs, one case per verdict value (not tested included), and the scoreboard rows."""

from __future__ import annotations

import numpy as np
import pytest

from tda.claims import EXPECTED_CLAIMS
from tda.experiments.counterfactual import claims as C
from tda.results import NOT_TESTED, VERDICTS


def test_claim_methods_are_the_parts_attribution_methods():
    assert C.FTRACE_METHODS == ("BM25", "TracIn", "TracIn (pre-training ckpts)", "EMBED", "TracIn+EMBED")
    assert C.DDA_METHODS == ("DDA", "TracIn", "TRAK", "BM25")
    assert {"C1", "C2", "C3", "C4"} <= set(EXPECTED_CLAIMS)


def test_c1_on_one_dataset():
    labels = {"BM25": 0.9, "TracIn": 0.6, "EMBED": 0.5}
    same = C.c1_on_dataset(labels, {"BM25": [1.0, 1.2, 0.8], "TracIn": [0.1, 0.2, 0.3], "EMBED": [0, 0, 0]})
    assert same["holds"] and same["best_label"] == same["best_tail"] == "BM25"
    # TracIn's tail-patch is ahead of BM25's by 1.0 on every query: clearly (> 2 s.e. and > 10%)
    clear = C.c1_on_dataset(labels, {"BM25": [0.1, 0.2, 0.3], "TracIn": [1.1, 1.2, 1.3], "EMBED": [0, 0, 0]})
    assert not clear["holds"] and clear["best_tail"] == "TracIn" and clear["advantage"] == pytest.approx(1.0)
    # ahead on average but within noise: the best-MRR method is not clearly worse
    noisy = C.c1_on_dataset(labels, {"BM25": [0.0, 2.0, 0.0], "TracIn": [1.0, 0.0, 1.2], "EMBED": [0, 0, 0]})
    assert noisy["best_tail"] == "TracIn" and noisy["holds"]
    # ahead by more than 2 s.e. but by less than 10% of the score: a practical tie
    tiny = C.c1_on_dataset(labels, {"BM25": [10.0, 10.0, 10.0], "TracIn": [10.5, 10.51, 10.49], "EMBED": [0, 0, 0]})
    assert tiny["best_tail"] == "TracIn" and tiny["holds"]
    with pytest.raises(ValueError, match="no method has both"):
        C.c1_on_dataset({"BM25": 0.9}, {"TracIn": [1.0]})


def test_verdict_c1():
    labels = {"BM25": 0.9, "TracIn": 0.6, "EMBED": 0.5}
    same = C.c1_on_dataset(labels, {"BM25": [1.0, 1.2, 0.8], "TracIn": [0.1, 0.2, 0.3], "EMBED": [0, 0, 0]})
    clear = C.c1_on_dataset(labels, {"BM25": [0.1, 0.2, 0.3], "TracIn": [1.1, 1.2, 1.3], "EMBED": [0, 0, 0]})
    # the headline: the best tail-patch method's lead over the best-MRR one, the largest over the data sets
    assert C.verdict_c1({"trex": same})["headline"]["ours"] == 0.0  # the same method: no lead
    both = C.verdict_c1({"trex": same, "synth": clear})
    assert both["headline"]["ours"] == pytest.approx(1.0) and both["headline"]["paper"] is None
    assert both["headline"]["unit"] == "nats"
    undefined = {**clear, "advantage": float("nan")}  # wherever it stands, an undefined lead leaves no headline
    assert C.verdict_c1({"trex": undefined, "synth": same})["headline"] is None
    assert C.verdict_c1({"trex": same, "synth": undefined})["headline"] is None
    yes, no = {"holds": True}, {"holds": False}
    assert C.verdict_c1({"trex": yes, "synth": yes})["verdict"] == "replicated"
    assert C.verdict_c1({"trex": no, "synth": yes})["verdict"] == "partly"
    assert C.verdict_c1({"trex": no, "synth": no})["verdict"] == "not replicated"
    assert C.verdict_c1({})["verdict"] == NOT_TESTED


def test_verdict_c2():
    flips = {"DDA": [1, 1, 0], "TracIn": [1, 0, 0], "TRAK": [0, 0, 0], "BM25": [0, 1, 0]}
    drops = {"DDA": [3.0, 2.0, 1.0], "TracIn": [1.0, 1.0, 1.0], "TRAK": [0.0, 0.1, 0.0], "BM25": [2.0, 1.0, 0.0]}
    out = C.verdict_c2(flips, drops)
    assert out["verdict"] == "replicated" and out["flip_rate"]["DDA"] == pytest.approx(2 / 3)
    # the headline: DDA's share of removed hallucinations minus the best baseline's (TracIn, BM25: 1/3)
    assert out["headline"]["ours"] == pytest.approx(100 / 3) and out["headline"]["paper"] is None
    tie = {**flips, "TracIn": [1, 1, 0]}  # TracIn removes as many: (a) fails, (b) holds
    assert C.verdict_c2(tie, drops)["verdict"] == "partly"
    assert C.verdict_c2({**tie, "BM25": [1, 1, 1]}, {**drops, "BM25": [5.0, 5.0, 5.0]})["verdict"] == "not replicated"
    assert C.verdict_c2({}, {})["verdict"] == NOT_TESTED
    with pytest.raises(ValueError, match="TRAK"):
        C.verdict_c2({k: v for k, v in flips.items() if k != "TRAK"}, drops)


def test_ordering_and_verdicts_c3_c4():
    labels = {"A": 0.9, "B": 0.7, "C": 0.5, "D": 0.3}
    agree = C.ordering(labels, {"A": 0.4, "B": 0.3, "C": 0.2, "D": 0.1})
    assert agree["rho"] == pytest.approx(1.0) and agree["lds_order"] == ["A", "B", "C", "D"]
    some = C.ordering(labels, {"A": 0.2, "B": 0.3, "C": 0.4, "D": 0.1})  # rho = 1 - 6 * 8 / 60 = 0.2
    assert some["rho"] == pytest.approx(0.2)
    against = C.ordering(labels, {"A": 0.1, "B": 0.2, "C": 0.3, "D": 0.4})
    assert against["rho"] == pytest.approx(-1.0)
    few = C.ordering(labels, {"A": 0.1, "B": np.nan})
    assert np.isnan(few["rho"]) and few["status"].startswith("fewer than three")
    assert C.verdict_c4(agree)["verdict"] == "replicated"
    assert C.verdict_c4(some)["headline"]["ours"] == pytest.approx(0.2)
    assert C.verdict_c4(some)["headline"]["threshold"] == C.C34_HOLDS
    # C3's headline: the lowest rho over the data sets with one (the untestable set left out)
    assert C.verdict_c3({"trex": agree, "synth": against})["headline"]["ours"] == pytest.approx(-1.0)
    assert C.verdict_c3({"trex": some, "synth": few})["headline"]["ours"] == pytest.approx(0.2)
    assert C.verdict_c4(some)["verdict"] == "partly"
    assert C.verdict_c4(against)["verdict"] == "not replicated"
    assert C.verdict_c4(few)["verdict"] == NOT_TESTED
    assert C.verdict_c3({"trex": agree, "synth": agree})["verdict"] == "replicated"
    assert C.verdict_c3({"trex": agree, "synth": against})["verdict"] == "partly"
    assert C.verdict_c3({"trex": some})["verdict"] == "partly"
    assert C.verdict_c3({"trex": against, "synth": against})["verdict"] == "not replicated"
    assert C.verdict_c3({"trex": agree, "synth": few})["verdict"] == "replicated"  # untestable set left out
    assert C.verdict_c3({"trex": few})["verdict"] == NOT_TESTED


def test_records_and_sentences():
    c1 = C.verdict_c1({"trex": {"holds": False, "best_label": "BM25", "best_tail": "TracIn", "advantage": 0.5,
                                "se": 0.1, "queries": 12}})
    ours = C.ours_c1(c1)
    assert ours == ("TREx analogue: best MRR BM25, best tail-patch TracIn (ahead by +0.500 ± 0.100 nats, 12 queries), "
                    "clearly")
    (row,) = C.record("C1", c1, ours)
    assert row["id"] == "C1" and row["verdict"] == "not replicated" and row["rule"] == C.C1_RULE
    assert row["headline"] == c1["headline"] and row["headline"]["ours"] == pytest.approx(0.5)
    assert row["claim"] == EXPECTED_CLAIMS["C1"][1] == C.STATEMENTS["C1"]
    assert C.record("C2", C.verdict_c2({}, {}), "x") == []
    for cid in ("C1", "C2", "C3", "C4"):
        assert C.STATEMENTS[cid] == EXPECTED_CLAIMS[cid][1] and C.RULES[cid] and C.PAPER[cid]
    c4 = C.verdict_c4(C.ordering({"A": 0.9, "B": 0.7, "C": 0.5}, {"A": 0.3, "B": 0.2, "C": 0.1}))
    assert c4["verdict"] in VERDICTS
    assert C.ours_order({"dda": c4}, "AUC") == "dda: rho = +1.00 (AUC order A > B > C; LDS order A > B > C)"


def test_c4_is_not_testable_where_the_poison_labels_fail_the_label_check():
    """C4 compares LDS with AUC against the poison labels; on a run whose label check failed those
    labels are false, so the rho (here a perfect +1) must not become a verdict."""
    order = {"rho": 1.0, "label_order": ["a", "b", "c"], "lds_order": ["a", "b", "c"]}
    assert C.verdict_c4(order)["verdict"] == "replicated"
    gated = C.verdict_c4(order, labels_hold=False)
    assert gated["verdict"] == "not testable" and "label check" in gated["reason"]
    assert C.record("C4", gated, gated["reason"])[0]["verdict"] == "not testable"
    assert "headline" not in gated  # a rho against false labels is not drawn as ours
    # a failed setup guard of Part II (e.g. a base that does not name the article's country) gates it too
    guarded = C.verdict_c4(order, guard_failures=["the base model names the article's own country in 48%"])
    assert guarded["verdict"] == "not testable" and "48%" in guarded["reason"] and "headline" not in guarded
