"""Feature files on disk (``tda.gradients.features``): complete or absent, refused when corrupt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tda import gradients as G


def test_features_on_disk_roundtrip(gpt2, task, examples, tmp_path):
    path = tmp_path / "feats" / "block0.f32"
    mem = G.gradient_features(gpt2, task, examples, "block.0", projection=32)
    disk = G.gradient_features(gpt2, task, examples, "block.0", projection=32, out=path, meta={"seed": 0})
    assert isinstance(disk, np.memmap) and np.array_equal(np.asarray(disk), mem)
    side = json.loads((tmp_path / "feats" / "block0.f32.json").read_text())
    assert side["shape"] == [len(examples), 32] and side["params"]["projection"]["dim"] == 32
    assert not list((tmp_path / "feats").glob("*.partial"))
    again = G.load_features(path, shape=(len(examples), 32))
    assert np.array_equal(np.asarray(again), mem)
    with pytest.raises(ValueError, match="shape"):
        G.load_features(path, shape=(len(examples), 64))
    with open(path, "r+b") as f:  # a truncated file is refused, not misread
        f.truncate(10)
    with pytest.raises(ValueError, match="incomplete or corrupt"):
        G.load_features(path)
    with pytest.raises(FileNotFoundError):
        G.load_features(tmp_path / "missing.f32")


def test_save_features_roundtrip(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    G.save_features(tmp_path / "x.f32", x, {"note": "test"})
    assert np.array_equal(G.load_features(tmp_path / "x.f32"), x)
    assert G.feature_params(tmp_path / "x.f32")["params"] == {"note": "test"}


@pytest.mark.parametrize("kind", ["sketch", "rademacher"])
def test_both_projector_classes_roundtrip_through_feature_files(gpt2, task, examples, tmp_path, kind):
    """The sidecar holds the projector's ``describe()``: features of the default sketch and of the
    Kronecker projection are told apart on disk, and each reloads bit for bit."""
    path = tmp_path / f"{kind}.f32"
    disk = G.gradient_features(gpt2, task, examples, "block.0", projection=48, seed=5, kind=kind, out=path)
    projector = G.as_projector(48, seed=5, kind=kind)
    assert G.feature_params(path)["params"]["projection"] == projector.describe()
    again = G.gradient_features(gpt2, task, examples, "block.0", projection=projector)
    assert np.array_equal(np.asarray(G.load_features(path, shape=(len(examples), 48))), again)
    assert np.array_equal(np.asarray(disk), again)
