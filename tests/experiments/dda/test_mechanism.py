"""Part II's mechanism (``tda.experiments.dda.mechanism``): the debias diagnostics, gradient shrinkage
and the terms per kind of document on hand-made parts whose answers are known; the event table and
the sentences on a real (tiny) run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tda.experiments.dda import analysis as A
from tda.experiments.dda import mechanism as M
from tda.experiments.dda import pipeline as P
from tda.methods import InfluenceDots, PairInfluence

SUMMARIES = ["China wins", "China votes", "England floods", "rain in France", "China floods", "snow in Peru"]
POISONED = np.array([True, True, False, False, False, False])  # documents 0, 1 (China in the summary, poisoned)
GENUINE = np.array([False, False, False, False, True, False])  # document 4: a genuine China summary


def _run(signal, scale=2.0, train_sq=None):
    """One query; the θ0 term is ``scale`` times the signal (both contrastive: correct rows are 0)."""
    signal = np.asarray(signal, dtype=np.float64)
    dots = np.zeros((3, 2, len(signal)))
    dots[1, 0] = dots[2, 0] = signal
    dots[0, 0] = scale * signal
    n = len(signal)
    losses = {"base_train": np.full(n, 2.0), "finetuned_train": np.full(n, 0.5), "base_clean": np.full(4, 0.8),
              "finetuned_clean": np.full(4, 0.6)}
    sq = None if train_sq is None else (np.ones((3, 2)), np.asarray(train_sq, dtype=np.float64))
    return SimpleNamespace(size="small", seed=0, traced=True, settings=P.DDASettings(beta=1.0), losses=losses,
                           poisoned=POISONED, genuine=GENUINE, data=SimpleNamespace(train={"summary": SUMMARIES}),
                           dots=InfluenceDots(dots, 1, np.ones(2), *(sq or (None, None))), pairs=None)


def test_debias_diagnostics_of_a_theta0_term_proportional_to_the_signal():
    # the signal ranks the genuine China document (4) and nothing else above a poisoned one (3): AUC 7/8
    signal = [5.0, 3.0, 1.0, 0.0, 4.0, -1.0]
    r = _run(signal, scale=2.0)
    d = M.debias_diagnostics([r]).iloc[0]
    assert d["reconstruction"] == "minimal pair" and d["queries"] == 1
    assert d["scale θ0 / signal"] == pytest.approx(2.0) and d["correlation"] == pytest.approx(1.0)
    auc0 = A.auc_recall(np.array([signal]), POISONED)["auc"][0]
    assert d["AUC at β=0"] == d["AUC of θ0 term alone"] == pytest.approx(auc0) == 0.875
    assert d["hard AUC at β=0"] == pytest.approx(0.5)  # 5 > 4 > 3: one of two poisoned beats the genuine one
    # at raw β = 1: signal - 2 signal = -signal, the ranking reversed
    assert d["AUC at β=1"] == pytest.approx(1 - auc0) and d["hard AUC at β=1"] == pytest.approx(0.5)
    assert (d["train loss at θ0"], d["train loss at θN"], d["clean loss at θ0"]) == (2.0, 0.5, 0.8)
    # the README pipeline's parts are diagnosed the same way, beside
    r.pairs = PairInfluence(np.stack([2 * np.array([signal]), np.array([signal]), np.array([signal])]))
    both = M.debias_diagnostics([r])
    assert list(both["reconstruction"]) == ["minimal pair", "README pipeline"]
    assert both.iloc[1]["AUC at β=1"] == pytest.approx(1 - auc0)
    text = M.explain_debias(both, "minimal pair", 1.0)
    assert "reaches 87.5% AUC (50.0% on hard negatives)" in text and "2.00 times as large" in text
    assert "Debias lowers the AUC here" in text
    assert "already ranks the poisoned documents" in text and "outweighs the signal about 2.0 to 1" in text
    assert "no run of the README" in M.explain_debias(both.iloc[:1], "README pipeline", 1.0)


def test_a_small_uninformative_theta0_term_is_said_to_change_little():
    r = _run([5.0, 3.0, 1.0, 0.0, 4.0, -1.0], scale=1e-6)
    text = M.explain_debias(M.debias_diagnostics([r]), "minimal pair", 1.0)
    assert "changes the AUC by less than a point" in text


def test_gradient_shrinkage_and_terms_by_kind():
    # squared norms at θ0, θ1, θ2: poisoned 16 -> 1 (4-fold), the others 9 -> 1 (3-fold)
    sq = np.array([[16, 16, 9, 9, 9, 9], [4, 4, 4, 4, 4, 4], [1, 1, 1, 1, 1, 1]], dtype=float)
    r = _run([5.0, 3.0, 1.0, 0.0, 4.0, -1.0], scale=0.5, train_sq=sq)
    assert list(A.document_kinds(r)) == ["poisoned", "poisoned", "about England", "other", "about China", "other"]
    shrink = M.gradient_shrinkage([r]).set_index("kind")
    assert shrink.loc["poisoned", "shrinkage θ0/θN"] == pytest.approx(4.0)
    assert shrink.loc["other", "gradient norm at θ0"] == pytest.approx(3.0) and shrink.loc["other", "documents"] == 2
    by_kind = M.terms_by_kind([r]).set_index("kind")
    spread = np.std([5.0, 3.0, 1.0, 0.0, 4.0, -1.0])
    assert by_kind.loc["poisoned", "signal"] == pytest.approx(4.0 / spread)
    assert by_kind.loc["poisoned", "θ0 term"] == pytest.approx(2.0 / spread)
    assert by_kind.loc["poisoned", "signal - θ0 term"] == pytest.approx(2.0 / spread)
    text = M.explain_shrinkage(M.gradient_shrinkage([r]), M.terms_by_kind([r]))
    assert "falls 4.0-fold (4.00 to 1.00)" in text and "that of the other kinds 3.0- to 3.0-fold" in text
    assert "shrink more than the others' (1.33 times" in text
    assert "no run with stored gradient norms" in M.explain_shrinkage(M.gradient_shrinkage([_run([1.0] * 6)]),
                                                                       M.terms_by_kind([]))


def test_event_table_counts(traced):
    t = M.event_table([traced]).set_index("event")
    assert t["poisoned"].sum() == traced.poisoned.sum()
    assert t["test prompts"].sum() == traced.report.n and t["hallucinated"].sum() == traced.report.n_hallucinated
    assert ((t["poisoned share"] >= 0) & (t["poisoned share"] <= 1)).all()


def test_mechanism_of_a_real_run(traced):
    d = M.debias_diagnostics([traced])
    assert list(d["reconstruction"]) == ["minimal pair", "README pipeline"]
    signal, bias = traced.dots.terms()
    want = np.median(np.linalg.norm(bias, axis=1) / np.linalg.norm(signal, axis=1))
    assert d.iloc[0]["scale θ0 / signal"] == pytest.approx(want)
    shrink = M.gradient_shrinkage([traced])
    assert shrink["documents"].sum() == len(traced.data.train)
    assert np.allclose(traced.dots.train_norms(0) ** 2, traced.dots.train_sq[0])


def test_finetune_debias_compares_what_raw_beta_subtracts_under_each_kind():
    # full: θ0 term twice the signal, so raw β = 1 reverses the ranking; LoRA: a θ0 term a thousandth of
    # the signal, so raw β = 1 leaves it. At normalised β = 1 both subtract a term as large as the
    # signal and proportional to it: every score is 0, a tie, AUC 0.5.
    signal = [5.0, 3.0, 1.0, 0.0, 4.0, -1.0]
    auc0 = A.auc_recall(np.array([signal]), POISONED)["auc"][0]
    full, lora = _run(signal, scale=2.0), _run(signal, scale=1e-3)
    table = M.finetune_debias({"full": [full], "LoRA": [lora]})
    assert list(table["fine-tuning"]) == ["full", "LoRA"]
    f, l = table.iloc[0], table.iloc[1]
    assert f["scale θ0 / signal"] == pytest.approx(2.0) and l["scale θ0 / signal"] == pytest.approx(1e-3)
    assert f["AUC at β=0"] == l["AUC at β=0"] == pytest.approx(auc0)
    assert f["AUC at raw β"] == pytest.approx(1 - auc0) and l["AUC at raw β"] == pytest.approx(auc0)
    assert f["AUC at normalised β=1"] == pytest.approx(0.5) and l["AUC at normalised β=1"] == pytest.approx(0.5)
    text = M.explain_finetune_debias(table)
    assert "with full fine-tuning the θ0 term is 2 times" in text
    assert "with LoRA fine-tuning the θ0 term is 0.001" in text
    assert f"{1 - auc0:.2f} at raw β = 1" in text and "2,000 times as much with full fine-tuning as with LoRA" in text
    assert "no pair" in M.explain_finetune_debias(table.iloc[:1])
    # an untraced run has nothing to measure
    lora.traced = False
    assert list(M.finetune_debias({"full": [full], "LoRA": [lora]})["fine-tuning"]) == ["full"]
