"""Random projections of per-parameter-tensor gradients, and which one a plain dimension means.

``as_projector(k)`` (what ``projection=k`` means everywhere: features, dot products, TracIn, TRAK,
DDA) makes the count sketch ``tda.gradients.sketch.SketchProjector`` (``kind="sketch"``, the
default): on the benchmark's trained model it ranks like exact dot products as well as a dense
Gaussian projection does, at about the cost of this module's Kronecker projection (measured by
``python -m tda.bench_projection``, see its docstring). ``kind="rademacher"`` or ``"gaussian"``
makes this module's ``Projector``, the default until issue 18 (features stored with it keep its
``describe()``, so they are never mixed with the sketch's).

``Projector``: features are ``phi(g) = sum_t P_t g_t`` over parameter tensors ``t``, each ``P_t``
an independent seeded matrix with entries of variance ``1/k`` (Rademacher ``+-1/sqrt(k)`` or
Gaussian). No ``(all parameters x k)`` matrix is ever built:

- a 1-D tensor, or any tensor whose dense block has at most ``dense_max_entries`` entries, gets a
  dense block generated in fixed row blocks of 4,096 rows, each seeded by (seed, name, block), so
  the matrix does not depend on memory settings;
- larger tensors, reshaped to ``m x n`` (first dimension x the rest), get a factorised
  (Kronecker) projection ``A^T G B`` with ``A`` (m x k1) and ``B`` (n x k2), ``k1 * k2 = k``, so the
  block is ``kron(A, B)`` and costs ``m*n*min(k1, k2)`` per example instead of ``m*n*k``.

Inner-product error bound (proved in the docstring of ``Projector.variance_bound``): the estimate
``<phi(g), phi(h)>`` is unbiased and its variance is at most::

    (|g|^2 |h|^2 + <g,h>^2) / k  +  sum over Kronecker tensors t of (2/k1 + 2/k2 + 3/k) |g_t|^2 |h_t|^2

for Gaussian and (no larger) for Rademacher entries. The first term is the dense
Johnson-Lindenstrauss variance; the second is the price of factorising. It is near its worst for
low-rank gradients (a per-example gradient of a linear layer has rank <= the number of tokens),
where a single tensor's inner product is estimated with relative error ~sqrt(4/sqrt(k)) (0.35 at
k=1024); it shrinks when the gradient's mass is spread over many tensors. Measured on the "small"
model at initialisation (48 fact sentences, all parameters, k=1024): relative error of the
pairwise dot products 0.04 with this projection against 0.03 with a dense one (correlation with
the exact dots 0.97 vs 0.98); after training the gap is larger (rank fidelity 0.81 against 0.88,
``tda.bench_projection``), which is why the sketch is the default. ``structure="dense"`` removes the second term at ``numel * k``
work per example (use it for small groups such as the embedding matrix).

A dense Gaussian projection of all 847k parameters of the small model to 1,024 dimensions would be
a 3.2 GiB matrix, slower than the gradients themselves (see the design notes): hence per tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import torch

from ..seeds import derive_seed
from .sketch import SketchProjector

_ROWS_PER_BLOCK = 4096


def _factor(k: int) -> tuple[int, int]:
    k1 = int(math.isqrt(k))
    while k % k1:
        k1 -= 1
    return k1, k // k1


@dataclass(frozen=True)
class _Plan:
    kind: str  # "dense" or "kron"
    m: int
    n: int


class Projector:
    """Seeded random projection of per-parameter-tensor gradients to ``dim`` dimensions.

    ``phi(g) = sum_t P_t g_t`` with an independent matrix per tensor name (seeded by ``seed``,
    the name and the shape), entries of variance ``1/dim``: ``kind="rademacher"`` (+-1/sqrt(dim))
    or ``"gaussian"``. ``structure="auto"`` projects small or 1-D tensors densely and larger ones
    with a Kronecker factorisation (see the module docstring); ``"dense"`` projects every tensor
    densely (exact Johnson-Lindenstrauss, ``numel * dim`` work per example, blocks regenerated on
    the fly when they exceed ``cache_bytes``); ``"kronecker"`` factorises every tensor with 2+
    dimensions. The same seed, name and shape always give the same matrix.
    """

    def __init__(self, dim: int, seed: int = 0, kind: str = "rademacher", structure: str = "auto",
                 dense_max_entries: int = 1 << 22, cache_bytes: int = 512 << 20):
        if int(dim) < 1:
            raise ValueError(f"projection dimension must be >= 1, got {dim}")
        if kind not in ("rademacher", "gaussian"):
            raise ValueError(f"projection kind must be 'rademacher' or 'gaussian', got {kind!r}")
        if structure not in ("auto", "dense", "kronecker"):
            raise ValueError(f"projection structure must be 'auto', 'dense' or 'kronecker', got {structure!r}")
        self.dim, self.seed, self.kind, self.structure = int(dim), int(seed), kind, structure
        self.dense_max_entries, self.cache_bytes = int(dense_max_entries), int(cache_bytes)
        self.k1, self.k2 = _factor(self.dim)
        self._cache: dict[tuple, torch.Tensor] = {}
        self._cached_bytes = 0

    def describe(self) -> dict:
        """The settings that fix the matrices (stored with features on disk)."""
        return {"dim": self.dim, "seed": self.seed, "kind": self.kind, "structure": self.structure,
                "dense_max_entries": self.dense_max_entries, "factors": [self.k1, self.k2]}

    # -- matrices --------------------------------------------------------------------------
    def plan(self, name: str, shape: Sequence[int]) -> _Plan:
        """How one tensor is projected: densely or as ``A^T G B`` of its ``m x n`` reshape."""
        shape = tuple(int(s) for s in shape)
        numel = int(np.prod(shape)) if shape else 1
        m = shape[0] if len(shape) >= 2 else numel
        n = numel // m if len(shape) >= 2 else 1
        kron = len(shape) >= 2 and (self.structure == "kronecker" or
                                    (self.structure == "auto" and numel * self.dim > self.dense_max_entries))
        if kron and self.k1 < 4:
            raise ValueError(f"a Kronecker projection to {self.dim} dims factorises as {self.k1} x {self.k2}, "
                             "which loses too much accuracy; choose a dimension with two similar factors "
                             "(a power of two or a square, e.g. 1024) or structure='dense'")
        return _Plan("kron" if kron else "dense", m, n)

    def _random(self, shape, *seed_parts) -> torch.Tensor:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.kind, *seed_parts))
        if self.kind == "gaussian":
            return torch.randn(shape, generator=gen)
        return torch.randint(0, 2, shape, generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)

    def _remember(self, key, value: torch.Tensor) -> torch.Tensor:
        size = value.numel() * value.element_size()
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[key] = value
            self._cached_bytes += size
        return value

    def factors(self, name: str, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [m, k1], B [n, k2]) of a Kronecker-projected tensor; entries of variance 1/k1, 1/k2."""
        plan = self.plan(name, shape)
        key = ("kron", name, tuple(shape))
        if key not in self._cache:  # factors are small ((m + n) * sqrt(k)): always kept
            a = self._random((plan.m, self.k1), name, tuple(shape), "A").div_(math.sqrt(self.k1))
            b = self._random((plan.n, self.k2), name, tuple(shape), "B").div_(math.sqrt(self.k2))
            self._cache[key] = (a, b)
        return self._cache[key]

    def _dense_block(self, name: str, shape, block: int, rows: int) -> torch.Tensor:
        key = ("dense", name, tuple(shape), block)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        value = self._random((rows, self.dim), name, tuple(shape), "dense", block).div_(math.sqrt(self.dim))
        return self._remember(key, value)

    def matrix(self, name: str, shape: Sequence[int]) -> torch.Tensor:
        """The explicit ``[numel, dim]`` matrix of one tensor (for tests and small tensors only)."""
        plan = self.plan(name, shape)
        if plan.kind == "kron":
            a, b = self.factors(name, shape)
            return torch.kron(a, b)
        key = ("matrix", name, tuple(shape))
        if key in self._cache:
            return self._cache[key]
        numel = plan.m * plan.n
        if numel <= _ROWS_PER_BLOCK:
            return self._dense_block(name, shape, 0, numel)
        return self._remember(key, torch.cat([self._dense_block(name, shape, j, min(_ROWS_PER_BLOCK, numel - s))
                                              for j, s in enumerate(range(0, numel, _ROWS_PER_BLOCK))]))

    # -- projection ------------------------------------------------------------------------
    def project_tensor(self, name: str, g: torch.Tensor) -> torch.Tensor:
        """``[c, *shape]`` gradients of one tensor -> ``[c, dim]``."""
        c, shape = g.shape[0], tuple(g.shape[1:])
        plan = self.plan(name, shape)
        if plan.kind == "kron":
            a, b = self.factors(name, shape)
            G = g.reshape(c, plan.m, plan.n)
            # Multiply the cheaper side first: k1*m*n + k1*n*k2 versus m*n*k2 + k1*m*k2 flops.
            if self.k1 * plan.m * plan.n + self.k1 * plan.n * self.k2 <= plan.m * plan.n * self.k2 + self.k1 * plan.m * self.k2:
                y = torch.matmul(torch.matmul(a.T, G), b)
            else:
                y = torch.matmul(a.T, torch.matmul(G, b))
            return y.reshape(c, self.dim)
        flat = g.reshape(c, -1)
        numel = flat.shape[1]
        out = None
        for j, s in enumerate(range(0, numel, _ROWS_PER_BLOCK)):
            rows = min(_ROWS_PER_BLOCK, numel - s)
            part = flat[:, s: s + rows] @ self._dense_block(name, shape, j, rows)
            out = part if out is None else out.add_(part)
        return out

    def project(self, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: [c, *shape]}`` -> ``[c, dim]``: the sum of every tensor's projection."""
        out = None
        for name, g in grads.items():
            y = self.project_tensor(name, g)
            out = y if out is None else out.add_(y)
        return out

    def variance_bound(self, g: Mapping[str, torch.Tensor], h: Mapping[str, torch.Tensor]) -> float:
        """Upper bound on ``Var <phi(g), phi(h)>`` for two gradients given tensor by tensor.

        Unbiasedness: ``E[P_t^T P_s] = I`` if ``t == s`` and 0 otherwise. Cross terms ``t != s``
        (independent, isotropic with covariance ``|g_t|^2/k I``) contribute
        ``(1/k) sum_{t!=s} (|g_t|^2|h_s|^2 + <g_t,h_t><g_s,h_s>)``. A dense Gaussian block adds
        ``(|g_t|^2|h_t|^2 + <g_t,h_t>^2)/k``, completing the dense JL variance
        ``(|g|^2|h|^2 + <g,h>^2)/k``. A Kronecker block ``X = tr(A^T G B B^T H^T A)``: conditioning
        on ``B`` and using ``Var(z^T M z) = |M|_F^2 + tr(M^2)`` for Gaussian ``z`` gives
        ``E_B Var_A <= (2/k1)(1 + 2/k2)|G|^2|H|^2`` and ``Var_B E_A <= (2/k2)|G|^2|H|^2``, so it adds at
        most ``(2/k1 + 2/k2 + 3/k)|g_t|^2|h_t|^2`` beyond the dense share. Rademacher entries have
        smaller fourth moments, so the same bound holds.
        """
        g2 = h2 = dot = 0.0
        extra = 0.0
        for name, gt in g.items():
            ht = h[name]
            a, b = float(gt.double().pow(2).sum()), float(ht.double().pow(2).sum())
            g2, h2, dot = g2 + a, h2 + b, dot + float((gt.double() * ht.double()).sum())
            if self.plan(name, tuple(gt.shape)).kind == "kron":
                extra += (2 / self.k1 + 2 / self.k2 + 3 / self.dim) * a * b
        return (g2 * h2 + dot * dot) / self.dim + extra


# What ``projection=k`` makes (see the module docstring); "rademacher" / "gaussian": ``Projector``.
DEFAULT_KIND = "sketch"
KINDS = ("sketch", "rademacher", "gaussian")
AnyProjector = Union[Projector, SketchProjector]


def as_projector(projection: "AnyProjector | int | None", seed: int = 0,
                 kind: str = DEFAULT_KIND) -> AnyProjector | None:
    """``None`` (no projection), a ready projector, or a dimension: ``SketchProjector(dim, seed)``
    for ``kind="sketch"`` (the default), ``Projector(dim, seed, kind)`` for "rademacher" or
    "gaussian" (Kronecker for large tensors, see ``Projector``)."""
    if projection is None or isinstance(projection, (Projector, SketchProjector)):
        return projection
    if isinstance(projection, bool) or not isinstance(projection, (int, np.integer)):
        raise TypeError(f"projection must be None, an int dimension, a Projector or a SketchProjector, "
                        f"got {projection!r}")
    if kind not in KINDS:
        raise ValueError(f"projection kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "sketch":
        return SketchProjector(int(projection), seed=seed)
    return Projector(int(projection), seed=seed, kind=kind)


__all__ = ["DEFAULT_KIND", "KINDS", "AnyProjector", "Projector", "as_projector"]
