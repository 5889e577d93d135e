"""Attribution methods: each against its definition, and each bad input against a clear error."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from tda import gradients as G
from tda import methods as M
from tda.models import make_model
from tda.task import CausalLMTask, Examples, Seq2SeqTask
from tda.train import CheckpointError, TrainConfig, adam_second_moments, list_checkpoints, train



@pytest.fixture(scope="module", autouse=True)
def _quiet():
    mp = pytest.MonkeyPatch()
    mp.setenv("TDA_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    mp.undo()


@pytest.fixture(scope="module")
def task(tiny_tokenizer):
    return CausalLMTask(tiny_tokenizer)


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    return make_model("tiny", tiny_tokenizer, seed=0), make_model("tiny", tiny_tokenizer, seed=1)


@pytest.fixture(scope="module")
def queries(tiny_world):
    facts = tiny_world.facts
    return Examples.texts([tiny_world.render(facts[0], 0), tiny_world.render(facts[1], 0)])


@pytest.fixture(scope="module")
def candidates(tiny_world):
    facts = tiny_world.facts
    return Examples.texts([tiny_world.render(facts[0], 1), tiny_world.render(facts[2], 2), tiny_world.render(facts[1], 3),
                           tiny_world.render(facts[3], 1), tiny_world.render(facts[0], 3)])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_tokenizer, task, tiny_world):
    """epoch-000 (no optimizer state), epoch-001, epoch-002 of a short real training run."""
    out = tmp_path_factory.mktemp("ckpts")
    model = make_model("tiny", tiny_tokenizer, seed=2)
    texts = Examples.texts([tiny_world.render(f, 0) for f in tiny_world.facts[:12]])
    train(model, tiny_tokenizer, task, texts, out, TrainConfig(epochs=2, batch_size=4, lr=1e-3))
    return list_checkpoints(out)


def flat_grads(model, task, examples, group, correction=None, eps=1e-7) -> np.ndarray:
    """Brute force: one ``backward`` per example, optionally divided by sqrt(v) + eps."""
    names = G.select_parameters(model, group)
    rows = []
    for i in range(len(examples)):
        m = copy.deepcopy(model)
        m.zero_grad()
        task.per_example_loss(m, task.encode(examples.subset([i])))[0].backward()
        params = dict(m.named_parameters())
        parts = []
        for n in names:
            g = params[n].grad
            if correction is not None:
                g = g / (correction[n].sqrt() + eps)
            parts.append(g.reshape(-1))
        rows.append(torch.cat(parts).double().numpy())
    return np.stack(rows)


def close(a, b, rtol=1e-4):
    return np.abs(np.asarray(a) - np.asarray(b)).max() <= rtol * max(np.abs(b).max(), 1e-12)


# ---- BM25 ---------------------------------------------------------------------------------
def test_bm25_ranks_exact_match_first():
    docs = ["Paris is the capital of France .", "Berlin lies in Germany .", "Mara Holt was born in Lusto .",
            "The river Lusto is long ."]
    scores = M.bm25(["Mara Holt was born in Lusto .", "capital of France"], docs)
    assert scores.shape == (2, 4)
    assert scores[0].argmax() == 2 and scores[1].argmax() == 0
    okapi = M.bm25(["Mara Holt was born in Lusto ."], docs, variant="okapi")
    assert okapi[0].argmax() == 2
    assert M.bm25(["BERLIN"], docs)[0].max() == M.bm25(["BERLIN"], docs)[0].min()  # case matters by default
    assert M.bm25(["BERLIN"], docs, lowercase=True)[0].argmax() == 1


@pytest.mark.parametrize("queries,candidates", [([], ["a b"]), (["a"], []), (["a"], ["", " "]), ("a", ["a"])])
def test_bm25_bad_inputs_raise(queries, candidates):
    with pytest.raises((ValueError, TypeError)):
        M.bm25(queries, candidates)
    with pytest.raises(ValueError):
        M.bm25(["a"], ["a"], variant="bm42")


# ---- EMBED --------------------------------------------------------------------------------
def test_embed_cosine(models, task, queries, candidates):
    model = models[0]
    self_sim = M.embed(model, task, candidates, candidates, layers=[0, 2], pooling="tokens")
    assert np.allclose(np.diag(self_sim), 1.0)
    scores = M.embed(model, task, queries, candidates, layers=[0, 1])
    assert scores.shape == (2, 5) and np.all(np.abs(scores) <= 1)
    single = [M.embed(model, task, queries, candidates, layers=i) for i in (0, 1)]
    assert np.allclose(scores, np.mean(single, axis=0))  # union of layers = mean of cosines
    concat = M.embed(model, task, queries, candidates, layers=[0, 1], combine="concat")
    assert concat.shape == scores.shape and np.all(np.abs(concat) <= 1)
    assert np.allclose(M.embed(model, task, queries, candidates, layers=-1),
                       M.embed(model, task, queries, candidates, layers=2))


def test_embed_seq2seq_runs(tiny_tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=len(tiny_tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                      relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0)
    t5 = T5ForConditionalGeneration(config).eval()
    ex = Examples(["Mara was born in [MASK] .", "The capital of England is [MASK] ."], ["Lusto", "London"])
    task = Seq2SeqTask(tiny_tokenizer)
    both = M.embed(t5, task, ex, ex, layers=1)
    assert both.shape == (2, 2) and np.allclose(np.diag(both), 1.0)
    assert M.pooled_states(t5, task, ex, 0)[0].shape == (2, 64)  # encoder and decoder concatenated
    assert M.pooled_states(t5, task, ex, 0, pooling="target")[0].shape == (2, 32)


def test_embed_bad_inputs_raise(models, task, queries, candidates):
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        M.embed(models[0], task, queries, candidates, layers=5)
    with pytest.raises(ValueError):
        M.embed(models[0], task, queries, candidates, layers=[])
    with pytest.raises(ValueError, match="empty"):
        M.embed(models[0], task, Examples([], []), candidates)
    with pytest.raises(ValueError, match="one model"):
        M.embed(list(models), task, queries, candidates)
    with pytest.raises(ValueError, match="one model"):
        M.embed([], task, queries, candidates)
    with pytest.raises(ValueError):
        M.embed(models[0], task, queries, candidates, combine="max")


# ---- TracIn -------------------------------------------------------------------------------
def test_tracin_all_parameters_equals_explicit_dot_product(models, task, queries, candidates):
    model = models[0]
    gq, gc = flat_grads(model, task, queries, "all"), flat_grads(model, task, candidates, "all")
    got = M.tracin([model], task, queries, candidates, group="all", similarity="dot")
    assert close(got, gq @ gc.T)
    cos = M.tracin([model], task, queries, candidates, group="all", similarity="cosine")
    expected = (gq / np.linalg.norm(gq, axis=1, keepdims=True)) @ (gc / np.linalg.norm(gc, axis=1, keepdims=True)).T
    assert close(cos, expected) and np.all(np.abs(cos) <= 1 + 1e-9)


def test_tracin_checkpoint_reduction_and_weights(models, task, queries, candidates):
    kw = dict(group="block.1")
    s0 = M.tracin([models[0]], task, queries, candidates, **kw)
    s1 = M.tracin([models[1]], task, queries, candidates, **kw)
    assert np.allclose(M.tracin(list(models), task, queries, candidates, reduce="sum", **kw), s0 + s1)
    assert np.allclose(M.tracin(list(models), task, queries, candidates, **kw), (s0 + s1) / 2)
    weighted = M.tracin(list(models), task, queries, candidates, reduce="sum", lr_weights=[0.5, 2.0], **kw)
    assert np.allclose(weighted, 0.5 * s0 + 2.0 * s1)
    with pytest.raises(ValueError, match="weights"):
        M.tracin(list(models), task, queries, candidates, lr_weights=[1.0], **kw)


def test_tracin_optimizer_correction_equals_manual_division(checkpoints, task, queries, candidates):
    ckpt = checkpoints[-1]
    moments = adam_second_moments(ckpt)
    model = G.load_checkpoint_model(ckpt)
    gq = flat_grads(model, task, queries, "block.1", correction=moments)
    gc = flat_grads(model, task, candidates, "block.1", correction=moments)
    got = M.tracin([ckpt], task, queries, candidates, group="block.1", correction=True)
    assert close(got, gq @ gc.T)
    both = M.tracin(checkpoints[1:], task, queries, candidates, group="block.1", correction=True, reduce="sum")
    assert both.shape == got.shape and not np.allclose(both, got)
    with pytest.raises(CheckpointError, match="optimizer"):
        M.tracin(checkpoints[:1], task, queries, candidates, group="head", correction=True)
    with pytest.raises(ValueError, match="paths"):
        M.tracin([model], task, queries, candidates, group="head", correction=True)


def test_tracin_projected_equals_projected_features(models, task, queries, candidates):
    proj = G.Projector(128, seed=4)
    got = M.tracin([models[0]], task, queries, candidates, group="all", projection=proj)
    fq = G.gradient_features(models[0], task, queries, "all", projection=proj).astype(np.float64)
    fc = G.gradient_features(models[0], task, candidates, "all", projection=proj).astype(np.float64)
    assert np.allclose(got, fq @ fc.T)


def test_tracin_embed_is_mean_of_cosines(models, task, queries, candidates):
    t = M.tracin([models[0]], task, queries, candidates, group="embedding", similarity="cosine")
    e = M.embed(models[0], task, queries, candidates, layers=0)
    assert np.allclose(M.tracin_embed([models[0]], task, queries, candidates, layers=0, group="embedding"),
                       (t + e) / 2)
    with pytest.raises(ValueError, match="cosine"):
        M.tracin_embed([models[0]], task, queries, candidates, similarity="dot")


# ---- TRAK ---------------------------------------------------------------------------------
def test_trak_with_huge_lambda_is_the_projected_dot_product(models, task, queries, candidates):
    proj = G.Projector(64, seed=1)
    lam = 1e9
    got = M.trak([models[0]], task, queries, candidates, group="block.1", projection=proj, lam=lam, relative=False)
    fq = G.gradient_features(models[0], task, queries, "block.1", projection=proj).astype(np.float64)
    fc = G.gradient_features(models[0], task, candidates, "block.1", projection=proj).astype(np.float64)
    assert close(got * lam, fq @ fc.T, rtol=1e-3)


def test_trak_kernel_and_ensemble(models, task, queries, candidates):
    kw = dict(group="block.1", projection=32, lam=1e-2)
    s0 = M.trak([models[0]], task, queries, candidates, **kw)
    s1 = M.trak([models[1]], task, queries, candidates, **kw)
    assert np.allclose(M.trak(list(models), task, queries, candidates, **kw), (s0 + s1) / 2)
    # The kernel is built from a separate training set when given one; a candidate's own
    # features then score it highest against itself.
    own = M.trak([models[0]], task, candidates, candidates, train=candidates.subset([0, 1, 2, 3, 4]),
                 group="block.1", projection=32, lam=1e-3)
    assert np.all(own.argmax(axis=1) == np.arange(len(candidates)))
    with pytest.raises(ValueError, match="projection"):
        M.trak([models[0]], task, queries, candidates, projection=None)
    with pytest.raises(ValueError, match="lam"):
        M.trak([models[0]], task, queries, candidates, projection=32, lam=-1.0)


# ---- DDA ----------------------------------------------------------------------------------
def test_dda_reduces_to_tracin_dot(models, task, queries, candidates):
    got = M.dda([models[0]], task, queries, candidates, beta=0.0, contrast=False, group="block.1")
    assert np.allclose(got, M.tracin([models[0]], task, queries, candidates, group="block.1", similarity="dot"))


def test_dda_parts(models, task, queries, candidates, tiny_world):
    base, last = models
    mid = make_model("tiny", task.tokenizer, seed=5)
    correct = [tiny_world.render(tiny_world.facts[4], 0), tiny_world.render(tiny_world.facts[5], 0)]
    right = Examples(queries.prompts, correct)
    kw = dict(group="block.1")
    plain = M.dda([mid, last], task, queries, candidates, beta=0.0, contrast=False, **kw)
    assert np.allclose(plain, M.tracin([mid, last], task, queries, candidates, **kw))  # denoise = mean
    assert np.allclose(M.dda([mid, last], task, queries, candidates, beta=0.0, contrast=False, denoise=False, **kw),
                       M.dda([last], task, queries, candidates, beta=0.0, contrast=False, **kw))
    debiased = M.dda([mid, last], task, queries, candidates, base=base, beta=0.4, contrast=False, **kw)
    assert np.allclose(debiased, plain - 0.4 * M.tracin([base], task, queries, candidates, **kw))
    full = M.dda([mid, last], task, queries, candidates, base=base, beta=0.4, correct=correct, **kw)
    on_right = M.dda([mid, last], task, right, candidates, base=base, beta=0.4, contrast=False, **kw)
    assert np.allclose(full, debiased - on_right)  # contrastive = hallucinated minus correct
    assert np.allclose(M.dda([mid, last], task, queries, candidates, base=base, beta=0.4, correct=right, **kw), full)


def test_dda_bad_inputs_raise(models, task, queries, candidates, tiny_tokenizer):
    kw = dict(group="head")
    with pytest.raises(ValueError, match="base"):
        M.dda([models[0]], task, queries, candidates, beta=0.5, contrast=False, **kw)
    with pytest.raises(ValueError, match="correct"):
        M.dda([models[0]], task, queries, candidates, beta=0.0, **kw)
    with pytest.raises(ValueError, match="correct outputs"):
        M.dda([models[0]], task, queries, candidates, beta=0.0, correct=["only one"], **kw)
    with pytest.raises(ValueError, match="architectures"):
        M.dda([models[0]], task, queries, candidates, base=_other_architecture(models[0]), beta=1.0,
              contrast=False, **kw)


# ---- baselines ----------------------------------------------------------------------------
def test_random_baselines(queries, candidates):
    a = M.random_scores(queries, candidates, seed=3)
    assert a.shape == (2, 5) and np.array_equal(a, M.random_scores(queries, candidates, seed=3))
    assert not np.array_equal(a, M.random_scores(queries, candidates, seed=4))
    answers = ["Paris", "Rome"]
    cands = ["Rome", "Paris", "Oslo", "Paris", "Rome "]
    rt = M.random_target(answers, cands, seed=0)
    for q, ans in enumerate(answers):
        same = [j for j, c in enumerate(cands) if c.strip() == ans]
        ranked = np.argsort(-rt[q])
        assert set(ranked[: len(same)]) == set(same)
    ex = Examples(["q1", "q2"], answers)
    assert np.array_equal(M.random_target(ex, Examples([""] * 5, cands), seed=0), rt)
    with pytest.raises(ValueError, match="empty"):
        M.random_target([], cands)
    with pytest.raises(ValueError, match="empty"):
        M.random_scores(queries, [])


# ---- bad inputs shared by the model methods ----------------------------------------------
def _other_architecture(model):
    config = copy.deepcopy(model.config)
    config.n_layer = 1
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("method", ["tracin", "trak", "dda"])
def test_gradient_methods_reject_bad_inputs(method, models, task, queries, candidates, checkpoints):
    fn = getattr(M, method)
    kw = {"group": "head"}
    if method == "dda":
        kw.update(beta=0.0, contrast=False)
    if method == "trak":
        kw.update(projection=16)
    with pytest.raises(ValueError, match="empty"):
        fn([], task, queries, candidates, **kw)
    with pytest.raises(ValueError, match="empty"):
        fn([models[0]], task, Examples([], []), candidates, **kw)
    with pytest.raises(ValueError, match="empty"):
        fn([models[0]], task, queries, Examples([], []), **kw)
    with pytest.raises(ValueError, match="architectures"):
        fn([models[0], _other_architecture(models[0])], task, queries, candidates, **kw)
    with pytest.raises(ValueError, match="architectures"):
        fn([checkpoints[0], _other_architecture(models[0])], task, queries, candidates, **kw)
    with pytest.raises(ValueError, match="matches no parameter"):
        fn([models[0]], task, queries, candidates, **{**kw, "group": "block.9"})


def test_checkpoint_paths_and_models_agree(checkpoints, task, queries, candidates):
    model = G.load_checkpoint_model(checkpoints[-1])
    assert np.allclose(M.tracin([checkpoints[-1]], task, queries, candidates, group="head"),
                       M.tracin([model], task, queries, candidates, group="head"))
    with pytest.raises(FileNotFoundError):
        M.tracin([checkpoints[-1].parent / "epoch-999"], task, queries, candidates, group="head")
