"""Gradient dot products (``tda.gradients.dots``) against explicit dot products of brute-force gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tda import gradients as G

from .support import assert_close, brute_force


def test_gradient_dots_equal_explicit_dot_products(gpt2, task, examples):
    q, c = examples.subset([0, 2]), examples
    names = G.parameter_names(gpt2)
    gq, gc = brute_force(gpt2, task, q, names), brute_force(gpt2, task, c, names)
    dots = G.gradient_dots(gpt2, task, q, c, "all", batch_size=2)
    assert_close(dots.dots, gq.astype(np.float64) @ gc.T.astype(np.float64), rtol=1e-4)
    assert np.allclose(dots.query_sq_norms, (gq.astype(np.float64) ** 2).sum(1), rtol=1e-4)
    cos = dots.cosine()
    assert np.all(cos <= 1 + 1e-9) and np.all(cos >= -1 - 1e-9)
    assert np.allclose(cos[0, 0], 1.0, atol=1e-5)  # query 0 is candidate 0
    # Query blocks (when query gradients exceed the memory budget) give the same numbers.
    blocked = G.gradient_dots(gpt2, task, q, c, "all", max_query_bytes=1)
    assert np.allclose(blocked.dots, dots.dots, rtol=1e-5) and np.allclose(blocked.candidate_sq_norms,
                                                                           dots.candidate_sq_norms)


def test_unit_dots_split_the_group_and_apply_each_correction(gpt2, task, examples):
    """Per unit and per correction, from one gradient pass: each unit's dots are those of its own
    parameters, the units sum to the whole, and a correction divides every gradient elementwise."""
    q, c = examples.subset([0, 3]), examples
    units = {"emb": "embedding", "top": ["block.1", "head"]}
    names = {u: G.select_parameters(gpt2, g) for u, g in units.items()}
    params = dict(gpt2.named_parameters())
    gen = torch.Generator().manual_seed(1)
    moments = {n: torch.rand(p.shape, generator=gen) * 1e-3 for n, p in params.items()}
    got = G.unit_gradient_dots(gpt2, task, q, c, units, corrections=[None, moments], batch_size=3)
    assert got.units == ["emb", "top"] and got.dots.shape == (2, 2, len(q), len(c))
    for ui, u in enumerate(got.units):
        gq, gc = brute_force(gpt2, task, q, names[u]), brute_force(gpt2, task, c, names[u])
        denom = torch.cat([(moments[n].sqrt() + 1e-7).reshape(-1) for n in names[u]]).numpy()
        assert_close(got.dots[0, ui], gq.astype(np.float64) @ gc.T.astype(np.float64))
        assert_close(got.dots[1, ui], (gq / denom).astype(np.float64) @ (gc / denom).T.astype(np.float64))
        assert np.allclose(got.candidate_sq[0, ui], (gc.astype(np.float64) ** 2).sum(1), rtol=1e-4)
    whole = G.gradient_dots(gpt2, task, q, c, ["embedding", "block.1", "head"], batch_size=3)
    assert np.allclose(got.total(0).dots, whole.dots, rtol=1e-5)
    assert np.allclose(got.total(0).query_sq_norms, whole.query_sq_norms, rtol=1e-6)
    with pytest.raises(ValueError, match="overlap"):
        G.unit_gradient_dots(gpt2, task, q, c, {"a": "block.1", "b": "all"})
    with pytest.raises(ValueError, match="no correction variant"):
        G.unit_gradient_dots(gpt2, task, q, c, "head", corrections=[])
