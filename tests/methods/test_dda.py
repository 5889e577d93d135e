"""DDA (``tda.methods.dda``): its influence dots, their combinations, and DDA from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from tda import methods as M
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
    assert sorted(p.name for p in tmp_path.glob("dots-*.npy")) == ["dots-000.npy", "dots-001.npy"]
    np.save(tmp_path / "dots-001.npy", np.zeros_like(first.dots[1]))  # a resumed call reads what is there
    again = M.influence_dots(models[0], [models[1]], task, queries, None, candidates, group="head", work=tmp_path)
    assert np.array_equal(again.dots[0], first.dots[0]) and not again.dots[1].any()
    first.save(tmp_path)
    assert np.array_equal(M.InfluenceDots.load(tmp_path).dots, first.dots)


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
