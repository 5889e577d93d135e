"""TracIn (Pruthi et al. 2020) as FTRACE runs it, its decomposed cache, and FTRACE's TracIn+EMBED.

``TracIn(q, c) = sum_i w_i <g_i(q), g_i(c)>`` over checkpoints ``i``, with ``g_i`` the loss
gradient of an example at checkpoint ``i`` restricted to a parameter group, ``w_i`` optional
learning-rate weights (default 1), optionally averaged (``reduce="mean"``, FTRACE) instead of
summed. ``similarity="cosine"`` unit-normalises each gradient first (FTRACE's "unit-normalised"
variant). ``correction=True`` divides each gradient by ``sqrt(exp_avg_sq) + eps`` with the AdamW
second moments saved in each checkpoint (both query and candidate gradients).

Computed in two steps, always the same way: ``tracin_parts`` computes the *parts* — per checkpoint,
per optimizer correction and per parameter unit, the exact query-candidate gradient dot products
and both sides' squared norms (``tda.gradients.unit_gradient_dots``; with ``projection=k`` those of
k-dim random projections: the count sketch by default, see ``tda.gradients.SketchProjector`` and
``Projector`` for the error bounds) — and
``TracInParts.scores`` combines them. ``tracin`` is the two in one call. A stored ``TracInParts``
split into units (embedding, each block, head, other) gives every variant an experiment needs —
one unit or all, one checkpoint or several, cosine or dot, corrected or not — as exact sums of
stored numbers, without another gradient.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..checkpoints import (OPTIMIZER, CheckpointError, as_checkpoint_list, check_same_architecture,
                           load_checkpoint_model, second_moments)
from ..gradients import (DEFAULT_EPS, GroupSpec, check_examples, gradient_dots, parameter_units, select_parameters,
                         unit_gradient_dots, unit_order)
from ..task import CausalLMTask, Examples
from .embed import embed

SIMILARITIES = ("dot", "cosine")
REDUCTIONS = ("mean", "sum")


def resolve_corrections(checkpoints: list, correction) -> list:
    """Per-checkpoint second moments, as zero-argument loaders (so that only one checkpoint's
    moments are in memory at a time): ``False`` -> none, ``True`` -> read from each checkpoint
    path (checked up front: a bare model or a checkpoint without ``optimizer.pt`` raises at once),
    or an explicit list with one mapping (or None) per checkpoint."""
    if correction is False or correction is None:
        return [lambda: None] * len(checkpoints)
    if correction is True:
        for c in checkpoints:
            if isinstance(c, torch.nn.Module):
                second_moments(c)  # raises: a bare model has no optimizer state
            elif not (Path(c) / OPTIMIZER).is_file():
                raise CheckpointError(f"{c} has no optimizer state ({OPTIMIZER}) for the optimizer correction; "
                                      "the starting checkpoint epoch-000 never has one")
        return [lambda c=c: second_moments(c) for c in checkpoints]
    correction = list(correction)
    if len(correction) != len(checkpoints):
        raise ValueError(f"{len(correction)} sets of second moments for {len(checkpoints)} checkpoints")
    return [lambda v=v: v for v in correction]


def checkpoint_weights(n_checkpoints: int, lr_weights) -> np.ndarray | None:
    """Learning-rate weights per checkpoint (None: all 1); must be finite, one per checkpoint."""
    if lr_weights is None:
        return None
    w = np.asarray(list(lr_weights), dtype=np.float64)
    if w.shape != (n_checkpoints,):
        raise ValueError(f"{w.size} learning-rate weights for {n_checkpoints} checkpoints")
    if not np.isfinite(w).all():
        raise ValueError(f"learning-rate weights must be finite, got {w.tolist()}")
    return w


def combine_checkpoints(per_checkpoint: Sequence[np.ndarray], lr_weights=None, reduce: str = "mean") -> np.ndarray:
    """TracIn's sum over checkpoints, ``sum_i w_i s_i`` (``w_i = 1`` without weights), divided by the
    number of checkpoints for ``reduce="mean"``. The one place where checkpoints are combined."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if not len(per_checkpoint):
        raise ValueError("no checkpoint selected")
    w = checkpoint_weights(len(per_checkpoint), lr_weights)
    if w is None:
        total = np.zeros(np.shape(per_checkpoint[0]))
        for s in per_checkpoint:
            total += s
    else:
        total = np.tensordot(w, np.stack(per_checkpoint), axes=1)
    return total / len(per_checkpoint) if reduce == "mean" else total


def combine_tracin_embed(tracin_cosine, embed_cosine) -> np.ndarray:
    """TracIn+EMBED (FTRACE): the mean of TracIn's cosine and EMBED's cosine (each in [-1, 1])."""
    return (np.asarray(tracin_cosine) + np.asarray(embed_cosine)) / 2


# ---------------------------------------------------------------------------------------------
# the parts
# ---------------------------------------------------------------------------------------------
@dataclass
class TracInParts:
    """TracIn decomposed: per checkpoint ``c``, correction ``v`` (0 = plain gradients, 1 = divided by
    ``sqrt(exp_avg_sq) + eps``) and parameter unit ``u``, the dot products of the scored
    (query, candidate) pairs and both sides' squared norms.

    ``dots[c, v, u, pair]``, ``query_sq[c, v, u, query]``, ``candidate_sq[c, v, u, candidate]``; pair
    ``p`` is query ``qj[p]`` and candidate ``cc[p]``. A correction that was not computed (a
    checkpoint without optimizer state) is NaN.
    """

    dots: np.ndarray
    query_sq: np.ndarray
    candidate_sq: np.ndarray
    units: list[str]
    checkpoints: list[str]
    qj: np.ndarray
    cc: np.ndarray

    def unit_index(self, units) -> list[int]:
        if units == "all":
            return list(range(len(self.units)))
        units = [units] if isinstance(units, str) else list(units)
        bad = [u for u in units if u not in self.units]
        if bad or not units:
            raise ValueError(f"unknown parameter units {bad or units}; this model has {self.units} (or 'all')")
        return [self.units.index(u) for u in units]

    def checkpoint_scores(self, c: int, units="all", similarity: str = "cosine", corrected: bool = True) -> np.ndarray:
        """Per-pair TracIn at checkpoint ``c`` alone, over a union of units."""
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        ui, v = self.unit_index(units), 1 if corrected else 0
        d = self.dots[c, v, ui].sum(0)
        if np.isnan(d).any():
            raise ValueError(f"checkpoint {self.checkpoints[c]} has no optimizer state: no corrected TracIn")
        if similarity == "cosine":
            qn = np.sqrt(self.query_sq[c, v, ui].sum(0))[self.qj]
            cn = np.sqrt(self.candidate_sq[c, v, ui].sum(0))[self.cc]
            den = qn * cn
            d = np.divide(d, den, out=np.zeros_like(d), where=den > 0)
        return d

    def scores(self, units="all", checkpoints: Sequence[int] | None = None, similarity: str = "cosine",
               corrected: bool = True, reduce: str = "mean", lr_weights=None) -> np.ndarray:
        """Per-pair TracIn over a union of units and a subset of checkpoints (indices; None = all),
        combined by ``combine_checkpoints``."""
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        cks = list(range(len(self.checkpoints))) if checkpoints is None else list(checkpoints)
        if not cks:
            raise ValueError("no checkpoint selected")
        return combine_checkpoints([self.checkpoint_scores(c, units, similarity, corrected) for c in cks],
                                   lr_weights, reduce)

    def matrix(self, scores: np.ndarray, n_queries: int, n_candidates: int) -> np.ndarray:
        """Per-pair values of a dense parts object (every query x every candidate) as a matrix."""
        if len(scores) != n_queries * n_candidates:
            raise ValueError(f"{len(scores)} pair scores are not {n_queries} x {n_candidates}")
        out = np.empty((n_queries, n_candidates))
        out[self.qj, self.cc] = scores
        return out

    def query_norms(self, units="all", corrected: bool = False) -> np.ndarray:
        """Gradient norm of each query at each checkpoint: ``[ckpt, query]``."""
        ui = self.unit_index(units)
        return np.sqrt(self.query_sq[:, 1 if corrected else 0, ui].sum(1))

    def save(self, folder: Path) -> None:
        """``parts.npz`` (the arrays) and ``parts.json`` (units, checkpoint names); pairs are the caller's."""
        np.savez(Path(folder) / "parts.npz", dots=self.dots.astype(np.float64), query_sq=self.query_sq,
                 candidate_sq=self.candidate_sq)
        (Path(folder) / "parts.json").write_text(json.dumps({"units": self.units, "checkpoints": self.checkpoints}))

    @classmethod
    def load(cls, folder: Path, qj: np.ndarray, cc: np.ndarray) -> "TracInParts":
        meta = json.loads((Path(folder) / "parts.json").read_text())
        with np.load(Path(folder) / "parts.npz") as z:
            return cls(z["dots"], z["query_sq"], z["candidate_sq"], meta["units"], meta["checkpoints"], qj, cc)


def all_pairs(n_queries: int, n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, candidate) of every pair, query by query."""
    return (np.repeat(np.arange(n_queries), n_candidates).astype(np.int64),
            np.tile(np.arange(n_candidates), n_queries).astype(np.int64))


def _checkpoint_name(i: int, ckpt) -> str:
    return f"model-{i}" if isinstance(ckpt, torch.nn.Module) else str(Path(ckpt).name)


def tracin_parts(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *,
                 group: GroupSpec = "all", by_unit: bool = False, pairs: tuple[np.ndarray, np.ndarray] | None = None,
                 plain: bool = True, correction=False, eps: float = DEFAULT_EPS, projection=None, seed: int = 0,
                 batch_size: int = 64, method: str = "auto", desc: str = "") -> TracInParts:
    """The parts of TracIn at each checkpoint (paths or models), from one gradient pass per checkpoint.

    ``by_unit``: split ``group`` into units (``tda.gradients.parameter_units``: embedding, block.i,
    head, other) so that any union of them can be scored later; else one unit named after the
    group. ``pairs``: the (query, candidate) pairs to keep (default every pair). ``plain``: compute
    the plain-gradient half. ``correction``: False, True (AdamW's moments from each checkpoint path;
    a missing one raises), ``"available"`` (where a checkpoint has them; NaN elsewhere) or a list of
    mappings, one per checkpoint. ``projection``: exact dot products (None) or those of random
    projections (a dimension or a ``Projector``; one unit only).
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    ckpts = as_checkpoint_list(checkpoints)
    if projection is not None and by_unit:
        raise ValueError("projected dot products are not split into units: use by_unit=False")
    available = isinstance(correction, str)
    if available and correction != "available":
        raise ValueError(f"correction must be False, True, 'available' or a list of moments, got {correction!r}")
    moments = [None] * len(ckpts) if available else resolve_corrections(ckpts, correction)
    qj, cc = pairs if pairs is not None else all_pairs(len(queries), len(candidates))
    corrected_wanted = available or not (correction is False or correction is None)
    if not plain and not corrected_wanted:
        raise ValueError("nothing to compute: plain=False and no correction")
    units_ref, per_ckpt = None, []
    for ci, ckpt in enumerate(ckpts):
        model = load_checkpoint_model(ckpt)
        units = parameter_units(model, group) if by_unit else {"all" if group == "all" else str(group):
                                                                select_parameters(model, group)}
        order = unit_order(units) if by_unit else list(units)
        if units_ref is None:
            units_ref = order
        elif order != units_ref:
            raise ValueError(f"checkpoint {_checkpoint_name(ci, ckpt)} has parameter units {order}, the first had "
                             f"{units_ref}")
        if available:
            try:
                moment = second_moments(ckpt)
            except (CheckpointError, ValueError):
                moment = None
            if moment is not None and any(n not in moment for u in order for n in units[u]):
                moment = None  # moments of another model: no corrected half
        else:
            moment = moments[ci]() if corrected_wanted else None
        variants = ([0] if plain else []) + ([1] if corrected_wanted and moment is not None else [])
        corrections = [None if v == 0 else moment for v in variants]
        label = f"{desc} checkpoint {ci + 1}/{len(ckpts)}".strip()
        shape_q, shape_c = (2, len(order), len(queries)), (2, len(order), len(candidates))
        dots, q_sq, c_sq = np.full((2, len(order), len(qj)), np.nan), np.full(shape_q, np.nan), np.full(shape_c, np.nan)
        if not variants:
            pass  # only the corrected half was asked for, and this checkpoint has no optimizer state
        elif projection is None:
            got = unit_gradient_dots(model, task, queries, candidates, {u: units[u] for u in order},
                                     corrections=corrections, eps=eps, batch_size=batch_size, method=method, desc=label)
            for k, v in enumerate(variants):
                dots[v] = got.dots[k][:, qj, cc]
                q_sq[v], c_sq[v] = got.query_sq[k], got.candidate_sq[k]
        else:
            for k, v in enumerate(variants):
                got = gradient_dots(model, task, queries, candidates, group, projection=projection, seed=seed,
                                    correction=corrections[k], eps=eps, batch_size=batch_size, method=method)
                dots[v, 0], q_sq[v, 0], c_sq[v, 0] = got.dots[qj, cc], got.query_sq_norms, got.candidate_sq_norms
        per_ckpt.append((dots, q_sq, c_sq))
    return TracInParts(np.stack([p[0] for p in per_ckpt]), np.stack([p[1] for p in per_ckpt]),
                       np.stack([p[2] for p in per_ckpt]), list(units_ref),
                       [_checkpoint_name(i, c) for i, c in enumerate(ckpts)], np.asarray(qj), np.asarray(cc))


# ---------------------------------------------------------------------------------------------
# TracIn from scratch: the parts, then their combination
# ---------------------------------------------------------------------------------------------
def tracin(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *,
           group: GroupSpec = "all", similarity: str = "dot", reduce: str = "mean",
           lr_weights: Sequence[float] | None = None, correction=False, eps: float = DEFAULT_EPS,
           projection=None, seed: int = 0, batch_size: int = 64, method: str = "auto") -> np.ndarray:
    """TracIn scores ``[n_queries, n_candidates]`` over a list of checkpoints (paths or models).

    ``similarity`` is "dot" (TracIn) or "cosine" (unit-normalised gradients, in [-1, 1]);
    ``reduce`` "mean" or "sum" over checkpoints; ``lr_weights`` one weight per checkpoint;
    ``correction`` False, True (AdamW moments read from checkpoint paths) or a list of mappings;
    ``projection`` None (exact) or a dimension / ``Projector``. An empty checkpoint list, empty
    examples, or checkpoints of different architectures raise ValueError.
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    ckpts = as_checkpoint_list(checkpoints)
    check_same_architecture(ckpts)
    checkpoint_weights(len(ckpts), lr_weights)  # fail before any gradient
    corrected = not (correction is False or correction is None)
    parts = tracin_parts(ckpts, task, queries, candidates, group=group, plain=not corrected, correction=correction,
                         eps=eps, projection=projection, seed=seed, batch_size=batch_size, method=method)
    pair_scores = parts.scores(similarity=similarity, corrected=corrected, reduce=reduce, lr_weights=lr_weights)
    return parts.matrix(pair_scores, len(queries), len(candidates))


def tracin_embed(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *, layers=0,
                 embed_model=None, pooling: str = "auto", combine: str = "mean", **tracin_kwargs) -> np.ndarray:
    """FTRACE's TracIn+EMBED: ``combine_tracin_embed`` of TracIn's cosine and EMBED's cosine.

    EMBED uses ``embed_model`` (default: the last checkpoint); ``tracin_kwargs`` go to
    ``tracin`` (its ``similarity`` is fixed to "cosine" so both halves lie in [-1, 1]).
    """
    if tracin_kwargs.get("similarity", "cosine") != "cosine":
        raise ValueError("TracIn+EMBED averages two cosines; similarity must be 'cosine'")
    tracin_kwargs["similarity"] = "cosine"
    ckpts = as_checkpoint_list(checkpoints)
    t = tracin(ckpts, task, queries, candidates, **tracin_kwargs)
    e = embed(embed_model if embed_model is not None else ckpts[-1], task, queries, candidates, layers,
              pooling=pooling, combine=combine, batch_size=tracin_kwargs.get("batch_size", 64))
    return combine_tracin_embed(t, e)


__all__ = ["TracInParts", "tracin_parts", "tracin", "tracin_embed", "combine_checkpoints", "combine_tracin_embed",
           "resolve_corrections", "checkpoint_weights", "all_pairs"]
