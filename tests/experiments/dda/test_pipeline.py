"""Part II's pipeline (``tda.experiments.dda.pipeline``): poisoned runs, their stored stages, every
method's scores equal to the engine's computed from scratch."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace

import nbformat
import numpy as np
import pytest
import torch

from tda import base
from tda import notebooks as nbrun
from tda.checkpoints import list_checkpoints, load_checkpoint
from tda.data.xsum import load_xsum, poison, to_examples
from tda.experiments.dda import analysis as A
from tda.experiments.dda import pipeline as P
from tda.methods import dda, tracin
from tda.params import ParamsError
from tda.progress import Timer
from tda.train import TrainConfig

from .conftest import FAST, TEST_WORLD, fake_generations


def test_settings_come_from_params_yml_and_unknown_names_are_errors():
    s = P.DDASettings.for_world("default", {"epochs": 3, "recall_ks": [5]})
    assert s.epochs == 3 and s.recall_ks == (5,)
    assert P.DDASettings.for_world("default") == P.DDASettings()  # the dataclass defaults: the default world
    quick = P.DDASettings.for_world("quick")
    assert (quick.n_docs, quick.recall_ks) == (200, (10, 25))
    with pytest.raises(ParamsError, match="unknown world 'no-such-preset'; known worlds: quick, default"):
        P.DDASettings.for_world("no-such-preset")
    with pytest.raises(ValueError, match="unknown DDA settings"):
        P.DDASettings.for_world("quick", {"epoch": 3})
    counted = P.DDASettings.for_world("quick", {"n_poison": 7})  # a count replaces the preset's fraction
    assert counted.n_poison == 7 and counted.poison_fraction is None
    with pytest.raises(ValueError, match="exactly one of poison_fraction and n_poison"):
        P.DDASettings(poison_fraction=0.4, n_poison=3)
    with pytest.raises(ValueError, match="beta must be finite"):
        P.DDASettings(beta=float("nan"))
    # issue 15: a string beta (a NumPy TypeError before) and beta < 0 (accepted before)
    with pytest.raises(TypeError, match="DDA setting beta must be a number, got str '1'"):
        P.DDASettings.for_world("quick", {"beta": "1"})
    with pytest.raises(ValueError, match="DDA setting beta must be finite and >= 0.*got -0.5"):
        P.DDASettings.for_world("quick", {"beta": -0.5})


def test_poisoned_data_counts_and_errors(setup, fast):
    data = P.poisoned_data(setup, fast, seed=0)
    assert data.poisoned.sum() == data.report.n_poisoned == round(0.5 * data.report.n_candidates)
    # every poisoned summary names the target word, and the test prompts are England documents
    for summary, flag in zip(data.train["summary"], data.poisoned):
        assert ("China" in summary) or not flag
    assert all("England" in s for s in data.test["summary"])
    with pytest.raises(ValueError, match="cannot poison 999 documents: only"):
        P.poisoned_data(setup, replace(fast, poison_fraction=None, n_poison=999), seed=0)
    with pytest.raises(ValueError, match="no training summary was poisoned"):
        P.poisoned_data(setup, replace(fast, poison_fraction=None, n_poison=0), seed=0)
    with pytest.raises(ValueError, match="occurs in no summary"):
        P.poisoned_data(setup, replace(fast, target_share=0.0), seed=0)


def test_epoch_learning_rates():
    flat = P.epoch_learning_rates(TrainConfig(epochs=3, lr=2e-3, batch_size=4), n_examples=10)
    assert np.allclose(flat, 2e-3)
    lin = P.epoch_learning_rates(TrainConfig(epochs=2, lr=1.0, batch_size=5, schedule="linear"), n_examples=10)
    # 2 steps per epoch, 4 in all: lr 1, 3/4 | 1/2, 1/4
    assert np.allclose(lin, [0.875, 0.375])


def test_cached_variants_equal_direct_computation(setup, traced):
    """Every variant derived from the stored dots equals tda.methods.dda / tracin from scratch."""
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
    weights = P.epoch_learning_rates(traced.settings.train_config(0), len(cands))
    direct = tracin(ckpts[1:], task, hall, cands, lr_weights=weights, reduce="sum")
    assert np.allclose(traced.scores["TracIn"], direct, rtol=1e-4, atol=1e-6 * np.abs(direct).max())
    # epoch-000 of the fine-tuning run is the base model: theta_0 of the debias term
    b, _ = base.load_base(setup, "tiny", traced.settings.pretrain)
    e0, _ = load_checkpoint(ckpts[0])
    assert all(torch.equal(p, q) for p, q in zip(b.state_dict().values(), e0.state_dict().values()))


def test_run_has_every_method_over_all_training_documents(traced):
    n_q, n_c = len(traced.queries), len(traced.data.train)
    assert set(traced.scores) == set(P.METHODS)
    for name, sc in traced.scores.items():
        assert sc.shape == (n_q, n_c) and np.isfinite(sc).all(), name
    assert traced.scores["DDA"].shape == traced.dots.dda().shape
    # BM25 matches the hallucinated summary against article + summary as trained
    texts = P.candidate_texts(traced.data.train)
    assert all(s in t for s, t in zip(traced.data.train["summary"], texts))
    row = traced.summary()
    assert row["hallucinated"] == len(traced.queries) and row["poisoned"] == traced.poisoned.sum()


def test_run_is_reused_from_the_store(setup, fast, traced):
    stages = ("dda-finetune", "dda-dots", "dda-trak")
    before = {st: sorted(p.name for p in (setup.store.root / st).iterdir()) for st in stages}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "generations", fake_generations(2))
        timer = Timer()
        again = P.run(setup, fast, "tiny", seed=0, timer=timer, verbose=False)
    assert {st: sorted(p.name for p in (setup.store.root / st).iterdir()) for st in stages} == before
    for name in P.METHODS:
        assert np.array_equal(again.scores[name], traced.scores[name]), name
    assert "fine-tune tiny" in timer.wall and set(timer.seconds()) == {"wall", "cpu"}


def test_a_checkpoint_folder_deleted_from_an_old_finetune_entry_is_rebuilt(setup, fast, traced):
    """Issue 15: in an entry written before manifests listed their files, a deleted last epoch went
    unnoticed and the epoch before it passed for the fine-tuned model."""
    folder = P.finetune_poisoned(setup, fast, "tiny", 0)
    last = list_checkpoints(folder)[-1]
    weights = (last / "model.safetensors").read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(last)
    with pytest.warns(UserWarning, match=rf"is damaged: .*{last.name} is missing"):
        assert P.finetune_poisoned(setup, fast, "tiny", 0) == folder
    assert (last / "model.safetensors").read_bytes() == weights


def test_generations_are_stored_and_deterministic(setup, fast):
    first = P.generations(setup, fast, "tiny", seed=0)
    again = P.generations(setup, fast, "tiny", seed=0)
    assert first.rows == again.rows and first.n == len(P.poisoned_data(setup, fast, 0).test)


def test_no_hallucination_is_counted_not_raised(setup, fast):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "generations", fake_generations(0))
        r = P.run(setup, fast, "tiny", seed=0, verbose=False)
    assert not r.traced and r.scores == {} and r.dots is None
    assert r.summary()["hallucination rate"] == 0
    assert A.per_query_table([r]).empty and A.auc_summary(A.per_query_table([r])).empty
    assert A.beta_curve([r], [0.0, 0.4]).empty


def test_optimizer_corrected_tracin_equals_the_engine(setup, fast, traced):
    ckpts = list_checkpoints(traced.run_dir)
    got = P.corrected_tracin_scores(setup, fast, "tiny", 0, traced.data, traced.queries, ckpts)
    weights = P.epoch_learning_rates(fast.train_config(0), len(traced.data.train))
    want = tracin(ckpts[1:], setup.task(), traced.queries.hallucinated_examples(), to_examples(traced.data.train),
                  lr_weights=weights, reduce="sum", correction=True)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-8 * np.abs(want).max())
    assert not np.allclose(got, traced.scores["TracIn"])  # the correction changes the scores
    with pytest.raises(ValueError, match="unknown methods"):
        P.run(setup, fast, "tiny", 0, verbose=False, methods=("DDA", "LiSSA"))


def test_an_empty_summary_is_a_counted_skip_that_keeps_row_numbers(tmp_path):
    """Real XSum has a few empty summaries: poisoning skips and counts them, and every later stage
    keeps the row (so scores, labels and documents stay aligned)."""
    rows = [{"document": f"Rain fell in England on day {i} .", "summary": "Floods hit England .", "id": str(i)}
            for i in range(4)] + [{"document": "A quiet day .", "summary": "  ", "id": "4"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, report = poison(load_xsum(path), n=2, seed=0, return_report=True)
    assert report.n_empty_skipped == 1 and any("empty summary" in str(w.message) for w in caught)
    data = P.PoisonedData(train=train, test=None, report=report)
    assert len(to_examples(train)) == len(P.candidate_texts(train)) == len(data.poisoned) == 5
    assert not data.poisoned[4] and data.poisoned.sum() == 2
    scores = np.where(data.poisoned, 1.0, 0.0)[None]
    assert A.auc_recall(scores, data.poisoned)["auc"][0] == 1.0


@pytest.mark.slow
def test_chapters_explain_a_run_without_hallucinations(tmp_path, monkeypatch):
    """A target word outside the tokenizer's vocabulary can never be generated (it is trained as
    [UNK], which decoding drops), so nothing hallucinates — deterministically. Every chapter must
    then run to the end, say why, and record no verdict (the scoreboard shows the claim as not run)."""
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
