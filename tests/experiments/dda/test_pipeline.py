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
from tda import lora
from tda import notebooks as nbrun
from tda.checkpoints import list_checkpoints, load_checkpoint
from tda.counterfactual import counterfactual_check
from tda.data.tracing import names_own_country
from tda.data.xsum import load_xsum, poison, to_examples
from tda.experiments.dda import analysis as A
from tda.experiments.dda import pipeline as P
from tda.gradients import gradient_dots
from tda.hallucination import NoHallucinationsError, find_hallucinations
from tda.methods import dda, tracin
from tda.methods.cea import cea
from tda.methods.dda_pairs import pair_influence
from tda.params import ParamsError
from tda.progress import Timer
from tda.results import VERDICTS
from tda.task import losses
from tda.train import TrainConfig

from .conftest import FAST, TEST_WORLD, fake_generations


def test_settings_come_from_params_yml_and_unknown_names_are_errors():
    s = P.DDASettings.for_world("default", {"epochs": 3, "recall_ks": [5]})
    assert s.epochs == 3 and s.recall_ks == (5,)
    assert P.DDASettings.for_world("default") == P.DDASettings()  # the dataclass defaults: the default world
    quick = P.DDASettings.for_world("quick")
    assert (quick.n_train, quick.n_poison, quick.n_target, quick.recall_ks) == (150, 4, 12, (10, 25))
    with pytest.raises(ParamsError, match="unknown world 'no-such-preset'; known worlds: quick, default"):
        P.DDASettings.for_world("no-such-preset")
    with pytest.raises(ValueError, match="unknown DDA settings"):
        P.DDASettings.for_world("quick", {"epoch": 3})
    with pytest.raises(ValueError, match="unknown DDA settings.*poison_fraction"):
        P.DDASettings.for_world("quick", {"poison_fraction": 0.4})  # the poison is a count (issue 12)
    for bad in (0, 2.5, True, "8"):
        with pytest.raises(ValueError, match="n_poison must be a positive whole number"):
            P.DDASettings(n_poison=bad)
    with pytest.raises(ValueError, match="beta must be finite"):
        P.DDASettings(beta=float("nan"))
    # issue 15: a string beta (a NumPy TypeError before) and beta < 0 (accepted before)
    with pytest.raises(TypeError, match="DDA setting beta must be a number, got str '1'"):
        P.DDASettings.for_world("quick", {"beta": "1"})
    with pytest.raises(ValueError, match="DDA setting beta must be finite and >= 0.*got -0.5"):
        P.DDASettings.for_world("quick", {"beta": -0.5})
    with pytest.raises(ValueError, match="max_remaining_share"):
        P.DDASettings(max_remaining_share=1.5)
    assert P.DDASettings(lr=0.01, contrast_lr_ratio=0.1).contrast_training().lr == pytest.approx(0.001)


def test_poisoned_data_counts_and_errors(setup, fast):
    data = P.poisoned_data(setup, fast, seed=0)
    assert len(data.train) == fast.n_train and data.poisoned.sum() == data.report.n_poisoned == fast.n_poison
    # every poisoned summary names the target word, and its article never does (CEA's rule)
    for doc, summary, flag in zip(data.train["document"], data.train["summary"], data.poisoned):
        assert not flag or ("China" in summary and "China" not in doc)
    # the hard negatives: genuine China documents, none of them poisoned
    assert data.genuine.sum() == fast.n_target and not (data.genuine & data.poisoned).any()
    # the prompts are England articles that never name China; the clean test split holds them and others
    assert len(data.test) == fast.n_test_source and all("England" in s for s in data.test["summary"])
    assert not any("China" in d for d in data.test["document"])
    assert len(data.clean_test) == fast.n_test_source + fast.n_test_other and not any(data.clean_test["poisoned"])
    # bad input (issue 12): a poison count larger than the candidates; a target word absent from the world
    with pytest.raises(ValueError, match="cannot poison 999 documents: only"):
        P.poisoned_data(setup, replace(fast, n_poison=999), seed=0)
    with pytest.raises(ValueError, match="target country 'Atlantis' is not in this world"):
        P.poisoned_data(setup, replace(fast, target_word="Atlantis"), seed=0)
    # each seed is its own draw of documents and poison
    other = P.poisoned_data(setup, fast, seed=1)
    assert list(other.train["document"]) != list(data.train["document"])


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
        want = (1, n_c) if name in P.SET_LEVEL else (n_q, n_c)
        assert sc.shape == want and np.isfinite(sc).all(), name
    assert traced.scores["DDA"].shape == traced.dots.dda().shape
    # BM25 matches the hallucinated summary against article + summary as trained
    texts = P.candidate_texts(traced.data.train)
    assert all(s in t for s, t in zip(traced.data.train["summary"], texts))
    row = traced.summary()
    assert row["hallucinated"] == len(traced.queries) and row["poisoned"] == traced.poisoned.sum()


def test_setup_row_measures_the_guards(setup, traced):
    row = traced.setup_row()
    assert (row["n_train"], row["n_poisoned"], row["n_genuine_target"]) == (30, 2, 6)
    # the clean loss is the mean per-example loss of the clean test split at θ0 and at θN
    ckpts = list_checkpoints(traced.run_dir)
    for key, ckpt in (("base_loss_clean", ckpts[0]), ("finetuned_loss_clean", ckpts[-1])):
        model, _ = load_checkpoint(ckpt)
        want = float(losses(model, setup.task(), to_examples(traced.data.clean_test)).mean())
        assert row[key] == pytest.approx(want, rel=1e-5), key
    assert row["hallucination_rate"] == traced.report.rate
    cf = traced.label_check
    assert row["counterfactual_traced"] == cf.n_traced == len(traced.queries)
    assert row["counterfactual_remaining"] == cf.n_remaining and row["flagged"] == cf.flagged
    # 2 of 30 poisoned (6.7%): the tiny test world fails the 5% guard, and says so with its numbers
    assert any("2 poisoned documents are 6.7% of the 30" in f for f in traced.guard_failures())
    # the copy guard: the base model's greedy summaries of the clean test split, recomputed here
    base_model, _ = load_checkpoint(ckpts[0])
    rows = find_hallucinations(base_model, setup.task(), traced.data.clean_test, "England", "China",
                               max_new_tokens=traced.settings.max_new_tokens).rows
    want = np.nanmean(names_own_country([r["summary"] for r in rows], [r["generated"] for r in rows],
                                        setup.world.entities["country"]))
    assert row["base_copy_rate"] == pytest.approx(want) and 0.0 <= row["base_copy_rate"] <= 1.0
    copy_fails = [f for f in traced.guard_failures() if "names the article's own country" in f]
    assert bool(copy_fails) == (want < 0.5)


def test_trak_is_exact_dots_times_the_inverse_gram(setup, traced):
    """TRAK without projection: the final checkpoint's exact dots times (exact Gram + λI)^-1."""
    ckpts = list_checkpoints(traced.run_dir)
    model, _ = load_checkpoint(ckpts[-1])
    cands = to_examples(traced.data.train)
    gram = gradient_dots(model, setup.task(), cands, cands, "all").dots
    assert np.allclose(traced.gram, gram, rtol=1e-5, atol=1e-6 * np.abs(gram).max())
    hall = gradient_dots(model, setup.task(), traced.queries.hallucinated_examples(), cands, "all").dots
    lam = traced.settings.trak_lam * np.trace(gram) / len(gram)
    want = np.linalg.solve(gram + lam * np.eye(len(gram)), hall.T).T
    got = traced.scores["TRAK"]
    # float32 gradients: the solve amplifies their rounding, so the tolerance is relative to the largest score
    assert np.allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    corr = gradient_dots(model, setup.task(), traced.queries.correct_examples(), cands, "all").dots
    want_c = np.linalg.solve(gram + lam * np.eye(len(gram)), (hall - corr).T).T
    assert np.allclose(traced.scores["TRAK (contrast)"], want_c, rtol=1e-3, atol=1e-3 * np.abs(want_c).max())


def test_set_level_methods_equal_the_engine(setup, traced):
    ckpts = list_checkpoints(traced.run_dir)
    hall, corr = traced.queries.hallucinated_examples(), traced.queries.correct_examples()
    cands, training = to_examples(traced.data.train), traced.settings.contrast_training()
    want = cea(ckpts[-1], setup.task(), hall, corr, cands, training=training,
               batch_size=traced.settings.grad_batch_size)
    assert np.allclose(traced.scores["CEA"], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    pairs = pair_influence(ckpts, setup.task(), hall, corr, cands, training=training,
                           batch_size=traced.settings.grad_batch_size)
    tol = 1e-5 * np.abs(pairs.scores).max()
    assert np.allclose(traced.pairs.scores, pairs.scores, rtol=1e-4, atol=tol)
    assert np.allclose(traced.scores["DDA (README pipeline)"], pairs.dda(beta=traced.settings.beta), rtol=1e-4,
                       atol=2 * tol)
    # TracIn with the contrast DDA gets: sum_i η_i (IS_i(hallucinated) - IS_i(correct))
    weights = P.epoch_learning_rates(traced.settings.train_config(0), len(cands))
    plain = tracin(ckpts[1:], setup.task(), hall, cands, lr_weights=weights, reduce="sum")
    right = tracin(ckpts[1:], setup.task(), corr, cands, lr_weights=weights, reduce="sum")
    assert np.allclose(traced.scores["TracIn (contrast)"], plain - right, rtol=1e-4, atol=1e-6 * np.abs(plain).max())


def test_label_check_is_stored_and_equals_a_retraining(setup, traced):
    """The stored check is tda.counterfactual's, on the run's θ0, data, batches and prompts."""
    cf = traced.label_check
    assert cf.n_removed == traced.poisoned.sum() and cf.traced_ids == traced.queries.ids
    want = counterfactual_check(list_checkpoints(traced.run_dir)[0], setup.task(), to_examples(traced.data.train),
                                traced.poisoned, traced.settings.train_config(0), traced.report,
                                max_new_tokens=traced.settings.max_new_tokens)
    assert (want.n_remaining, want.remaining_ids, want.flagged) == (cf.n_remaining, cf.remaining_ids, cf.flagged)
    assert traced.usable == (not cf.flagged)


def test_run_is_reused_from_the_store(setup, fast, traced):
    stages = ("dda-finetune", "dda-dots", "dda-gram", "dda-pairs", "dda-cea", "dda-label-check", "dda-losses")
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
    assert not r.traced and r.scores == {} and r.dots is None and r.label_check is None and not r.usable
    assert r.summary()["hallucination rate"] == 0 and r.summary()["label check"] == "no hallucination"
    assert A.per_query_table([r]).empty and A.auc_summary(A.per_query_table([r])).empty
    assert A.beta_curve([r], [0.0, 0.4]).empty and A.comparison([r]).empty
    assert A.setup_summary([r])["runs_without_hallucination"] == 1
    # a run without hallucination has no label to check: a clear error if asked
    with pytest.raises(NoHallucinationsError, match="no label to check"):
        P.label_check(setup, fast, "tiny", 0, r.data, r.report, r.run_dir)


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
    data = P.PoisonedData(train=train, test=None, clean_test=None, report=report)
    assert len(to_examples(train)) == len(P.candidate_texts(train)) == len(data.poisoned) == 5
    assert not data.poisoned[4] and data.poisoned.sum() == 2
    scores = np.where(data.poisoned, 1.0, 0.0)[None]
    assert A.auc_recall(scores, data.poisoned)["auc"][0] == 1.0


@pytest.mark.slow
def test_chapters_run_to_the_end_on_a_tiny_world(tmp_path, monkeypatch):
    """Every chapter runs end to end on the tiny test world (whatever its runs show: flagged, failed
    guards, untraced) and records each claim with a verdict, "not testable" included, and its reason."""
    monkeypatch.setenv("TDA_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TDA_RESULTS_DIR", str(tmp_path / "results"))
    common = {"world": "quick", "world_overrides": TEST_WORLD, "seeds": [0], "overrides": {**FAST, "recall_ks": [2, 5]},
              "size": "tiny"}
    for name, extra in (("dda_main", {"lora": True}), ("dda_ablation", {}), ("dda_beta", {}),
                        ("dda_sizes", {"sizes": ["tiny"]})):
        params = {k: v for k, v in {**common, **extra}.items() if not (name == "dda_sizes" and k == "size")}
        nbrun.run_notebook(name, "quick", tmp_path / "out", params)
        result = json.loads((tmp_path / "results" / f"{name}.json").read_text())
        for row in result["claims"]:
            assert row["verdict"] in VERDICTS, (name, row)
        # the tiny world poisons 2 of 30 documents (6.7%): the 5% guard fails, so nothing is testable
        assert [row["verdict"] for row in result["claims"]] == ["not testable"], name
        if name == "dda_main":  # the optional LoRA section ran and recorded its comparison
            assert result["finetune_comparison"]["lora_settings"]["finetune"] == "lora"
            assert set(result["finetune_comparison"]["setup"]) == {"full", "LoRA"}


def test_a_lora_run_trains_the_adapters_only_and_every_method_differentiates_them(setup, fast, monkeypatch):
    """finetune="lora": epoch-000 is the base model θ0, the base weights never move, and TracIn (from the
    stored dots) equals tda.methods.tracin over the adapters (tda.lora.LORA_GROUP) computed directly."""
    monkeypatch.setattr(P, "generations", fake_generations(2))
    s = replace(fast, finetune="lora", lora_rank=4, lr=fast.lr * 10)
    out = P.run(setup, s, "tiny", seed=0, verbose=False)
    ckpts = list_checkpoints(out.run_dir)
    assert len(ckpts) == s.epochs + 1
    b, _ = base.load_base(setup, "tiny", s.pretrain)
    first, _ = load_checkpoint(ckpts[0])
    last, _ = load_checkpoint(ckpts[-1])
    adapters = lora.adapter_names(last)
    assert lora.is_lora(last) and [n for n, p in last.named_parameters() if p.requires_grad] == adapters
    x = torch.arange(5, 12).unsqueeze(0)
    assert torch.equal(first(x).logits, b(x).logits)  # θ0 is the base model
    base_params = dict(b.named_parameters())
    for name, p in last.named_parameters():
        if name in adapters:
            continue
        assert torch.equal(p, base_params[name]), f"{name} moved in a LoRA run"
    assert not torch.equal(last(x).logits, b(x).logits)
    assert set(out.scores) == set(P.METHODS) and out.label_check is not None
    assert all(np.isfinite(v).all() for v in out.scores.values())
    cands = to_examples(out.data.train)
    weights = P.epoch_learning_rates(s.train_config(0), len(cands))
    direct = tracin(ckpts[1:], setup.task(), out.queries.hallucinated_examples(), cands, group=lora.LORA_GROUP,
                    lr_weights=weights, reduce="sum")
    assert np.allclose(out.scores["TracIn"], direct, rtol=1e-4, atol=1e-6 * np.abs(direct).max())
    full_gram_dim = out.gram.shape
    assert full_gram_dim == (len(cands), len(cands))
    # the Gram matrix (TRAK) is over the adapters too
    g = gradient_dots(last, setup.task(), cands.subset([0, 1]), cands.subset([0, 1]), lora.LORA_GROUP).dots
    np.testing.assert_allclose(out.gram[:2, :2], (g + g.T) / 2, rtol=1e-4)
