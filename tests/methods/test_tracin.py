"""TracIn (``tda.methods.tracin``) against explicit dot products; its parts and their combinations."""

from __future__ import annotations

import numpy as np
import pytest

from tda import gradients as G
from tda import methods as M
from tda.checkpoints import CheckpointError, load_checkpoint_model, second_moments
from tda.methods.tracin import combine_checkpoints, combine_tracin_embed

from .support import close, flat_grads


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
    moments = second_moments(ckpt)
    model = load_checkpoint_model(ckpt)
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


def test_parts_by_unit_combine_to_any_union(checkpoints, task, queries, candidates):
    """Per-unit parts summed over a union of units, with or without correction, equal TracIn over
    that group from scratch; the corrected half of a checkpoint without optimizer state is NaN."""
    parts = M.tracin_parts(checkpoints, task, queries, candidates, by_unit=True, correction="available")
    assert parts.units == ["embedding", "block.0", "block.1", "head", "other"]
    assert parts.checkpoints == ["epoch-000", "epoch-001", "epoch-002"]
    assert np.isnan(parts.dots[0, 1]).all() and np.isfinite(parts.dots[1:]).all()
    n = (len(queries), len(candidates))
    for units, group in (("all", "all"), (["block.1", "head"], ["block.1", "head"]), ("embedding", "embedding")):
        for similarity in ("dot", "cosine"):
            for corrected, cks in ((False, [0, 1, 2]), (True, [1, 2])):
                got = parts.matrix(parts.scores(units, cks, similarity, corrected), *n)
                want = M.tracin([checkpoints[i] for i in cks], task, queries, candidates, group=group,
                                similarity=similarity, correction=corrected)
                assert close(got, want, rtol=2e-4), (units, similarity, corrected)
    with pytest.raises(ValueError, match="no optimizer state"):
        parts.scores(checkpoints=[0], corrected=True)
    with pytest.raises(ValueError, match="unknown parameter units"):
        parts.scores(units="block.7")
    norms = parts.query_norms("all")
    assert norms.shape == (3, len(queries)) and (norms > 0).all()


def test_parts_survive_a_save_and_load(tmp_path, models, task, queries, candidates):
    pairs = (np.array([0, 0, 1]), np.array([1, 4, 2]))
    parts = M.tracin_parts([models[0]], task, queries, candidates, by_unit=True, pairs=pairs)
    parts.save(tmp_path)
    back = M.TracInParts.load(tmp_path, *pairs)
    assert back.units == parts.units and back.checkpoints == ["model-0"]
    assert np.array_equal(back.scores(corrected=False), parts.scores(corrected=False))
    full = M.tracin([models[0]], task, queries, candidates, similarity="cosine")
    assert np.allclose(back.scores(corrected=False), full[pairs], rtol=1e-5)


def test_checkpoints_combine_in_one_place():
    a, b = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    assert np.array_equal(combine_checkpoints([a, b]), (a + b) / 2)
    assert np.array_equal(combine_checkpoints([a, b], reduce="sum"), a + b)
    assert np.allclose(combine_checkpoints([a, b], [0.5, 2.0], reduce="sum"), 0.5 * a + 2.0 * b)
    with pytest.raises(ValueError, match="weights"):
        combine_checkpoints([a, b], [1.0])
    with pytest.raises(ValueError, match="no checkpoint"):
        combine_checkpoints([])
    assert np.array_equal(combine_tracin_embed([1.0, 0.0], [0.0, 1.0]), [0.5, 0.5])
