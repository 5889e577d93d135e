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
