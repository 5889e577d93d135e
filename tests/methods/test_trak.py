"""TRAK (``tda.methods.trak``)."""

from __future__ import annotations

import numpy as np
import pytest

from tda import gradients as G
from tda import methods as M

from .support import close


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


# ---- TRAK without projection (tda.methods.trak.trak_from_dots) --------------------------------
def test_trak_from_dots_hand_worked():
    gram = np.diag([2.0, 4.0])
    dots = np.array([[2.0, 4.0], [1.0, 0.0]])
    assert np.allclose(M.trak_from_dots(dots, gram, lam=0.0), [[1.0, 1.0], [0.5, 0.0]])
    # relative ridge: lam * trace / n = (1/3) * 6 / 2 = 1
    assert np.allclose(M.trak_from_dots(dots, gram, lam=1 / 3), [[2 / 3, 4 / 5], [1 / 3, 0.0]])
    assert np.allclose(M.trak_from_dots(dots, gram, lam=1.0, relative=False), [[2 / 3, 4 / 5], [1 / 3, 0.0]])
    # linear in the queries: a contrast of two outputs is the contrast of their scores
    assert np.allclose(M.trak_from_dots(dots[:1] - dots[1:], gram, 0.1),
                       M.trak_from_dots(dots[:1], gram, 0.1) - M.trak_from_dots(dots[1:], gram, 0.1))


def test_trak_from_dots_is_trak_when_the_projection_keeps_every_training_direction(models, task, queries, candidates):
    """With k > n projected dims, TRAK on the features equals trak_from_dots on their dot products
    (push-through identity): the formula of the unprojected limit is TRAK's own."""
    proj = G.Projector(64, seed=3)
    fq = G.gradient_features(models[0], task, queries, "block.1", projection=proj).astype(np.float64)
    fc = G.gradient_features(models[0], task, candidates, "block.1", projection=proj).astype(np.float64)
    ridge = 0.05
    want = M.trak([models[0]], task, queries, candidates, group="block.1", projection=proj, lam=ridge, relative=False)
    got = M.trak_from_dots(fq @ fc.T, fc @ fc.T, ridge, relative=False)
    assert close(got, want, rtol=1e-5)


def test_trak_from_dots_equals_trak_exact_of_issue_18():
    try:
        from tda.trak_stability import trak_exact
    except ImportError:  # the module moves (issue 18's follow-up); its formula is restated below
        def trak_exact(dots, gram, ridge):
            return np.linalg.solve(gram + ridge * np.eye(len(gram)), dots.T).T
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(7, 30))
    q = rng.normal(size=(3, 30))
    gram, dots = feats @ feats.T, q @ feats.T
    lam = 1e-3
    assert np.allclose(M.trak_from_dots(dots, gram, lam), trak_exact(dots, gram, lam * np.trace(gram) / 7))


def test_trak_from_dots_refuses_bad_input():
    gram, dots = np.eye(3), np.ones((2, 3))
    with pytest.raises(ValueError, match="square"):
        M.trak_from_dots(dots, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"\[n_queries, 3\]"):
        M.trak_from_dots(np.ones((2, 4)), gram)
    with pytest.raises(ValueError, match="lam must be finite"):
        M.trak_from_dots(dots, gram, lam=-1.0)
    with pytest.raises(ValueError, match="finite"):
        M.trak_from_dots(np.full((2, 3), np.nan), gram)
    with pytest.raises(ValueError, match="singular"):
        M.trak_from_dots(dots, np.zeros((3, 3)), lam=0.0)
