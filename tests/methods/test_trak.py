"""TRAK (``tda.methods.trak``): the formula against brute force, its exact (unprojected) limit, the
dual form, ensembles over projection seeds and their agreement."""

from __future__ import annotations

import numpy as np
import pytest

from tda import gradients as G
from tda import methods as M
from tda.methods.trak import rank_agreement, seed_agreement, trak_from_dots, trak_from_features, trak_per_seed

from .support import close, flat_grads


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
    with pytest.raises(ValueError, match="lam"):
        M.trak([models[0]], task, queries, candidates, projection=32, lam=-1.0)


def test_default_projection_is_the_sketch(models, task, queries, candidates):
    """``projection=k`` means ``as_projector(k, seed)``: the sketch, unless ``kind`` says otherwise."""
    got = M.trak([models[0]], task, queries, candidates, group="block.1", projection=32, seed=3, lam=1e-2)
    want = M.trak([models[0]], task, queries, candidates, group="block.1", projection=G.SketchProjector(32, seed=3),
                  lam=1e-2)
    kron = M.trak([models[0]], task, queries, candidates, group="block.1", projection=32, seed=3, lam=1e-2,
                  kind="rademacher")
    assert np.array_equal(got, want) and not np.allclose(got, kron)


def test_trak_without_projection_is_the_exact_formula(models, task, queries, candidates):
    """Brute force: flat gradients G (train = candidates) and phi(q) (G^T G + lambda I)^{-1} G^T in
    the D x D primal form, D = the group's parameters (a small group: two layer norms)."""
    group = r"transformer\.h\.1\.ln_\d\.(weight|bias)"
    gq = flat_grads(models[0], task, queries, group)
    gc = flat_grads(models[0], task, candidates, group)
    ridge = 0.05 * np.trace(gc @ gc.T) / len(gc)  # lam relative to trace(K) / n
    primal = gq @ np.linalg.solve(gc.T @ gc + ridge * np.eye(gc.shape[1]), gc.T)
    got = M.trak([models[0]], task, queries, candidates, group=group, projection=None, lam=0.05)
    assert close(got, primal, rtol=1e-4)
    # with a separate training set (Woodbury form), against the primal form again
    train = candidates.subset([0, 2, 3])
    gt = flat_grads(models[0], task, train, group)
    ridge = 0.05 * np.trace(gt @ gt.T) / len(gt)
    primal = gq @ np.linalg.solve(gt.T @ gt + ridge * np.eye(gt.shape[1]), gc.T)
    got = M.trak([models[0]], task, queries, candidates, train=train, group=group, projection=None, lam=0.05)
    assert close(got, primal, rtol=1e-3)
    with pytest.raises(ValueError, match="hooks"):
        M.trak([models[0]], task, queries, candidates, projection=None, method="hooks")
    with pytest.raises(ValueError, match="lambda > 0"):
        M.trak([models[0]], task, queries, candidates, train=train, group=group, projection=None, lam=0.0)


@pytest.mark.parametrize("n,k", [(6, 10), (9, 4)])
def test_dual_form_equals_the_primal_form(n, k):
    """phi_q (F^T F + lambda I)^{-1} F^T = phi_q F^T (F F^T + lambda I)^{-1}, and Woodbury for other
    candidates, on both sides of k = n."""
    gen = np.random.default_rng(0)
    train, queries, cands = gen.standard_normal((n, k)), gen.standard_normal((3, k)), gen.standard_normal((5, k))
    primal = queries @ np.linalg.solve(train.T @ train + 0.3 * np.eye(k), train.T)
    assert np.allclose(trak_from_features(queries, train, 0.3, relative=False), primal)
    assert np.allclose(trak_from_dots(queries @ train.T, train @ train.T, 0.3, relative=False), primal)
    primal = queries @ np.linalg.solve(train.T @ train + 0.3 * np.eye(k), cands.T)
    assert np.allclose(trak_from_features(queries, cands, 0.3, relative=False, phi_t=train), primal)
    assert np.allclose(trak_from_dots(queries @ train.T, train @ train.T, 0.3, relative=False,
                                      qc=queries @ cands.T, tc=train @ cands.T), primal)
    with pytest.raises(ValueError, match="both"):
        trak_from_dots(queries @ train.T, train @ train.T, 0.3, qc=queries @ cands.T)


def test_ensemble_over_projection_seeds(models, task, queries, candidates):
    kw = dict(group="block.1", projection=48, lam=1e-2)
    per_seed = trak_per_seed([models[0]], task, queries, candidates, seeds=[0, 1, 2], **kw)
    assert per_seed.shape == (3, len(queries), len(candidates))
    for j, seed in enumerate([0, 1, 2]):
        assert np.array_equal(per_seed[j], M.trak([models[0]], task, queries, candidates, seed=seed, **kw))
    assert np.allclose(M.trak([models[0]], task, queries, candidates, seeds=[0, 1, 2], **kw), per_seed.mean(0))
    exact = trak_per_seed([models[0]], task, queries, candidates, group="block.1", projection=None, seeds=[0, 1])
    assert exact.shape == (1, len(queries), len(candidates))  # no projection: nothing to ensemble
    with pytest.raises(ValueError, match="own seed"):
        trak_per_seed([models[0]], task, queries, candidates, projection=G.SketchProjector(16), seeds=[0, 1])
    with pytest.raises(ValueError, match="no projection seed"):
        trak_per_seed([models[0]], task, queries, candidates, seeds=[])


def test_seed_agreement_measures_rank_agreement():
    gen = np.random.default_rng(1)
    signal = gen.standard_normal((4, 50))
    same = np.stack([signal] * 4)
    assert seed_agreement(same)["agreement"] == pytest.approx(1.0)
    noise = np.stack([gen.standard_normal((4, 50)) for _ in range(6)])
    out = seed_agreement(noise)
    assert abs(out["agreement"]) < 0.15 and out["ensemble_size"] == 3 and out["seeds"] == 6
    noisy = np.stack([signal + 1.0 * gen.standard_normal((4, 50)) for _ in range(8)])
    out = seed_agreement(noisy)
    # one seed agrees ~ 1/(1 + sigma^2) = 0.5 with another; averages of 4 seeds agree more
    assert 0.35 < out["agreement"] < 0.65 and out["ensemble_agreement"] > out["agreement"] + 0.2
    assert seed_agreement(noisy[:3])["ensemble_agreement"] is None
    assert rank_agreement(signal, -signal) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_agreement(signal[None])


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
