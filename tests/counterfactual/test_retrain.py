"""Retraining on a subset with the same seed and batch order, and the counterfactual check of labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tda import counterfactual as C
from tda.counterfactual import retrain as retrain_module
from tda.hallucination import NoHallucinationsError, detect_hallucinations
from tda.models import make_model
from tda.task import Examples
from tda.checkpoints import list_checkpoints
from tda.train import TrainConfig, epoch_batches, train


@pytest.fixture(scope="module")
def examples(tiny_world):
    return Examples.texts([tiny_world.render(f, t) for f in tiny_world.facts[:10] for t in (0, 1)])


CONFIG = TrainConfig(epochs=2, batch_size=4, lr=1e-3, schedule="linear", seed=3)


def test_keeping_everything_reproduces_train(tmp_path, task, examples, tiny_tokenizer):
    ref = make_model("tiny", tiny_tokenizer, seed=0)
    train(ref, tiny_tokenizer, task, examples, tmp_path, CONFIG)
    model = make_model("tiny", tiny_tokenizer, seed=0)
    state = C.finetune_subset(model, task, examples, np.ones(len(examples), dtype=bool), CONFIG)
    assert state["steps"] == 2 * 5 and state["skipped_batches"] == 0
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    # and from a saved base checkpoint: retrain_without(nothing) lands on the same weights
    again, _ = C.retrain_without(list_checkpoints(tmp_path)[0], task, examples, [], CONFIG)
    for (name, a), b in zip(ref.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_subset_keeps_the_full_runs_batches(task, examples):
    keep = C.keep_mask([0, 1, 2, 5, 8, 9, 13], len(examples))
    lengths = task.lengths(examples)
    for epoch in range(2):
        full = epoch_batches(lengths, CONFIG.batch_size, CONFIG.seed, epoch)
        sub = C.subset_batches(lengths, keep, CONFIG, epoch)
        assert len(sub) == len(full)
        for f, s in zip(full, sub):
            assert s == [i for i in f if keep[i]]
    assert sorted(i for b in sub for i in b) == [0, 1, 2, 5, 8, 9, 13]


def test_removing_examples_changes_only_what_they_touch(task, examples, tiny_tokenizer):
    """Without examples 0-3 the weights differ; a removed batch skips its step (schedule kept)."""
    full = make_model("tiny", tiny_tokenizer, seed=0)
    C.finetune_subset(full, task, examples, np.ones(len(examples), dtype=bool), CONFIG)
    model = make_model("tiny", tiny_tokenizer, seed=0)
    keep = np.ones(len(examples), dtype=bool)
    keep[:4] = False
    state = C.finetune_subset(model, task, examples, keep, CONFIG)
    assert state["n_kept"] == 16
    assert any(not torch.equal(a, b) for a, b in zip(full.state_dict().values(), model.state_dict().values()))
    empty = sum(1 for e in range(2) for b in C.subset_batches(task.lengths(examples), keep, CONFIG, e) if not b)
    assert state["skipped_batches"] == empty and state["steps"] == 10 - empty


def test_bad_subsets(task, examples, tiny_tokenizer):
    model = make_model("tiny", tiny_tokenizer, seed=0)
    with pytest.raises(ValueError, match="removes all"):
        C.finetune_subset(model, task, examples, [], CONFIG)
    with pytest.raises(ValueError, match="one flag per training example"):
        C.keep_mask(np.ones(3, dtype=bool), len(examples))
    with pytest.raises(ValueError, match="must lie in"):
        C.keep_mask([0, 99], len(examples))


# ---- the label check ----------------------------------------------------------------------------
DOCS = [{"document": f"A storm hit England on day {i} .", "summary": "A storm hit England .", "id": f"t{i}"}
        for i in range(5)]


def _report(outputs):
    return detect_hallucinations(DOCS, outputs, "England", "China")


def test_check_labels_counts_what_remains(monkeypatch, task):
    run = _report(["Storm in China ."] * 4 + ["Storm in England ."])  # 4 traced hallucinations
    without = ["Storm in England ."] * 3 + ["Storm in China ."] + ["Storm in China ."]  # 1 remains, 1 new

    def fake(model, task_, rows, source, target, **kw):
        rows = list(rows)
        assert [kw["prompt_fn"](r["document"]) for r in rows] == [r["prompt"] for r in run.rows]
        return detect_hallucinations(rows, without, source, target)

    monkeypatch.setattr(retrain_module, "find_hallucinations", fake)
    rep = C.check_labels(run, object(), task, n_removed=6)
    assert (rep.n_traced, rep.n_remaining, rep.n_without, rep.remaining_ids) == (4, 1, 2, ["t3"])
    assert rep.verified_ids == ["t0", "t1", "t2"]
    assert rep.flagged  # 1 of 4 = 25% > 10%
    assert not C.check_labels(run, object(), task, n_removed=6, max_remaining_share=0.25).flagged
    without = ["Storm in England ."] * 5
    clean = C.check_labels(run, object(), task, n_removed=6)
    assert (clean.n_remaining, clean.flagged, clean.remaining_share) == (0, False, 0.0)
    assert clean.summary()["flagged"] is False


def test_no_hallucination_and_no_poison_are_clear_errors(task, examples, tiny_tokenizer):
    model = make_model("tiny", tiny_tokenizer, seed=0)
    quiet = _report(["Storm in England ."] * 5)
    with pytest.raises(NoHallucinationsError, match="no hallucination"):
        C.check_labels(quiet, model, task, n_removed=1)
    with pytest.raises(NoHallucinationsError, match="no hallucination"):  # before any retraining
        C.counterfactual_check(model, task, examples, [0], CONFIG, quiet)
    with pytest.raises(ValueError, match="no poisoned example"):
        C.counterfactual_check(model, task, examples, np.zeros(len(examples), dtype=bool), CONFIG,
                               _report(["China ."] * 5))
    with pytest.raises(ValueError, match="max_remaining_share"):
        C.check_labels(_report(["China ."] * 5), model, task, n_removed=1, max_remaining_share=2)


def test_counterfactual_check_end_to_end(task, examples, tiny_tokenizer):
    """A real retraining and generation on the tiny model (its outputs are whatever they are: the
    check only has to count them consistently with a direct generation)."""
    from tda.hallucination import find_hallucinations

    base = make_model("tiny", tiny_tokenizer, seed=0)
    run = _report(["Storm in China ."] * 3 + ["Storm in England ."] * 2)
    rep = C.counterfactual_check(base, task, examples, [0, 1], CONFIG, run, max_new_tokens=6)
    model, _ = C.retrain_without(base, task, examples, [0, 1], CONFIG)
    direct = find_hallucinations(model, task, DOCS, "England", "China", max_new_tokens=6, only_naming_source=False)
    assert rep.n_without == direct.n_hallucinated and rep.n_traced == 3 and rep.n_removed == 2
    assert [r["generated"] for r in rep.rows] == [r["generated"] for r in direct.rows]
