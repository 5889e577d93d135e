"""Random projection (``tda.gradients.projection``): its inner-product bound, seeds, explicit matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tda import gradients as G
from tda.seeds import derive_seed


SHAPES = {"w": (96, 80), "b": (80,), "e": (120, 40), "small": (8, 6)}


def _random_grads(seed, correlated_with=None, noise=1.0):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in SHAPES.items():
        t = torch.randn(shape, generator=gen)
        if correlated_with is not None:
            t = correlated_with[name] + noise * t
        out[name] = t
    return out


def _dot(g, h):
    return float(sum((g[n].double() * h[n].double()).sum() for n in g))


@pytest.mark.parametrize("structure,kind", [("auto", "rademacher"), ("kronecker", "gaussian"), ("dense", "rademacher")])
def test_projection_preserves_inner_products_within_bound(structure, kind):
    g = _random_grads(0)
    h = _random_grads(1, correlated_with=g, noise=0.7)
    exact = _dot(g, h)
    errors, bounds = [], []
    for seed in range(8):
        proj = G.Projector(256, seed=seed, kind=kind, structure=structure, dense_max_entries=1 << 16)
        pg = proj.project({n: t[None] for n, t in g.items()})[0]
        ph = proj.project({n: t[None] for n, t in h.items()})[0]
        err = float(pg.double() @ ph.double()) - exact
        bound = proj.variance_bound(g, h)
        assert abs(err) <= 4 * bound ** 0.5, (seed, err, bound ** 0.5)
        errors.append(err)
        bounds.append(bound)
    # The bound is a variance: the mean squared error over seeds should not exceed it by much.
    assert np.mean(np.square(errors)) <= 2 * np.mean(bounds)
    # Dense blocks reach the Johnson-Lindenstrauss variance (<= 2/k |g|^2 |h|^2); Kronecker
    # blocks pay at most (2/k1 + 2/k2 + 3/k) |g_t|^2 |h_t|^2 more.
    if structure == "dense":
        assert max(bounds) <= 2 / 256 * _dot(g, g) * _dot(h, h)


def test_projection_is_seeded_and_matches_explicit_matrix():
    g = _random_grads(5)
    a = G.Projector(64, seed=7)
    b = G.Projector(64, seed=7)
    c = G.Projector(64, seed=8)
    for name, shape in SHAPES.items():
        assert torch.equal(a.matrix(name, shape), b.matrix(name, shape))
        assert not torch.equal(a.matrix(name, shape), c.matrix(name, shape))
    batch = {n: torch.stack([t, 2 * t]) for n, t in g.items()}
    explicit = sum(batch[n].reshape(2, -1) @ a.matrix(n, SHAPES[n]) for n in SHAPES)
    assert torch.allclose(a.project(batch), explicit, atol=1e-4)
    # Kronecker blocks never hold more than (m + n) * sqrt(k) numbers.
    assert a.plan("w", SHAPES["w"]).kind == "dense" and G.Projector(1024).plan("w", (512, 512)).kind == "kron"


def test_projection_dense_blocks_do_not_depend_on_the_cache():
    shape = (9000,)
    big = G.Projector(32, seed=1)
    small = G.Projector(32, seed=1, cache_bytes=0)
    assert torch.equal(big.matrix("v", shape), small.matrix("v", shape))


def test_projection_bad_settings_raise():
    with pytest.raises(ValueError):
        G.Projector(0)
    with pytest.raises(ValueError):
        G.Projector(16, kind="sparse")
    with pytest.raises(ValueError, match="factor"):
        G.Projector(1021, structure="kronecker").plan("w", (64, 64))


def test_projection_matrices_are_seeded_by_named_sub_seeds():
    """The matrix of a tensor is drawn from ``derive_seed(seed, kind, name, shape, part)``."""
    proj = G.Projector(16, seed=3, structure="dense")
    gen = torch.Generator().manual_seed(derive_seed(3, "rademacher", "v", (5,), "dense", 0))
    want = torch.randint(0, 2, (5, 16), generator=gen, dtype=torch.int8).float().mul_(2).sub_(1) / 4
    assert torch.equal(proj.matrix("v", (5,)), want)


# ---- which projector a dimension makes --------------------------------------------------------
def test_a_plain_dimension_makes_the_sketch_by_default():
    assert G.DEFAULT_KIND == "sketch"
    p = G.as_projector(64, seed=3)
    assert isinstance(p, G.SketchProjector) and (p.dim, p.seed) == (64, 3)
    for kind in ("rademacher", "gaussian"):
        q = G.as_projector(64, seed=3, kind=kind)
        assert isinstance(q, G.Projector) and q.kind == kind
    ready = G.Projector(16)
    assert G.as_projector(ready) is ready and G.as_projector(None) is None
    sketch = G.SketchProjector(16)
    assert G.as_projector(sketch, kind="rademacher") is sketch  # a ready projector wins over kind
    with pytest.raises(ValueError, match="projection kind"):
        G.as_projector(64, kind="sjlt")
    with pytest.raises(TypeError, match="SketchProjector"):
        G.as_projector(64.0)


def test_every_projection_setting_changes_its_description():
    """``describe()`` goes into feature sidecars and store keys: the default changing from the
    Kronecker projection to the sketch, or any setting changing, must change it."""
    described = [G.as_projector(64).describe(), G.as_projector(64, seed=1).describe(),
                 G.as_projector(128).describe(), G.as_projector(64, kind="rademacher").describe(),
                 G.as_projector(64, kind="gaussian").describe(),
                 G.Projector(64, structure="dense").describe()]
    assert len({repr(sorted(d.items())) for d in described}) == len(described)
    assert G.as_projector(64).describe()["kind"] == "sketch"
