"""EMBED: cosine similarity of mean-pooled hidden states (FTRACE's representation baseline).

Layer ``i`` is the output of block ``i`` (0 = the embedding output), taken from
``task.hidden_states`` of one model (FTRACE uses the final checkpoint). Pooling:

- causal models: ``"target"`` averages the states at target positions, ``"tokens"`` over every
  token of the example (``"auto"`` = ``"target"``);
- encoder-decoders: ``"tokens"`` is the encoder layer ``i`` over input tokens, ``"target"`` the
  decoder layer ``i`` over target positions, and ``"auto"`` (FTRACE) concatenates both.

Several layers combine by ``combine="mean"`` (the average of the per-layer cosines, so each
layer counts equally whatever its norm; default) or ``"concat"`` (one cosine of the concatenated
pooled vectors, so layers with larger states weigh more).

The mean is computed in two steps, always the same way: ``embed_parts`` computes each layer's
cosine per (query, candidate) pair and pooling (:class:`EmbedParts`, the decomposed cache an
experiment stores), and ``EmbedParts.scores`` averages the chosen layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..checkpoints import Checkpoint, load_checkpoint_model
from ..gradients import check_examples, eval_mode
from ..progress import progress
from ..task import CausalLMTask, Examples

POOLINGS = ("tokens", "target")


def _layer_list(layers) -> list[int]:
    out = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    if not out:
        raise ValueError("layers is empty: name at least one layer (0 = embedding output)")
    if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in out):
        raise TypeError(f"layers must be integers, got {out!r}")
    return [int(i) for i in out]


def _encoder_layers(model) -> int:
    cfg = model.config
    for key in ("num_layers", "encoder_layers", "num_hidden_layers"):
        if getattr(cfg, key, None) is not None:
            return int(getattr(cfg, key))
    raise ValueError(f"cannot tell how many encoder layers {type(model).__name__} has")


def _pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(states.dtype)[..., None]
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def pooled_states(model: Checkpoint, task: CausalLMTask, examples: Examples, layers=0, *,
                  pooling: str = "auto", batch_size: int = 64) -> list[np.ndarray]:
    """Mean-pooled states ``[len(examples), width]`` of each requested layer, in order."""
    check_examples(examples, "examples")
    layers = _layer_list(layers)
    if pooling not in ("auto", "target", "tokens"):
        raise ValueError(f"pooling must be 'auto', 'target' or 'tokens', got {pooling!r}")
    model = load_checkpoint_model(model)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    out: list[list[np.ndarray]] = [[] for _ in layers]
    starts = range(0, len(examples), batch_size)
    with eval_mode(model), torch.no_grad():
        for start in progress(starts, desc=f"hidden states ({len(examples)} examples)", total=len(starts)):
            batch = task.encode(examples.subset(range(start, min(start + batch_size, len(examples)))))
            states, target, tokens = task.hidden_states(model, batch)
            if seq2seq:
                n_enc = _encoder_layers(model) + 1
                enc, dec = states[:n_enc], states[n_enc:]
                depth = min(len(enc), len(dec))
            else:
                depth = len(states)
            for j, i in enumerate(layers):
                if not -depth <= i < depth:
                    raise ValueError(f"layer {i} does not exist: {type(model).__name__} has layers 0..{depth - 1} "
                                     "(0 = embedding output; negative counts from the end)")
                if not seq2seq:
                    mask = target if pooling in ("auto", "target") else tokens
                    vec = _pool(states[i], mask)
                else:
                    parts = []
                    if pooling in ("auto", "tokens"):
                        parts.append(_pool(enc[i], tokens))
                    if pooling in ("auto", "target"):
                        parts.append(_pool(dec[i], target))
                    vec = torch.cat(parts, dim=1)
                out[j].append(vec.double().numpy())
    return [np.concatenate(parts) for parts in out]


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (a zero row gives 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    a = np.divide(a, na[:, None], out=np.zeros_like(a), where=na[:, None] > 0)
    b = np.divide(b, nb[:, None], out=np.zeros_like(b), where=nb[:, None] > 0)
    return np.clip(a @ b.T, -1.0, 1.0)


def layer_count(model) -> int:
    """Hidden layers of a causal model including the embedding output (blocks + 1)."""
    return int(getattr(model.config, "n_layer", getattr(model.config, "num_layers", 0))) + 1


@dataclass
class EmbedParts:
    """Per pooling, the cosine of each (query, candidate) pair at each computed layer:
    ``cosines[pooling][k, pair]`` for layer ``layers[k]`` (0 = the embedding output)."""

    cosines: dict[str, np.ndarray]
    layers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = list(range(next(iter(self.cosines.values())).shape[0]))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def scores(self, layers: Sequence[int] | int = 0, pooling: str = "tokens") -> np.ndarray:
        """Per-pair EMBED: the mean of the chosen layers' cosines."""
        if pooling not in self.cosines:
            raise ValueError(f"pooling must be one of {sorted(self.cosines)}, got {pooling!r}")
        layers = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
        bad = [i for i in layers if i not in self.layers]
        if bad or not layers:
            raise ValueError(f"layers {bad or layers} do not exist: this model has layers 0..{self.n_layers - 1}")
        return self.cosines[pooling][[self.layers.index(i) for i in layers]].mean(0)


def embed_parts(model: Checkpoint, task: CausalLMTask, queries: Examples, candidates: Examples, *,
                layers: Sequence[int] | int | None = None, poolings: Sequence[str] = POOLINGS,
                pairs: tuple[np.ndarray, np.ndarray] | None = None, batch_size: int = 64) -> EmbedParts:
    """Each layer's cosine of pooled states per (query, candidate) pair, for each pooling.

    ``layers``: the layers to compute (default every layer of a causal model, 0 = embedding output);
    ``pairs``: the (query, candidate) pairs to keep (default every pair, query by query).
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    model = load_checkpoint_model(model)
    layers = list(range(layer_count(model))) if layers is None else _layer_list(layers)
    if pairs is None:
        pairs = (np.repeat(np.arange(len(queries)), len(candidates)), np.tile(np.arange(len(candidates)), len(queries)))
    qj, cc = pairs
    out = {}
    for pooling in poolings:
        qs = pooled_states(model, task, queries, layers, pooling=pooling, batch_size=batch_size)
        cs = pooled_states(model, task, candidates, layers, pooling=pooling, batch_size=batch_size)
        out[pooling] = np.stack([cosine_matrix(a, b)[qj, cc] for a, b in zip(qs, cs)])
    return EmbedParts(out, layers)


def embed(model: Checkpoint, task: CausalLMTask, queries: Examples, candidates: Examples, layers=0, *,
          pooling: str = "auto", combine: str = "mean", batch_size: int = 64) -> np.ndarray:
    """EMBED scores ``[n_queries, n_candidates]``: cosine of pooled hidden states at ``layers``.

    ``model`` is a model or a checkpoint path (or a list holding exactly one); ``layers`` an int
    or a list (their union, see ``combine`` in the module docstring).
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    if combine not in ("mean", "concat"):
        raise ValueError(f"combine must be 'mean' or 'concat', got {combine!r}")
    if pooling not in ("auto", "target", "tokens"):
        raise ValueError(f"pooling must be 'auto', 'target' or 'tokens', got {pooling!r}")
    if isinstance(model, (list, tuple)):
        if len(model) != 1:
            raise ValueError(f"EMBED uses one model (FTRACE: the final checkpoint); got a list of {len(model)}")
        model = model[0]
    model = load_checkpoint_model(model)
    layers = _layer_list(layers)
    if combine == "concat":
        q = pooled_states(model, task, queries, layers, pooling=pooling, batch_size=batch_size)
        c = pooled_states(model, task, candidates, layers, pooling=pooling, batch_size=batch_size)
        return cosine_matrix(np.concatenate(q, axis=1), np.concatenate(c, axis=1))
    parts = embed_parts(model, task, queries, candidates, layers=layers, poolings=[pooling], batch_size=batch_size)
    return parts.scores(layers, pooling).reshape(len(queries), len(candidates))


__all__ = ["POOLINGS", "pooled_states", "cosine_matrix", "layer_count", "EmbedParts", "embed_parts", "embed"]
