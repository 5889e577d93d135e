"""TracIn (Pruthi et al. 2020) as FTRACE runs it, and FTRACE's TracIn+EMBED.

``TracIn(q, c) = sum_i w_i <g_i(q), g_i(c)>`` over checkpoints ``i``, with ``g_i`` the loss
gradient of an example at checkpoint ``i`` restricted to a parameter group, ``w_i`` optional
learning-rate weights (default 1), optionally averaged (``reduce="mean"``, FTRACE) instead of
summed. ``similarity="cosine"`` unit-normalises each gradient first (FTRACE's "unit-normalised"
variant). ``correction=True`` divides each gradient by ``sqrt(exp_avg_sq) + eps`` with the AdamW
second moments saved in each checkpoint (both query and candidate gradients). Without a
projection the dot products are exact and accumulate tensor by tensor
(``tda.gradients.gradient_dots``); with ``projection=k`` they are those of k-dim random
projections (see ``tda.gradients.Projector`` for the error bound).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..gradients import (DEFAULT_EPS, GroupSpec, as_checkpoint_list, check_examples, check_same_architecture,
                         gradient_dots, load_checkpoint_model, second_moments)
from ..task import CausalLMTask, Examples
from .embed import embed


def resolve_corrections(checkpoints: list, correction) -> list:
    """Per-checkpoint second moments, as zero-argument loaders (so that only one checkpoint's
    moments are in memory at a time): ``False`` -> none, ``True`` -> read from each checkpoint
    path (checked up front: a bare model or a checkpoint without ``optimizer.pt`` raises at once),
    or an explicit list with one mapping (or None) per checkpoint."""
    if correction is False or correction is None:
        return [lambda: None] * len(checkpoints)
    if correction is True:
        from ..train import OPTIMIZER, CheckpointError

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


def checkpoint_weights(checkpoints: list, lr_weights) -> np.ndarray:
    """Learning-rate weights per checkpoint (all 1 by default); must be finite, one per checkpoint."""
    if lr_weights is None:
        return np.ones(len(checkpoints))
    w = np.asarray(list(lr_weights), dtype=np.float64)
    if w.shape != (len(checkpoints),):
        raise ValueError(f"{w.size} learning-rate weights for {len(checkpoints)} checkpoints")
    if not np.isfinite(w).all():
        raise ValueError(f"learning-rate weights must be finite, got {w.tolist()}")
    return w


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
    if similarity not in ("dot", "cosine"):
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    ckpts = as_checkpoint_list(checkpoints)
    check_same_architecture(ckpts)
    weights = checkpoint_weights(ckpts, lr_weights)
    moments = resolve_corrections(ckpts, correction)
    total = np.zeros((len(queries), len(candidates)))
    for ckpt, w, moments_of in zip(ckpts, weights, moments):
        model = load_checkpoint_model(ckpt)
        dots = gradient_dots(model, task, queries, candidates, group, projection=projection, seed=seed,
                             correction=moments_of(), eps=eps, batch_size=batch_size, method=method)
        total += w * (dots.cosine() if similarity == "cosine" else dots.dots)
    return total / len(ckpts) if reduce == "mean" else total


def tracin_embed(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *, layers=0,
                 embed_model=None, pooling: str = "auto", combine: str = "mean", **tracin_kwargs) -> np.ndarray:
    """FTRACE's TracIn+EMBED: the mean of TracIn's cosine and EMBED's cosine.

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
    return (t + e) / 2
