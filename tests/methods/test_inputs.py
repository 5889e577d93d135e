"""What every gradient method (TracIn, TRAK, DDA) shares: checkpoints as paths or models, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from tda import methods as M
from tda.checkpoints import load_checkpoint_model
from tda.task import Examples

from .support import other_architecture


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
        fn([models[0], other_architecture(models[0])], task, queries, candidates, **kw)
    with pytest.raises(ValueError, match="architectures"):
        fn([checkpoints[0], other_architecture(models[0])], task, queries, candidates, **kw)
    with pytest.raises(ValueError, match="matches no parameter"):
        fn([models[0]], task, queries, candidates, **{**kw, "group": "block.9"})


def test_checkpoint_paths_and_models_agree(checkpoints, task, queries, candidates):
    model = load_checkpoint_model(checkpoints[-1])
    assert np.allclose(M.tracin([checkpoints[-1]], task, queries, candidates, group="head"),
                       M.tracin([model], task, queries, candidates, group="head"))
    with pytest.raises(FileNotFoundError):
        M.tracin([checkpoints[-1].parent / "epoch-999"], task, queries, candidates, group="head")
