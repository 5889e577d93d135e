"""DDA (``tda.methods.dda``): its influence dots, their combinations, and DDA from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from tda import methods as M
from tda.methods.dda import debias_terms
from tda.models import make_model
from tda.task import Examples

from .support import other_architecture


def test_influence_dots_algebra():
    rng = np.random.default_rng(0)
    q, c, n = 2, 5, 3
    d = rng.normal(size=(n + 1, 2 * q, c))
    w = np.array([0.5, 0.3, 0.1])
    dots = M.InfluenceDots(d, q, w)
    full = d[1:].mean(0) - 0.7 * d[0]
    assert np.allclose(dots.dda(beta=0.7), full[:q] - full[q:])
    assert np.allclose(dots.dda(beta=0.7, contrast=False), full[:q])
    assert np.allclose(dots.dda(beta=0.7, denoise=False), (d[-1] - 0.7 * d[0])[:q] - (d[-1] - 0.7 * d[0])[q:])
    assert np.allclose(dots.dda(beta=0.7, debias=False), dots.dda(beta=0.0))
    assert np.allclose(dots.checkpoint(0), d[0, :q] - d[0, q:])
    assert np.allclose(dots.checkpoint(2, contrast=False), d[2, :q])
    assert np.allclose(dots.tracin(), sum(w[i] * d[i + 1, :q] for i in range(n)))
    # linear in beta: the beta sweep is exact interpolation
    assert np.allclose(dots.dda(beta=0.5), (dots.dda(beta=0.0) + dots.dda(beta=1.0)) / 2)
    with pytest.raises(ValueError, match="dots must be"):
        M.InfluenceDots(d[:, :3], q, w)
    with pytest.raises(ValueError, match="learning-rate weights"):
        M.InfluenceDots(d, q, w[:2])
    # without correct outputs or the base model, only what they are not needed for
    alone = M.InfluenceDots(np.concatenate([np.full((1, q, c), np.nan), d[1:, :q]]), q, w)
    assert np.allclose(alone.dda(beta=0.0, contrast=False), d[1:, :q].mean(0))
    with pytest.raises(ValueError, match="correct outputs"):
        alone.dda(beta=0.0)
    with pytest.raises(ValueError, match="base model"):
        alone.dda(beta=1.0, contrast=False)


@pytest.mark.parametrize("beta, error, message", [
    ("0.5", TypeError, r"beta must be a number, got str '0.5'"),
    (True, TypeError, r"beta must be a number, got bool True"),
    (None, TypeError, r"beta must be a number, got NoneType"),
    (-0.1, ValueError, r"beta must be finite and >= 0.*got -0.1"),
    (float("inf"), ValueError, r"beta must be finite and >= 0.*got inf"),
])
def test_beta_must_be_a_number_at_least_zero(beta, error, message, models, task, queries, candidates):
    """A string beta used to end in a NumPy TypeError naming no setting, and beta < 0 was accepted
    (issue 15); every entry point now says which value is wrong."""
    dots = M.InfluenceDots(np.random.default_rng(0).normal(size=(2, 2, 3)), 1, np.ones(1))
    with pytest.raises(error, match=message):
        dots.dda(beta=beta)
    with pytest.raises(error, match=message):
        M.dda([models[0]], task, queries, candidates, base=models[0], beta=beta, contrast=False, group="head")
    with pytest.raises(error, match=message.replace("beta", "betas\\[2\\]")):
        M.check_beta(beta, "betas[2]")
    assert M.check_beta(np.float32(0.25)) == 0.25 and M.check_beta(0) == 0.0 and M.check_beta(np.int64(2)) == 2.0


def test_influence_dots_resume_from_saved_checkpoints(tmp_path, models, task, queries, candidates):
    first = M.influence_dots(models[0], [models[1]], task, queries, None, candidates, group="head", work=tmp_path)
    assert sorted(p.name for p in tmp_path.glob("dots-*.npz")) == ["dots-000.npz", "dots-001.npz"]
    np.savez(tmp_path / "dots-001.npz", dots=np.zeros_like(first.dots[1]), test_sq=first.test_sq[1],
             train_sq=first.train_sq[1])  # a resumed call reads what is there
    again = M.influence_dots(models[0], [models[1]], task, queries, None, candidates, group="head", work=tmp_path)
    assert np.array_equal(again.dots[0], first.dots[0]) and not again.dots[1].any()
    first.save(tmp_path)
    assert np.array_equal(M.InfluenceDots.load(tmp_path).dots, first.dots)
    # the norms kept are the gradients' own: cosine at a checkpoint equals TracIn's cosine there
    cos = M.tracin([models[1]], task, queries, candidates, group="head", similarity="cosine")
    assert np.allclose(first.checkpoint(1, contrast=False, similarity="cosine"), cos, atol=1e-6)


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
        M.dda([models[0]], task, queries, candidates, base=other_architecture(models[0]), beta=1.0,
              contrast=False, **kw)


def _dots_with_norms(seed: int = 0, q: int = 2, c: int = 6, n: int = 3) -> tuple[np.ndarray, M.InfluenceDots]:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n + 1, 2 * q, c))
    test_sq, train_sq = rng.uniform(1, 4, size=(n + 1, 2 * q)), rng.uniform(1, 9, size=(n + 1, c))
    return d, M.InfluenceDots(d, q, np.full(n, 0.1), test_sq, train_sq)


def test_normalised_beta_subtracts_a_term_as_large_as_the_signal():
    d, dots = _dots_with_norms()
    q = 2
    signal, bias = dots.terms()
    assert np.allclose(signal, d[1:].mean(0)[:q] - d[1:].mean(0)[q:]) and np.allclose(bias, d[0, :q] - d[0, q:])
    s_norm, b_norm = dots.term_scales()
    assert np.allclose(s_norm, np.linalg.norm(signal, axis=1)) and np.allclose(b_norm, np.linalg.norm(bias, axis=1))
    got = dots.dda(beta=1.0, beta_units="normalised")
    assert np.allclose(got, signal - (s_norm / b_norm)[:, None] * bias)
    # per query, beta = 1 normalised subtracts a vector of exactly the signal's norm
    assert np.allclose(np.linalg.norm((signal - got), axis=1), s_norm)
    # invariant to the scale of theta_0's gradients (what raw beta is not)
    scaled = M.InfluenceDots(np.concatenate([10 * d[:1], d[1:]]), q, dots.lr_weights, dots.test_sq, dots.train_sq)
    assert np.allclose(scaled.dda(0.7, beta_units="normalised"), dots.dda(0.7, beta_units="normalised"))
    assert not np.allclose(scaled.dda(0.7), dots.dda(0.7))
    with pytest.raises(ValueError, match="beta units"):
        dots.dda(1.0, beta_units="relative")
    # a bias term that is all zero subtracts nothing
    assert np.allclose(debias_terms(signal, np.zeros_like(bias), 2.0, "normalised"), signal)


def test_cosine_scores_unit_normalise_each_gradient():
    d, dots = _dots_with_norms(seed=1)
    q = 2
    cos = [d[i] / np.sqrt(dots.test_sq[i])[:, None] / np.sqrt(dots.train_sq[i])[None, :] for i in range(4)]
    mean = np.mean(cos[1:], axis=0)
    assert np.allclose(dots.dda(beta=0.5, similarity="cosine"), (mean[:q] - mean[q:]) - 0.5 * (cos[0][:q] - cos[0][q:]))
    assert np.allclose(dots.checkpoint(2, contrast=False, similarity="cosine"), cos[2][:q])
    assert np.allclose(dots.train_norms(0), np.sqrt(dots.train_sq[0]))
    no_norms = M.InfluenceDots(d, q, dots.lr_weights)
    with pytest.raises(ValueError, match="norms"):
        no_norms.dda(similarity="cosine")
    with pytest.raises(ValueError, match="similarity"):
        dots.dda(similarity="l2")
    with pytest.raises(ValueError, match="both squared-norm arrays"):
        M.InfluenceDots(d, q, dots.lr_weights, dots.test_sq, None)
    with pytest.raises(ValueError, match="squared norms must be"):
        M.InfluenceDots(d, q, dots.lr_weights, dots.test_sq[:, :2], dots.train_sq)


def test_contrastive_tracin_is_tracin_of_the_difference():
    d, dots = _dots_with_norms(seed=2)
    q, w = 2, dots.lr_weights
    assert np.allclose(dots.tracin(contrast=True), sum(w[i] * (d[i + 1, :q] - d[i + 1, q:]) for i in range(3)))
    assert np.allclose(dots.tracin(contrast=True), dots.tracin() - sum(w[i] * d[i + 1, q:] for i in range(3)))


def test_beta_must_be_a_finite_number_at_least_zero():
    _, dots = _dots_with_norms()
    for bad, err in [("1", TypeError), (True, TypeError), (None, TypeError), (float("nan"), ValueError),
                     (float("inf"), ValueError), (-0.5, ValueError)]:
        with pytest.raises(err, match="beta"):
            dots.dda(beta=bad)
        with pytest.raises(err, match="beta"):
            dots.dda(beta=bad, beta_units="normalised")


def test_saved_norms_round_trip(tmp_path):
    _, dots = _dots_with_norms(seed=3)
    dots.save(tmp_path)
    back = M.InfluenceDots.load(tmp_path)
    assert np.array_equal(back.test_sq, dots.test_sq) and np.array_equal(back.train_sq, dots.train_sq)
    assert np.allclose(back.dda(1.0, similarity="cosine"), dots.dda(1.0, similarity="cosine"))
