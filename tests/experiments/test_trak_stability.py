"""TRAK's agreement across projection seeds (``tda.experiments.trak_stability``): its formula is
``tda.methods.trak``'s, its measures behave, and projected TRAK tends to the exact limit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tda import gradients as G
from tda.data.world import WorldConfig
from tda.experiments.dda import pipeline
from tda.experiments import trak_stability as TS
from tda.methods import trak
from tda.methods.trak import rank_agreement, trak_from_features
from tda.models import make_model
from tda.task import CausalLMTask, Examples


@pytest.fixture(scope="module", autouse=True)
def _quiet(quiet):
    yield


@pytest.fixture(scope="module")
def setting(tiny_world, tiny_tokenizer):
    model = make_model("tiny", tiny_tokenizer, seed=0)
    task = CausalLMTask(tiny_tokenizer)
    texts = [tiny_world.render(f, i % 4) for i, f in enumerate(tiny_world.facts)]
    train = Examples.texts(texts[:24])
    queries = Examples([tiny_world.cloze(f, 3)[0] + " answer :" for f in tiny_world.facts[:3]],
                       [tiny_world.cloze(f, 3)[1] for f in tiny_world.facts[:3]])
    return model, task, queries, train


@pytest.fixture(scope="module")
def exact(setting):
    model, task, queries, train = setting
    return (G.gradient_dots(model, task, queries, train, "all").dots,
            G.gradient_dots(model, task, train, train, "all").dots)


@pytest.mark.parametrize("projection", ["kronecker", "sketch"])
@pytest.mark.parametrize("dim", [16, 64])  # fewer and more dimensions than the 24 training examples
def test_features_are_what_tda_methods_trak_uses(setting, projection, dim):
    model, task, queries, train = setting
    kind = TS.PROJECTIONS[projection]
    want = trak([model], task, queries, train, projection=dim, seed=1, kind=kind, lam=1e-3)
    got = trak_from_features(TS.features(model, task, queries, projection, dim, 1),
                             TS.features(model, task, train, projection, dim, 1), 1e-3)
    assert np.allclose(got, want, rtol=1e-6, atol=1e-9 * np.abs(want).max())


def test_seed_stability_rows(setting, exact):
    model, task, queries, train = setting
    dots, gram = exact
    rows = TS.seed_stability(model, task, queries, train, dims=[512], lams=[1e-3, 1e6], seeds=[0, 0],
                             projections=["sketch"], exact_dots=dots, exact_gram=gram)
    assert [(r["projection"], r["dim"], r["lam"]) for r in rows] == [
        ("sketch", 512, 1e-3), ("sketch", 512, 1e6), ("none", None, 1e-3), ("none", None, 1e6)]
    for r in rows[:2]:  # one seed twice: the same projection, so perfect agreement
        assert r["agreement"] == pytest.approx(1.0) and r["agreement_min"] == pytest.approx(1.0)
        assert r["seconds"] > 0 and -1 <= r["vs_limit"] <= 1
    # a huge ridge turns TRAK into projected TracIn (its agreement with the exact dots is then the
    # projection's own), and TRAK without projection into exact TracIn
    projected = TS.features(model, task, queries, "sketch", 512, 0) @ TS.features(model, task, train, "sketch", 512, 0).T
    assert rows[1]["vs_dots"] == pytest.approx(rank_agreement(projected, dots), abs=1e-6)
    assert rows[3]["vs_dots"] == pytest.approx(1.0, abs=1e-6) and rows[2]["vs_dots"] < 0.99
    different = TS.seed_stability(model, task, queries, train, dims=[16], lams=[1e-3], seeds=[0, 1, 2, 3],
                                  projections=["kronecker"])
    assert -1 <= different[0]["agreement"] < 1 and different[0]["ensemble_size"] == 2
    assert "vs_limit" not in different[0] and len(different) == 1  # no exact dots: no limit rows
    with pytest.raises(ValueError, match="at least 2 seeds"):
        TS.seed_stability(model, task, queries, train, seeds=[0])
    with pytest.raises(ValueError, match="projection must be"):
        TS.features(model, task, queries, "dense", 16, 0)


def test_projected_trak_tends_to_the_exact_limit(setting, exact):
    model, task, queries, train = setting
    dots, gram = exact
    rows = TS.seed_stability(model, task, queries, train, dims=[32, 8192], lams=[0.1], seeds=[0, 1],
                             projections=["sketch"], exact_dots=dots, exact_gram=gram)
    assert rows[1]["vs_limit"] > 0.9 and rows[1]["vs_limit"] > rows[0]["vs_limit"] + 0.1, rows
    assert rows[1]["agreement"] > rows[0]["agreement"], rows


def test_pooled_weights_runs_by_queries():
    rows = [{"size": "tiny", "projection": "sketch", "dim": 8, "lam": 0.1, "queries": q, "agreement": a,
             "agreement_min": a, "ensemble_agreement": None, "seeds": 2, "ensemble_size": None, "seconds": t}
            for q, a, t in [(1, 0.0, 1.0), (3, 1.0, 3.0)]]
    rows.append({"size": "tiny", "projection": "none", "dim": None, "lam": 0.1, "queries": 2, "agreement": 1.0,
                 "seeds": 1, "exact_seconds": 4.0})
    exact_row, row = TS.pooled(rows)
    assert row["agreement"] == pytest.approx(0.75) and row["queries"] == 4 and row["runs"] == 2
    assert row["seconds"] == pytest.approx(2.0) and "ensemble_agreement" not in row
    assert exact_row["projection"] == "none" and exact_row["dim"] is None
    text = TS.table([exact_row, row])
    assert "0.750" in text and "4.0 s per run" in text


def test_cli_refuses_bad_arguments():
    with pytest.raises(SystemExit):
        TS.main(["--projections", "dense"])
    with pytest.raises(SystemExit):
        TS.main(["--runs", "tiny"])


# ---- store keys that depend on the projection ---------------------------------------------------
class _Key(Exception):
    """Raised by a fake store with the parameters a stage would be keyed by."""


def test_part2_trak_stores_nothing_a_projection_changes():
    """Part II's TRAK has no projection (issue 12): its scores are computed from two exact stored
    parts, the run's gradient dots ('dda-dots') and the final checkpoint's training Gram matrix
    ('dda-gram'), so no stored artifact depends on the default projection (formerly a strict xfail:
    'dda-trak' was keyed by trak_dim and trak_lam only, and scores of the old Kronecker projection
    would have been reused for the sketch)."""
    class FakeStore:
        def get_or_create(self, stage, params, build, resumable=False, **kwargs):
            raise _Key(stage, params)

    setup = SimpleNamespace(world_config=WorldConfig(), store=FakeStore(), task=lambda: None)
    data = SimpleNamespace(train={"summary": ["s"], "document": ["d"]})
    s = pipeline.DDASettings()
    assert not hasattr(pipeline, "trak_scores") and not hasattr(s, "trak_dim")
    with pytest.raises(_Key) as caught:
        pipeline.train_gram(setup, s, "tiny", 0, data, checkpoint="epoch-006")
    stage, key = caught.value.args
    assert stage == "dda-gram" and key["checkpoint"] == "epoch-006" and key["group"] == s.group
    assert not any("proj" in name for name in key)
