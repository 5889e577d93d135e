"""Part III's pipeline on the known case (a Case whose answer is known) and its analysis."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from tda.experiments.counterfactual import analysis, claims, pipeline
from tda.experiments.counterfactual.interface import PROPONENTS, RANDOM
from tda.results import write_results
from tda.store import Store

SETTINGS = pipeline.CounterfactualSettings(tail_ks=(1, 2), loo_ks=(1,), loo_queries=1, lds_subsets=4)


@pytest.fixture(scope="module")
def results(case, tmp_path_factory):
    return pipeline.run_case(case, Store(tmp_path_factory.mktemp("store")), SETTINGS, verbose=False)


def test_tail_patch_table(results):
    t = results.tail
    assert set(t["method"]) == {"oracle", "anti", "partial", PROPONENTS, RANDOM} and set(t["k"]) == {1, 2}
    at1 = t[t["k"] == 1].set_index("method")["tail_patch"]
    assert at1["oracle"] == at1[PROPONENTS] == at1.max() > 0  # the teacher, whichever row picks it
    assert at1["anti"] < at1["oracle"] and at1["partial"] < at1["oracle"]
    assert t.loc[t["method"] == PROPONENTS, "selected"].tolist() == [1, 1]  # one positive only


def test_reference_and_leave_k_out(results, known):
    assert results.reference.max_difference == 0.0  # the retrain is the run, bit for bit
    assert results.loo_queries == [0] and bool(results.reference.present[0])
    loo = results.loo.set_index("method")
    assert loo.loc["oracle", "positives removed"] == 1 and loo.loc["anti", "positives removed"] == 0
    assert loo.loc["oracle", "loss_change"] == loo.loc[PROPONENTS, "loss_change"] > 1.0  # the same retrain
    assert loo.loc["oracle", "loss_change"] > max(loo.loc["anti", "loss_change"], loo.loc["partial", "loss_change"])
    # without the teacher the answer is gone (the full model's answer is a narrow argmax, p ~ 0.25, so
    # other removals may flip it too: flips are a coarse measure on a toy this small)
    assert loo.loc["oracle", "flipped"] and not loo.loc["oracle", "present_without"]
    assert (loo["support_full"] - loo["support_without"] == loo["loss_change"]).all()


def test_lds(results, case):
    data = results.lds_data
    assert data.masks.shape == (4, len(case.train)) and data.measured.shape == (4, 1)
    lds = results.lds.set_index("method")["lds"]
    assert set(lds.index) == {"oracle", "anti", "partial"}
    # "anti" is "oracle" negated, so its summed scores are too: opposite correlations
    assert lds["anti"] == pytest.approx(-lds["oracle"])


def test_summaries_and_results_entry(results):
    s = analysis.summarise([results], ["oracle", "anti", "partial", PROPONENTS, RANDOM])
    lab = s.label_means.set_index("method")["mean"]
    assert lab["oracle"] == 1.0 and lab["anti"] == pytest.approx(1 / 8) and lab["partial"] == 0.0  # MRR
    assert s.metric == "mrr"
    assert list(s.tail_means["method"].unique()) == ["oracle", "anti", "partial", PROPONENTS, RANDOM]
    loo = s.loo_means.set_index("method")
    assert loo.loc["oracle", "flip_rate"] == 1.0 and loo.loc["oracle", "queries"] == 1
    entry = analysis.results_entry(**analysis.dataset_view(s, "known"), methods=["oracle", "anti", "partial"])
    assert set(entry) == {"oracle", "anti", "partial", PROPONENTS, RANDOM}
    assert set(entry["oracle"]["tail_patch"]) == {"1", "2"} and set(entry["oracle"]["leave_k_out"]["1"]) == {
        "loss_change", "se", "flip_rate", "queries"}
    assert {"mean", "low", "high"} <= set(entry["oracle"]["lds"]) and "lds" not in entry[PROPONENTS]
    table = analysis.overview(s.label_means, s.tail_means, s.loo_means, s.lds_means, 1, "mrr", ["oracle", RANDOM])
    assert list(table.columns) == ["method", "MRR", "tail-patch @1", "loss change @1", "flip rate @1", "LDS [95% CI]"]
    assert table.loc[0, "flip rate @1"] == "1.00 (1/1)"


def test_settings_errors():
    with pytest.raises(ValueError, match="tail_ks"):
        pipeline.CounterfactualSettings(tail_ks=())
    with pytest.raises(ValueError, match="tail_optimizer"):
        pipeline.CounterfactualSettings(tail_optimizer="adafactor")
    with pytest.raises(ValueError, match="workers"):
        pipeline.CounterfactualSettings(workers=0)
    assert pipeline.sample(range(10), 3, seed=0, what="x") == pipeline.sample(range(10), 3, seed=0, what="x")
    assert pipeline.sample([5, 1], None, seed=0, what="x") == [1, 5]
    assert np.all(np.diff(pipeline.sample(range(100), 10, seed=1, what="y")) > 0)


def test_results_file_form_is_checked(results, tmp_path, monkeypatch):
    """What a chapter writes (through write_results: NaN becomes null) passes check_results, and each
    missing or malformed field is an error that names it."""
    s = analysis.summarise([results], ["oracle", "anti", "partial", PROPONENTS, RANDOM])
    entry = analysis.results_entry(**analysis.dataset_view(s, "known"), methods=["oracle", "anti", "partial"])
    row = claims.record("C1", {"verdict": "replicated"}, "ours")
    monkeypatch.setenv("TDA_RESULTS_DIR", str(tmp_path))
    path = write_results("counterfactual_known", {"datasets": {"known": {"methods": entry}}, "claims": row})
    good = json.loads(path.read_text())
    analysis.check_results(good, path.name)
    analysis.check_results({"traced": False, "datasets": {}, "claims": []})
    # no query shown by the full run (the guards list none): no leave-k-out is right
    none_shown = copy.deepcopy(good)
    none_shown["datasets"]["known"]["guards"] = {"leave-k-out queries": []}
    for e in none_shown["datasets"]["known"]["methods"].values():
        e.pop("leave_k_out", None)
    analysis.check_results(none_shown, path.name)

    def broken(edit):
        data = copy.deepcopy(good)
        edit(data)
        return data

    methods = lambda d: d["datasets"]["known"]["methods"]  # noqa: E731
    cases = [
        (lambda d: d.pop("datasets"), "no 'datasets'"),
        (lambda d: methods(d)["oracle"].pop("tail_patch"), r"methods\.oracle: no 'tail_patch'"),
        (lambda d: methods(d)["anti"]["tail_patch"]["1"].update(mean=None), r"anti\.tail_patch\.1\.mean"),
        (lambda d: methods(d)["oracle"]["leave_k_out"]["1"].update(flip_rate=1.5), "is not a share"),
        (lambda d: [e.pop("leave_k_out", None) for e in methods(d).values()], "no method has 'leave_k_out'"),
        (lambda d: [d["datasets"]["known"].update(guards={"leave-k-out queries": [0]}),
                    [e.pop("leave_k_out", None) for e in methods(d).values()]], "no method has 'leave_k_out'"),
        (lambda d: methods(d)["oracle"]["lds"].update(low=2.0), "outside its interval"),
        (lambda d: d.update(claims=[]), "no 'claims'"),
        (lambda d: d["claims"][0].update(id="A1"), "lacks a C id"),
        (lambda d: d.update(traced=False), "nothing was traced"),
    ]
    for edit, message in cases:
        with pytest.raises(ValueError, match=message):
            analysis.check_results(broken(edit), path.name)
