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
"""

from __future__ import annotations


import numpy as np
import torch

from ..gradients import Checkpoint, check_examples, eval_mode, load_checkpoint_model
from ..progress import progress
from ..task import CausalLMTask, Examples


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
    if isinstance(model, (list, tuple)):
        if len(model) != 1:
            raise ValueError(f"EMBED uses one model (FTRACE: the final checkpoint); got a list of {len(model)}")
        model = model[0]
    model = load_checkpoint_model(model)
    q = pooled_states(model, task, queries, layers, pooling=pooling, batch_size=batch_size)
    c = pooled_states(model, task, candidates, layers, pooling=pooling, batch_size=batch_size)
    if combine == "concat":
        return cosine_matrix(np.concatenate(q, axis=1), np.concatenate(c, axis=1))
    return np.mean([cosine_matrix(a, b) for a, b in zip(q, c)], axis=0)
