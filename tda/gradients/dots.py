"""Gradient dot products without flat matrices: the engine of TracIn and DDA.

``unit_gradient_dots`` holds the queries' per-example gradients in memory (per parameter tensor,
never concatenated), streams the candidates' chunk by chunk, and accumulates
``G_q[t] @ G_c[t]^T`` tensor by tensor, separately for each *unit* (a set of parameter tensors)
and each optimizer correction, from one gradient pass. Full flattened gradient matrices are never
allocated: allocating fresh memory is slow here, and accumulating tensor by tensor was about 4x
faster than building the matrices (see the design notes). ``gradient_dots`` is the common case:
one unit (a parameter group), one correction, or random projections of both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from ..task import CausalLMTask, Examples
from .features import feature_dim, gradient_features
from .groups import GroupSpec, select_parameters
from .per_example import DEFAULT_EPS, _denominators, _raise_nonfinite, check_examples, iter_gradients
from .projection import DEFAULT_KIND, AnyProjector, as_projector


@dataclass
class GradientDots:
    """``dots[i, j] = <g(query i), g(candidate j)>`` and the squared norms of both sides."""

    dots: np.ndarray
    query_sq_norms: np.ndarray
    candidate_sq_norms: np.ndarray

    def cosine(self) -> np.ndarray:
        """Dot products of unit-normalised gradients (a zero gradient gives 0)."""
        q = np.sqrt(self.query_sq_norms)[:, None]
        c = np.sqrt(self.candidate_sq_norms)[None, :]
        denom = q * c
        return np.divide(self.dots, denom, out=np.zeros_like(self.dots), where=denom > 0)


@dataclass
class UnitDots:
    """Per correction ``v`` and unit ``u``: ``dots[v, u, i, j] = <g_vu(query i), g_vu(candidate j)>``
    (``g_vu`` the gradient restricted to unit ``u``, divided by correction ``v``'s denominators),
    and the squared norms ``query_sq[v, u, i]``, ``candidate_sq[v, u, j]``."""

    dots: np.ndarray
    query_sq: np.ndarray
    candidate_sq: np.ndarray
    units: list[str]

    def total(self, variant: int = 0) -> GradientDots:
        """Dot products and norms over the union of all units (their sums), for one correction."""
        return GradientDots(self.dots[variant].sum(0), self.query_sq[variant].sum(0),
                            self.candidate_sq[variant].sum(0))


def _resolve_units(model, units) -> dict[str, list[str]]:
    if isinstance(units, Mapping):
        out = {str(u): select_parameters(model, g) for u, g in units.items()}
        if not out:
            raise ValueError("no unit given: pass at least one parameter group")
    else:
        out = {"all": select_parameters(model, units)}
    seen: set[str] = set()
    for u, names in out.items():
        overlap = seen.intersection(names)
        if overlap:
            raise ValueError(f"parameter units overlap: {sorted(overlap)[:3]} also in unit {u!r}")
        seen.update(names)
    return out


def unit_gradient_dots(model: torch.nn.Module, task: CausalLMTask, queries: Examples, candidates: Examples,
                       units: Mapping[str, GroupSpec] | GroupSpec = "all", *,
                       corrections: Sequence[Mapping[str, torch.Tensor] | None] = (None,), eps: float = DEFAULT_EPS,
                       batch_size: int = 64, method: str = "auto", max_query_bytes: int = 1 << 30,
                       desc: str = "") -> UnitDots:
    """Exact query-candidate gradient dot products at one model, per unit and per correction.

    ``units`` maps unit names to parameter groups (disjoint; e.g. ``tda.gradients.parameter_units``)
    or is one group (a single unit ``"all"``). ``corrections``: one entry per variant, None for plain
    gradients or AdamW's ``exp_avg_sq`` per parameter name (each gradient divided elementwise by
    ``sqrt(exp_avg_sq) + eps``); every variant comes from the same gradient pass. If the queries'
    gradients (times the variants) exceed ``max_query_bytes`` the queries are processed in blocks
    (candidate gradients are then recomputed per block). A NaN or infinite gradient raises
    ``NonFiniteGradientError`` naming the example.
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    corrections = list(corrections)
    if not corrections:
        raise ValueError("no correction variant given: pass corrections=[None] for plain gradients")
    by_unit = _resolve_units(model, units)
    unit_names = list(by_unit)
    chosen = {n for names in by_unit.values() for n in names}
    names = [n for n in select_parameters(model, "all") if n in chosen]
    params = dict(model.named_parameters())
    denoms = []
    for correction in corrections:
        d = _denominators(names, correction, eps, {n: params[n].detach() for n in names})
        denoms.append(None if d is None else {n: v.reshape(-1) for n, v in d.items()})
    n_var, n_units, nq, nc = len(corrections), len(unit_names), len(queries), len(candidates)
    dots = np.zeros((n_var, n_units, nq, nc), dtype=np.float64)
    q_sq = np.zeros((n_var, n_units, nq), dtype=np.float64)
    c_sq = np.zeros((n_var, n_units, nc), dtype=np.float64)
    row_bytes = 4 * feature_dim(model, names) * n_var
    per_block = max(1, int(max_query_bytes // max(row_bytes, 1)))
    kw = dict(batch_size=batch_size, method=method)
    for start in range(0, nq, per_block):
        block = queries.subset(list(range(start, min(start + per_block, nq))))
        held = {n: torch.empty((len(block), params[n].numel())) for n in names}
        for idx, grads in iter_gradients(model, task, block, names, desc=f"{desc} query gradients".strip(), **kw):
            t_idx = torch.as_tensor(idx)
            for n in names:
                held[n][t_idx] = grads[n].reshape(len(idx), -1)
        query_grads = [held if d is None else {n: held[n] / d[n] for n in names} for d in denoms]
        rows = slice(start, start + len(block))
        for v in range(n_var):
            for ui, u in enumerate(unit_names):
                q_sq[v, ui, rows] = sum(query_grads[v][n].double().pow(2).sum(1) for n in by_unit[u]).numpy()
        sq = q_sq[:, :, rows].sum((0, 1))
        if not np.isfinite(sq).all():
            _raise_nonfinite(block, np.arange(len(block)), ~np.isfinite(sq), "a query gradient")
        for idx, grads in iter_gradients(model, task, candidates, names, desc=f"{desc} candidate gradients".strip(),
                                         **kw):
            bad = np.zeros(len(idx), dtype=bool)
            for v, d in enumerate(denoms):
                for ui, u in enumerate(unit_names):
                    acc, norms = None, None
                    for n in by_unit[u]:
                        g = grads[n].reshape(len(idx), -1)
                        if d is not None:
                            g = g / d[n]
                        part = query_grads[v][n] @ g.T
                        acc = part if acc is None else acc.add_(part)
                        if start == 0:
                            s2 = g.double().pow(2).sum(1)
                            norms = s2 if norms is None else norms.add_(s2)
                    block_dots = acc.double().numpy()
                    bad |= ~np.isfinite(block_dots).all(0)
                    dots[v, ui, rows][:, idx] = block_dots
                    if norms is not None:
                        c_sq[v, ui, idx] = norms.numpy()
                        bad |= ~np.isfinite(c_sq[v, ui, idx])
            if bad.any():
                _raise_nonfinite(candidates, idx, bad, "a candidate gradient")
        del held, query_grads
    return UnitDots(dots, q_sq, c_sq, unit_names)


def gradient_dots(model: torch.nn.Module, task: CausalLMTask, queries: Examples, candidates: Examples,
                  group: GroupSpec = "all", *, projection: "AnyProjector | int | None" = None, seed: int = 0,
                  kind: str = DEFAULT_KIND, correction: Mapping[str, torch.Tensor] | None = None,
                  eps: float = DEFAULT_EPS, batch_size: int = 64, method: str = "auto",
                  max_query_bytes: int = 1 << 30) -> GradientDots:
    """All query-candidate gradient dot products over one parameter group at one model.

    Exact (``unit_gradient_dots`` with one unit and one correction), or, with ``projection``, the
    dot products of both sides' projected features (``gradient_features``).
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    projector = as_projector(projection, seed=seed, kind=kind)
    if projector is None:
        return unit_gradient_dots(model, task, queries, candidates, group, corrections=[correction], eps=eps,
                                  batch_size=batch_size, method=method, max_query_bytes=max_query_bytes).total(0)
    names = select_parameters(model, group)
    kw = dict(batch_size=batch_size, method=method, correction=correction, eps=eps)
    fq = gradient_features(model, task, queries, names, projection=projector, desc="query gradients", **kw)
    fc = gradient_features(model, task, candidates, names, projection=projector, desc="candidate gradients", **kw)
    fq64, fc64 = fq.astype(np.float64), fc.astype(np.float64)
    return GradientDots(fq64 @ fc64.T, (fq64 ** 2).sum(1), (fc64 ** 2).sum(1))


__all__ = ["GradientDots", "UnitDots", "unit_gradient_dots", "gradient_dots"]
