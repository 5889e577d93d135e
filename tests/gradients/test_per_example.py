"""Per-example gradients (``tda.gradients.per_example``) against brute-force single backwards."""

from __future__ import annotations

import warnings

import pytest
import torch

from tda import gradients as G
from tda.models import make_model
from tda.task import Examples, Seq2SeqTask

from .support import assert_close, brute_force

GROUPS = ["embedding", "block.0", "head", "all"]


@pytest.mark.parametrize("group", GROUPS)
def test_features_equal_brute_force_gpt2(gpt2, task, examples, group):
    names = G.select_parameters(gpt2, group)
    feats = G.gradient_features(gpt2, task, examples, group, batch_size=3, method="vmap")
    assert feats.shape == (len(examples), G.feature_dim(gpt2, group))
    assert_close(feats, brute_force(gpt2, task, examples, names))


@pytest.mark.parametrize("group", GROUPS)
def test_features_equal_brute_force_t5(t5, tiny_tokenizer, examples, group):
    task = Seq2SeqTask(tiny_tokenizer)
    ex = Examples([p or "Summary :" for p in examples.prompts], examples.targets)
    names = G.select_parameters(t5, group)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # T5 has no vmap path: the loop takes over
        feats = G.gradient_features(t5, task, ex, group, batch_size=2)
    assert_close(feats, brute_force(t5, task, ex, names))


def test_vmap_falls_back_to_loop_with_a_warning(t5, tiny_tokenizer, examples):
    task = Seq2SeqTask(tiny_tokenizer)
    ex = Examples(["a"] * 2, examples.targets[:2])
    with pytest.warns(RuntimeWarning, match="loop"):
        G.gradient_features(t5, task, ex, "head")
    with pytest.raises(RuntimeError):
        G.gradient_features(t5, task, ex, "head", method="vmap")


def test_vmap_path_equals_loop_path(gpt2, task, examples):
    a = G.gradient_features(gpt2, task, examples, "all", batch_size=4, method="vmap")
    b = G.gradient_features(gpt2, task, examples, "all", method="loop")
    assert_close(a, b, rtol=1e-5)


def test_model_state_is_left_alone(gpt2, task, examples):
    before = {k: v.clone() for k, v in gpt2.state_dict().items()}
    gpt2.train()
    G.gradient_features(gpt2, task, examples, "head", batch_size=2)
    assert gpt2.training  # restored
    gpt2.eval()
    assert all(torch.equal(before[k], v) for k, v in gpt2.state_dict().items())
    assert all(p.grad is None for p in gpt2.parameters())
    assert torch.is_grad_enabled()


def test_optimizer_correction_is_elementwise_division(gpt2, task, examples):
    names = G.select_parameters(gpt2, ["embedding", "block.1"])
    params = dict(gpt2.named_parameters())
    gen = torch.Generator().manual_seed(3)
    moments = {n: torch.rand(params[n].shape, generator=gen) * 1e-4 for n in names}
    got = G.gradient_features(gpt2, task, examples, names, correction=moments, eps=1e-7)
    denom = torch.cat([(moments[n].sqrt() + 1e-7).reshape(-1) for n in names]).numpy()
    assert_close(got, brute_force(gpt2, task, examples, names) / denom)
    with pytest.raises(ValueError, match="missing"):
        G.gradient_features(gpt2, task, examples, "all", correction=moments)


def test_nonfinite_gradient_raises(tiny_tokenizer, task, examples):
    broken = make_model("tiny", tiny_tokenizer, seed=1)
    with torch.no_grad():
        broken.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(G.NonFiniteGradientError, match="NaN or infinite"):
        G.gradient_features(broken, task, examples, "all")
    with pytest.raises(G.NonFiniteGradientError):
        G.gradient_dots(broken, task, examples, examples, "block.1")
    with torch.no_grad():
        broken.transformer.h[0].mlp.c_fc.weight[0, 0] = float("inf")
    with pytest.raises(G.NonFiniteGradientError):
        G.gradient_features(broken, task, examples, "all", projection=64)


def test_empty_examples_raise(gpt2, task):
    with pytest.raises(ValueError, match="empty"):
        G.gradient_features(gpt2, task, Examples([], []), "all")
    with pytest.raises(TypeError):
        G.gradient_features(gpt2, task, ["a text"], "all")
