"""Part I's guards (``tda.experiments.ftrace.guards``): measured on runs, checked against the
thresholds fixed by issue 11, and gating the claims that depend on them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tda.experiments.ftrace import guards as G
from tda.experiments.ftrace.pipeline import RunParts
from tda.results import NOT_TESTABLE


def test_thresholds_are_the_issues():
    assert {g.name: (g.op, g.threshold, g.claims) for g in G.GUARDS} == {
        "bm25_whole_set_mrr": ("<", 0.95, ("A1",)), "known_retained_min": (">=", 0.90, ("A4",)),
        "new_learned": (">=", 0.50, ("A4",)), "synth_learned": (">=", 0.80, ("A5",)),
        "learned_queries_min": (">=", 100, ())}  # reported beside the verdicts, gates none


@pytest.mark.parametrize("name,value,holds", [("bm25_whole_set_mrr", 0.949, True), ("bm25_whole_set_mrr", 0.95, False),
                                              ("known_retained_min", 0.90, True), ("known_retained_min", 0.899, False),
                                              ("new_learned", 0.5, True), ("synth_learned", 0.79, False)])
def test_check_at_the_threshold(name, value, holds):
    (c,) = [c for c in G.check({name: value}) if c["name"] == name]
    assert c["holds"] is holds and c["short_by"] == (0.0 if holds else pytest.approx(abs(value - c["threshold"])))


def test_a_guard_not_measured_gates_nothing_and_bad_values_are_errors():
    checks = G.check({"new_learned": 0.2})
    assert [c["holds"] for c in checks] == [None, None, False, None, None]
    assert G.failed(checks, "A1") == [] and [c["name"] for c in G.failed(checks, "A4")] == ["new_learned"]
    with pytest.raises(ValueError, match="unknown guards"):
        G.check({"bm25": 0.5})
    with pytest.raises(ValueError, match="not a finite number"):
        G.check({"new_learned": float("nan")})
    assert "not measured" in G.guard_sentence(checks[0])
    assert list(G.table(checks)["holds"]) == ["not measured", "not measured", "NO", "not measured", "not measured"]
    few = G.check({"learned_queries_min": 20})
    assert few[-1]["holds"] is False and not any(G.failed(few, claim) for claim in ("A1", "A2", "A3", "A4", "A5"))


def test_gate_keeps_the_rule_outcome_but_not_as_the_verdict():
    result = {"verdict": "replicated", "comparisons": []}
    ok = G.gate("A4", result, G.check({"known_retained_min": 0.95, "new_learned": 0.7}))
    assert ok["verdict"] == "replicated" and ok["failed_guards"] == [] and len(ok["guards"]) == 2
    bad = G.gate("A4", result, G.check({"known_retained_min": 0.86, "new_learned": 0.41}))
    assert bad["verdict"] == NOT_TESTABLE and bad["rule_outcome"] == "replicated"
    assert "0.860, required >= 0.90 (short by 0.040)" in bad["reason"]
    assert "0.410, required >= 0.50 (short by 0.090)" in bad["reason"]
    assert G.gate("A2", result, G.check({"new_learned": 0.1}))["verdict"] == "replicated"  # A2 has no guard


def test_measure_on_hand_made_slices(monkeypatch):
    """Retention over the known facts at every checkpoint (lowest over seeds), new facts learned
    (mean over seeds), SYNTH learned, whole-set BM25 on the judged slice."""
    monkeypatch.setattr(G, "new_fact_rows", lambda run: np.flatnonzero(~np.asarray(run.known)))
    monkeypatch.setattr(G, "learnable_rows", lambda run: np.flatnonzero(~np.asarray(run.known))[:1])
    t0 = SimpleNamespace(settings=SimpleNamespace(dataset="trex"), seed=0,
                         slices={"correct_before": [1, 1, 0, 0], "correct_at": [[1, 1, 0, 0], [1, 0, 1, 0]],
                                 "correct_after": [1, 0, 1, 0], "learned": [0, 0, 1, 0]},
                         known=[True, True, False, False], whole_set_rr=[1.0, 0.5, 0.25, 0.0],
                         query_rows=[0, 2, 3], query_slice=["known", "learned", "other"])
    t1 = SimpleNamespace(settings=SimpleNamespace(dataset="trex"), seed=1,
                         slices={"correct_before": [1, 0, 0, 0], "correct_at": [[1, 0, 0, 0], [1, 1, 1, 1]],
                                 "correct_after": [1, 1, 1, 1], "learned": [0, 1, 1, 1]},
                         known=[True, False, False, False], whole_set_rr=[0.0, 1.0, 1.0, 0.5],
                         query_rows=[1, 2], query_slice=["learned", "learned"])
    s0 = SimpleNamespace(settings=SimpleNamespace(dataset="synth"), seed=0, slices={"correct_after": [1, 1, 1, 0]})
    runs = [RunParts(r, None, None, None) for r in (t0, t1, s0)]
    m = G.measure(runs, {"trex": "learned"})
    assert m["per_seed"]["trex/0"]["retained"] == [1.0, 0.5] and m["per_seed"]["trex/1"]["retained"] == [1.0, 1.0]
    assert m["values"]["known_retained_min"] == 0.5
    assert m["values"]["new_learned"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["values"]["synth_learned"] == 0.75
    assert m["values"]["learned_queries_min"] == 1  # seed 0's learned slice holds 1 query, seed 1's 3
    # whole-set BM25 on the learned queries only: seed 0 row 2 (0.25), seed 1 rows 1, 2 (1.0, 1.0)
    assert m["values"]["bm25_whole_set_mrr"] == pytest.approx((0.25 + 1.0) / 2)
    assert m["extra"]["bm25_whole_set_mrr_all_queries"] == pytest.approx((0.4375 + 0.625) / 2)


def test_measure_on_a_real_run(trex_run):
    m = G.measure([RunParts(trex_run, None, None, None)], {"trex": None})
    v = m["values"]
    assert v["synth_learned"] is None  # no SYNTH run: not measured
    known = np.asarray(trex_run.data.queries["known"])
    after = np.asarray(trex_run.slices["correct_after"])
    assert v["new_learned"] == pytest.approx(after[~known].mean())
    assert v["bm25_whole_set_mrr"] == pytest.approx(np.mean([trex_run.whole_set_rr[r] for r in trex_run.query_rows]))
    learnable = G.learnable_rows(trex_run)
    assert set(learnable) <= set(np.flatnonzero(~known))
