"""The adapters build a Case from small real runs of Part I and Part II, and the Case agrees with
what those parts compute themselves (labels, label metrics, correctness, checkpoints)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tda import base
from tda.checkpoints import list_checkpoints, load_checkpoint
from tda.data import ftrace as ft
from tda.data.xsum import to_examples as xsum_examples
from tda.experiments.counterfactual import adapters, analysis, pipeline
from tda.experiments.dda import analysis as dda_analysis
from tda.experiments.dda import pipeline as dda_pipeline
from tda.experiments.ftrace import analysis as ftrace_analysis
from tda.experiments.ftrace.pipeline import FtraceSettings, RunParts, prepare
from tda.store import Store
from tests.experiments.dda.conftest import FAST as DDA_FAST
from tests.experiments.dda.conftest import TEST_WORLD as DDA_WORLD
from tests.experiments.dda.conftest import fake_generations
from tests.experiments.ftrace.conftest import TEST_WORLD, TREX


@pytest.fixture(scope="module")
def trex_run(tmp_path_factory):
    setup = base.world_setup("quick", TEST_WORLD, store=Store(tmp_path_factory.mktemp("store")))
    return prepare(setup, FtraceSettings.for_world("quick", "trex", TREX), seed=0, verbose=False)


@pytest.fixture(scope="module")
def dda_run(tmp_path_factory):
    setup = base.world_setup("quick", DDA_WORLD, store=Store(tmp_path_factory.mktemp("store")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dda_pipeline, "generations", fake_generations(2))
        run = dda_pipeline.run(setup, dda_pipeline.DDASettings.for_world("quick", DDA_FAST), "tiny", seed=0,
                               verbose=False, methods=("DDA", "BM25", "random"))
    return setup, run


def test_from_ftrace_run(trex_run):
    run = trex_run
    scores = {"BM25": ftrace_analysis.bm25_scores(run), "random": ftrace_analysis.uniform_scores(run)}
    case = adapters.from_ftrace_run(RunParts(run, None, None, None), scores=scores)
    n = len(run.data.abstracts)
    assert case.train.prompts == ft.to_examples(run.data.abstracts).prompts and len(case.train) == n
    assert case.base == list_checkpoints(run.finetune_dir)[0] and case.final == list_checkpoints(run.finetune_dir)[-1]
    assert case.config == run.settings.train_config(run.seed) and case.run_key["finetune"] == run.finetune_dir.name
    assert case.queries.targets == run.query_examples().targets and case.query_slice == run.query_slice
    for j, row in enumerate(run.query_rows):
        assert case.positives[j].tolist() == list(run.data.queries[row]["proponents"])
        unscored = np.setdiff1d(np.arange(n), run.candidates.indices[j])
        assert np.isnan(case.scores["BM25"][j, unscored]).all()
        assert case.scores["BM25"][j, run.candidates.indices[j]] == pytest.approx(scores["BM25"][j])
    # the label metric is Part I's MRR, query by query
    ours = analysis.label_table(case, ["BM25"])["value"].to_numpy()
    assert ours == pytest.approx(ftrace_analysis.query_metrics(run, scores["BM25"])["mrr"].to_numpy())
    # the behaviour is Part I's correctness rule at the final checkpoint
    final, _ = load_checkpoint(case.final)
    want = [run.slices["correct_after"][r] for r in run.query_rows]
    assert case.present(final, range(len(case.queries))).tolist() == want
    assert case.present(final, [2, 0]).tolist() == [want[2], want[0]]
    with pytest.raises(ValueError, match="no method"):
        adapters.from_ftrace_run(RunParts(run, None, None, None), methods=["TracIn"], scores=scores)


def test_from_dda_run_and_the_reference_retrain(dda_run):
    setup, run = dda_run
    case = adapters.from_dda_run(run, task=setup.task())
    assert case.name == "dda" and case.label_metric == "auc" and len(case.queries) == len(run.queries)
    assert case.train.prompts == xsum_examples(run.data.train).prompts
    assert case.counterparts.targets == run.queries.correct and case.queries.targets == run.queries.hallucinated
    assert all(p.tolist() == np.flatnonzero(run.poisoned).tolist() for p in case.positives)
    auc = analysis.label_table(case, ["DDA"])["value"].to_numpy()
    assert auc == pytest.approx(dda_analysis.auc_recall(run.scores["DDA"], run.poisoned)["auc"])
    assert adapters.from_dda_run(run).task.max_length == setup.task().max_length  # the default task
    shown = case.present(load_checkpoint(case.final)[0], [0, 1])
    assert shown.dtype == bool and shown.shape == (2,)
    ref = pipeline.reference(case, setup.store)
    assert ref.max_difference == 0.0  # retraining from the base with everything kept is the run


def test_from_dda_run_without_hallucination(dda_run):
    _, run = dda_run
    with pytest.raises(ValueError, match="no output hallucinates"):
        adapters.from_dda_run(dataclasses.replace(run, queries=None))


def test_a_set_level_method_blames_the_same_documents_for_every_query():
    """CEA and DDA's README pipeline rank once per error set (one row); Part III asks per query, so
    that row becomes every query's row. A per-query method's rows are kept as they are, and a
    per-query method with one row is not silently copied."""
    row = np.array([[0.5, -1.0, 2.0]])
    got = adapters._per_query("DDA (README pipeline)", row, 4)
    assert got.shape == (4, 3) and all(np.array_equal(r, row[0]) for r in got)
    assert adapters._per_query("CEA", row, 2).shape == (2, 3)
    per_query = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(adapters._per_query("TracIn", per_query, 2), per_query)
    assert adapters._per_query("TracIn", row, 4).shape == (1, 3)
