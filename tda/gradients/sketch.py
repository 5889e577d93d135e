"""The count-sketch projection (``SketchProjector``): a dense projection's accuracy at about the
cost of a training step. The default projection (``tda.gradients.as_projector``).

Why. ``tda.gradients.Projector`` factorises each large weight's projection as ``A^T G B``
(Kronecker). Its inner products carry an extra relative variance of about ``2/k1 + 2/k2`` (1/8 at
``k = 1024``) on any tensor whose per-example gradients share their row or column directions, and
on a trained GPT-2 most of the gradient sits in a few such tensors (the tied embedding holds ~60%
of it): ranking fidelity against exact dot products falls from ~0.88 (dense) to ~0.81 (0.77-0.84,
changing with the seed). A dense projection fixes that at ``numel * k`` work per example (~20x).

What. A count sketch (each gradient coordinate is added, with a random sign, to one of ``k``
buckets) whose hash is *additive* over a weight's two axes, so that the hooks path
(``tda.gradients.hooks``) computes it from the per-token factors without forming per-example
gradients:

- a 1-D tensor (bias, layer-norm weight) in chunks of at most ``k`` entries: each chunk's entries go
  to distinct random buckets (a random injection into ``Z_k``) with random signs;
- a 2-D tensor ``G`` (``m x n``; more dimensions are reshaped to first x rest), cut into blocks:
  the shorter axis (the *shift* axis) in chunks of at most ``k // 2``, the other (the *hash* axis)
  in chunks of at most ``k``. In block ``(r, c)`` entry ``(i, j)`` (``i`` on the shift axis, local
  index ``i'`` in its chunk) goes to bucket ``(i' + pos_r(j)) mod k`` with sign
  ``sigma_c(i) * tau_r(j)``: ``pos_r`` a random injection of the hash chunk into ``Z_k``, ``sigma``
  and ``tau`` random signs, every block with its own draws.

Because the bucket is ``i' + pos(j)``, a rank-one term ``u v^T`` (one token's input times its
output gradient) is sketched as the circular convolution of ``sigma * u`` (placed at positions
``0..``) and ``tau * v`` (placed at ``pos``), so a per-example gradient ``sum_t u_t v_t^T`` costs
two real FFTs of length ``k`` per token and block (``project_factors``): ~5 k log2 k flops,
whatever ``m`` and ``n``, the order of the Kronecker factors' ``2 (m + n) sqrt(k)`` at these widths
and far below forming the gradient (``2 m n`` per token, then a scatter). Cost and fidelity are
measured by ``python -m tda.bench_projection`` (see its docstring for the numbers).

Accuracy (proof in ``SketchProjector.variance``): the inner product of two sketches is unbiased,
and its variance is exactly::

    sum over 2-D blocks b of V_b  +  (1/k) sum over blocks b != c of (|g_b|^2 |h_c|^2 + <g_b,h_b><g_c,h_c>)
    V_b = (1/(k-1)) sum_{i != i', j != j'} (G_ij^2 H_i'j'^2 + G_ij H_ij G_i'j' H_i'j')

which is at most ``(|g|^2 |h|^2 + <g,h>^2) / (k - 1)``: the variance of a dense Gaussian
projection, with ``k - 1`` for ``k``, whatever the gradients' structure (1-D chunks add no variance
of their own: a random injection with signs preserves inner products exactly). The Kronecker
projection's bound adds ``(2/k1 + 2/k2 + 3/k) |g_t|^2 |h_t|^2`` per factorised tensor.

Same ``seed``, tensor name and shape always give the same sketch (its draws are seeded by
``tda.seeds.derive_seed(seed, "sketch", name, shape, part)``), whatever the batch, chunk or cache
sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from ..seeds import derive_seed

# Rows (tokens) whose spectra are processed together in ``project_factors``: ~0.5 MB per buffer.
_ROWS_IN_CACHE = 128


@dataclass(frozen=True)
class SketchPlan:
    """How one tensor is sketched. ``kind`` "vector": ``m`` entries in chunks of ``chunk``;
    "matrix": ``m x n`` with axis ``shift_axis`` placed by position in chunks of ``shift_chunk``
    and the other hashed in chunks of ``hash_chunk``."""

    kind: str
    m: int
    n: int
    shift_axis: int = 0
    shift_chunk: int = 0
    hash_chunk: int = 0

    @property
    def shift_size(self) -> int:
        return self.m if self.shift_axis == 0 else self.n

    @property
    def hash_size(self) -> int:
        return self.n if self.shift_axis == 0 else self.m

    def blocks(self) -> list[tuple[slice, slice]]:
        """(shift-axis slice, hash-axis slice) of every block of a matrix plan."""
        a, b = self.shift_size, self.hash_size
        return [(slice(r, min(r + self.shift_chunk, a)), slice(c, min(c + self.hash_chunk, b)))
                for r in range(0, a, self.shift_chunk) for c in range(0, b, self.hash_chunk)]


@dataclass(frozen=True)
class _Tables:
    """Random draws of one tensor. Vector: ``pos``/``sign`` per entry. Matrix: ``shift_sign``
    ``[hash chunks, shift size]``; ``hash_pos`` / ``hash_sign`` ``[shift chunks, hash size]``."""

    pos: torch.Tensor | None = None
    sign: torch.Tensor | None = None
    shift_sign: torch.Tensor | None = None
    hash_pos: torch.Tensor | None = None
    hash_sign: torch.Tensor | None = None


class SketchProjector:
    """Seeded sketch of per-parameter-tensor gradients to ``dim`` dimensions (module docstring).

    ``phi(g) = sum_t S_t g_t`` over tensors ``t``; each ``S_t`` has one nonzero (+-1) per column.
    Same interface as ``tda.gradients.Projector`` (``dim``, ``seed``, ``describe``, ``plan``,
    ``matrix``, ``project_tensor``, ``project``, ``variance_bound``) plus ``variance`` (exact), and
    ``project_factors`` / ``project_rows``, which the hooks path uses. ``cache_bytes`` bounds the
    per-entry bucket tables kept for ``project_tensor`` (the per-axis draws are always kept; they
    are ``O(m + n)``).
    """

    kind = "sketch"

    def __init__(self, dim: int, seed: int = 0, cache_bytes: int = 256 << 20):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 2:
            raise ValueError(f"sketch dimension must be an integer >= 2, got {dim!r}")
        self.dim, self.seed, self.cache_bytes = int(dim), int(seed), int(cache_bytes)
        self._tables: dict[tuple, _Tables] = {}
        self._buckets: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._cached_bytes = 0

    def describe(self) -> dict:
        """The settings that fix the sketch (stored with features on disk)."""
        return {"dim": self.dim, "seed": self.seed, "kind": self.kind, "structure": "shift-hash", "version": 1}

    # -- the sketch -----------------------------------------------------------------------------
    def plan(self, name: str, shape: Sequence[int]) -> SketchPlan:
        """Vector plan for 0-/1-D tensors, matrix plan (``m x rest``) otherwise."""
        shape = tuple(int(s) for s in shape)
        numel = int(np.prod(shape)) if shape else 1
        if len(shape) < 2:
            return SketchPlan("vector", numel, 1)
        m, n = shape[0], numel // shape[0]
        return SketchPlan("matrix", m, n, shift_axis=0 if m <= n else 1, shift_chunk=self.dim // 2,
                          hash_chunk=self.dim)

    def _generator(self, name: str, shape, *parts) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, "sketch", name, tuple(shape), *parts))

    def _injection(self, gen: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size <= dim`` distinct uniform buckets and random signs."""
        pos = torch.randperm(self.dim, generator=gen)[:size]
        sign = torch.randint(0, 2, (size,), generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)
        return pos, sign

    def tables(self, name: str, shape: Sequence[int]) -> _Tables:
        """The random draws of one tensor, each block seeded by (seed, name, shape, block)."""
        key = (name, tuple(int(s) for s in shape))
        hit = self._tables.get(key)
        if hit is not None:
            return hit
        plan = self.plan(name, shape)
        if plan.kind == "vector":
            parts = [self._injection(self._generator(name, key[1], "vector", c), min(self.dim, plan.m - c))
                     for c in range(0, plan.m, self.dim)]
            tables = _Tables(pos=torch.cat([p for p, _ in parts]), sign=torch.cat([s for _, s in parts]))
        else:
            a, b = plan.shift_size, plan.hash_size
            shift_sign = torch.stack([
                torch.randint(0, 2, (a,), generator=self._generator(name, key[1], "shift", c), dtype=torch.int8)
                .float().mul_(2).sub_(1) for c in range(0, b, plan.hash_chunk)])
            pos, sign = [], []
            for r in range(0, a, plan.shift_chunk):
                row = [self._injection(self._generator(name, key[1], "hash", r, c), min(plan.hash_chunk, b - c))
                       for c in range(0, b, plan.hash_chunk)]
                pos.append(torch.cat([p for p, _ in row]))
                sign.append(torch.cat([s for _, s in row]))
            tables = _Tables(shift_sign=shift_sign, hash_pos=torch.stack(pos), hash_sign=torch.stack(sign))
        self._tables[key] = tables
        return tables

    def bucket_and_sign(self, name: str, shape: Sequence[int], i0: torch.Tensor,
                        i1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Bucket and sign of entries (``i0``, ``i1``) of a tensor's ``m x n`` view (broadcast);
        a vector plan takes ``i0`` alone."""
        plan, t = self.plan(name, shape), self.tables(name, shape)
        if plan.kind == "vector":
            return t.pos[i0], t.sign[i0]
        i_s, i_h = (i0, i1) if plan.shift_axis == 0 else (i1, i0)
        r, c = i_s // plan.shift_chunk, i_h // plan.hash_chunk
        bucket = (i_s - r * plan.shift_chunk + t.hash_pos[r, i_h]) % self.dim
        return bucket, t.shift_sign[c, i_s] * t.hash_sign[r, i_h]

    def buckets(self, name: str, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(bucket [numel] int64, sign [numel]) of every entry, in row-major order."""
        key = (name, tuple(int(s) for s in shape))
        hit = self._buckets.get(key)
        if hit is not None:
            return hit
        plan = self.plan(name, shape)
        if plan.kind == "vector":
            out = self.bucket_and_sign(name, shape, torch.arange(plan.m))
        else:
            bucket, sign = self.bucket_and_sign(name, shape, torch.arange(plan.m)[:, None],
                                                torch.arange(plan.n)[None, :])
            out = (bucket.reshape(-1), sign.reshape(-1))
        size = out[0].numel() * 12
        if self._cached_bytes + size <= self.cache_bytes:
            self._buckets[key] = out
            self._cached_bytes += size
        return out

    def matrix(self, name: str, shape: Sequence[int]) -> torch.Tensor:
        """The explicit ``[numel, dim]`` matrix of one tensor (for tests and small tensors only)."""
        bucket, sign = self.buckets(name, shape)
        out = torch.zeros(bucket.numel(), self.dim)
        out[torch.arange(bucket.numel()), bucket] = sign
        return out

    # -- projection -----------------------------------------------------------------------------
    def project_tensor(self, name: str, g: torch.Tensor) -> torch.Tensor:
        """``[c, *shape]`` gradients of one tensor -> ``[c, dim]``."""
        c = g.shape[0]
        bucket, sign = self.buckets(name, tuple(g.shape[1:]))
        return g.new_zeros(c, self.dim).index_add_(1, bucket, g.reshape(c, -1) * sign)

    def project(self, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: [c, *shape]}`` -> ``[c, dim]``: the sum of every tensor's sketch."""
        out = None
        for name, g in grads.items():
            y = self.project_tensor(name, g)
            out = y if out is None else out.add_(y)
        return out

    def project_factors(self, name: str, shape: Sequence[int], f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        """Sketch of per-example gradients ``G_b = sum_t f0[b, t] f1[b, t]^T`` of a 2-D tensor,
        from the factors ``f0 [B, L, m]`` and ``f1 [B, L, n]`` -> ``[B, dim]``, by FFT.

        Per block: the shift-axis factor, times its signs, zero-padded to ``dim``; the hash-axis
        factor, times its signs, placed at its buckets; the sketch of the block is the circular
        convolution of the two summed over tokens, i.e. ``irfft(sum_t rfft(a_t) * rfft(b_t))``.
        """
        plan, t = self.plan(name, shape), self.tables(name, shape)
        if plan.kind != "matrix" or (plan.m, plan.n) != (f0.shape[-1], f1.shape[-1]):
            raise ValueError(f"{name}: factors of widths {f0.shape[-1]} and {f1.shape[-1]} do not match a "
                             f"{tuple(shape)} matrix")
        fs, fh = (f0, f1) if plan.shift_axis == 0 else (f1, f0)
        batch, tokens, k = fs.shape[0], fs.shape[1], self.dim
        # A few examples at a time: the spectra of a whole chunk (B x L x k complex) spill out of
        # the cache, and this memory-bound step then ran ~4x slower (measured, 64 x 16 tokens).
        step = max(1, _ROWS_IN_CACHE // max(tokens, 1))
        complex_type = torch.complex128 if fs.dtype == torch.float64 else torch.complex64
        spectrum = torch.empty(batch, k // 2 + 1, dtype=complex_type)
        for b0 in range(0, batch, step):
            s_part, h_part = fs[b0: b0 + step], fh[b0: b0 + step]
            rows = s_part.shape[0] * tokens
            h_flat = h_part.reshape(rows, -1)
            acc = None
            for (rs, cs) in plan.blocks():
                r, c = rs.start // plan.shift_chunk, cs.start // plan.hash_chunk
                a = torch.fft.rfft(s_part[..., rs] * t.shift_sign[c, rs], n=k)
                placed = h_flat.new_zeros(rows, k).index_copy_(1, t.hash_pos[r, cs], h_flat[:, cs] * t.hash_sign[r, cs])
                part = a.mul_(torch.fft.rfft(placed).reshape(a.shape)).sum(1)
                acc = part if acc is None else acc.add_(part)
            spectrum[b0: b0 + step] = acc
        return torch.fft.irfft(spectrum, n=k)

    def project_rows(self, name: str, shape: Sequence[int], rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Sketch of per-example gradients that add ``values [B, L, n]`` to rows ``rows [B, L]``
        of a 2-D tensor (an embedding's gradient) -> ``[B, dim]``."""
        batch, n = values.shape[0], values.shape[-1]
        bucket, sign = self.bucket_and_sign(name, shape, rows.unsqueeze(-1), torch.arange(n))
        return values.new_zeros(batch, self.dim).scatter_add_(1, bucket.reshape(batch, -1),
                                                             (values * sign).reshape(batch, -1))

    # -- accuracy -------------------------------------------------------------------------------
    def _block_terms(self, g: Mapping[str, torch.Tensor], h: Mapping[str, torch.Tensor]):
        """Per block: (|g_b|^2, |h_b|^2, <g_b, h_b>, V_b), in float64."""
        out = []
        for name, gt in g.items():
            ht = h[name]
            plan = self.plan(name, tuple(gt.shape))
            gd, hd = gt.double().reshape(plan.m, plan.n), ht.double().reshape(plan.m, plan.n)
            if plan.kind == "vector":
                for c in range(0, plan.m, self.dim):
                    gb, hb = gd[c: c + self.dim], hd[c: c + self.dim]
                    out.append((float(gb.pow(2).sum()), float(hb.pow(2).sum()), float((gb * hb).sum()), 0.0))
                continue
            if plan.shift_axis == 1:
                gd, hd = gd.T, hd.T
            for rs, cs in plan.blocks():
                gb, hb = gd[rs, cs], hd[rs, cs]
                out.append((float(gb.pow(2).sum()), float(hb.pow(2).sum()), float((gb * hb).sum()),
                            (_off_both(gb.pow(2), hb.pow(2)) + _off_both(gb * hb, gb * hb)) / (self.dim - 1)))
        return out

    def variance(self, g: Mapping[str, torch.Tensor], h: Mapping[str, torch.Tensor]) -> float:
        """Exact ``Var <phi(g), phi(h)>`` over the sketch's randomness, for gradients given per tensor.

        Proof. Write the estimate as ``sum_{b,c} <S_b g_b, S_c h_c>`` over blocks. (1) Every block
        has independent random signs, one per row and column draw, so ``E[S_b^T S_c] = I`` if
        ``b == c`` and 0 otherwise: unbiased. (2) Each entry's bucket is uniform on ``Z_k`` (``pos``
        is), so ``E[(S_b u)(S_b v)^T] = <u, v>/k I``; for independent blocks this gives the cross
        terms ``(|g_b|^2 |h_c|^2 + <g_b,h_b><g_c,h_c>)/k`` and no covariance with anything else
        (each is linear in a block's signs that no other term holds). (3) Within a 2-D block
        ``X = sum_{p,q} s_p s_q G_p H_q [bucket p == bucket q]`` with ``s_(i,j) = sigma(i) tau(j)``.
        A fourth moment of the signs survives only when both the rows and the columns of the four
        entries pair up. Two entries in one row or one column never share a bucket (``pos`` is an
        injection; shift positions differ), and the crossed pairing ``(i,j),(i',j'),(i,j'),(i',j)``
        needs ``2 (i - i') = 0 mod k``, impossible for ``0 < |i - i'| < k/2`` (the shift chunk).
        What remains is ``sum_{p != q} (G_p^2 H_q^2 + G_p H_p G_q H_q) P[collide]`` with
        ``P = 1/(k-1)`` for ``i != i', j != j'`` (``pos(j') - pos(j)`` is uniform on the nonzero
        residues) and 0 otherwise: ``V_b``. A 1-D chunk is an injection: ``V = 0``.
        Bound: by inclusion-exclusion ``V_b <= (|G|^2|H|^2 + <G,H>^2)/(k-1)``; summing with the
        cross terms gives ``variance_bound``.
        """
        terms = self._block_terms(g, h)
        gg = np.array([t[0] for t in terms])
        hh = np.array([t[1] for t in terms])
        dd = np.array([t[2] for t in terms])
        cross = gg.sum() * hh.sum() - (gg * hh).sum() + dd.sum() ** 2 - (dd ** 2).sum()
        return float(sum(t[3] for t in terms) + cross / self.dim)

    def variance_bound(self, g: Mapping[str, torch.Tensor], h: Mapping[str, torch.Tensor]) -> float:
        """``(|g|^2 |h|^2 + <g,h>^2) / (dim - 1)`` >= ``variance(g, h)``: a dense Gaussian projection's."""
        g2 = sum(float(t.double().pow(2).sum()) for t in g.values())
        h2 = sum(float(t.double().pow(2).sum()) for t in h.values())
        dot = sum(float((g[n].double() * h[n].double()).sum()) for n in g)
        return (g2 * h2 + dot * dot) / (self.dim - 1)


def _off_both(a: torch.Tensor, b: torch.Tensor) -> float:
    """``sum_{i != i', j != j'} a_ij b_i'j'`` by inclusion-exclusion."""
    return float(a.sum() * b.sum() - (a.sum(1) * b.sum(1)).sum() - (a.sum(0) * b.sum(0)).sum() + (a * b).sum())


__all__ = ["SketchPlan", "SketchProjector"]
