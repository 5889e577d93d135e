"""The hooks path: projected per-example gradients from one batched backward (``hook_features``).

Forward hooks keep each Linear / Conv1D / Embedding / LayerNorm input, one batched backward gives
the gradient of each module's output ``delta``, and a weight's per-example gradient
``G_b = sum_t x_bt delta_bt^T`` is projected from its factors without being formed: the
Kronecker projection as ``(x_b A)^T (delta_b B)``, the count sketch (the default projection) as a
sum over tokens of circular convolutions, by FFT (``SketchProjector.project_factors``). The cost
is about one training step (vmap pays for writing every example's full gradient to memory, which
costs more than the training step itself here). ``tda.gradients.features`` uses it only after a
self-check against the loop on two examples, and not with optimizer correction (an elementwise
division does not factorise). Tests hold all three paths equal.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from transformers.pytorch_utils import Conv1D

from ..progress import progress
from ..task import CausalLMTask, Examples
from .groups import GroupSpec, select_parameters
from .per_example import _chunks, eval_mode
from .projection import AnyProjector
from .sketch import SketchProjector

_HOOKED_TYPES = (torch.nn.Linear, Conv1D, torch.nn.Embedding, torch.nn.LayerNorm)


class HooksUnsupported(RuntimeError):
    """The hooks path cannot handle this model, group or setting (the caller falls back to vmap)."""



def _usage_sites(model, names) -> dict[str, list[tuple[torch.nn.Module, str]]]:
    """Every (module, attribute) through which each selected parameter enters the forward pass."""
    params = dict(model.named_parameters())
    wanted = {id(params[n]): n for n in names}
    sites: dict[str, list] = {n: [] for n in names}
    for module in model.modules():
        for attr, p in module._parameters.items():
            if p is not None and id(p) in wanted:
                sites[wanted[id(p)]].append((module, attr))
    types = _HOOKED_TYPES
    for n, found in sites.items():
        for module, attr in found:
            if not isinstance(module, types) or attr not in ("weight", "bias"):
                raise HooksUnsupported(f"{n} is used by {type(module).__name__}.{attr}, which has no rule")
            if isinstance(module, torch.nn.Embedding) and (module.max_norm is not None or module.scale_grad_by_freq
                                                           or module.sparse):
                raise HooksUnsupported(f"{n}: embeddings with max_norm / scale_grad_by_freq / sparse")
            if isinstance(module, torch.nn.LayerNorm) and len(module.normalized_shape) != 1:
                raise HooksUnsupported(f"{n}: layer norm over several dimensions")
            if len(params[n].shape) not in (1, 2):
                raise HooksUnsupported(f"{n} has {len(params[n].shape)} dimensions")
    return sites


def hooks_supported(model: torch.nn.Module, group: GroupSpec = "all") -> bool:
    """Whether every parameter of the group enters through a module the hooks path handles."""
    try:
        _usage_sites(model, select_parameters(model, group))
    except HooksUnsupported:
        return False
    return True


def _per_example(t: torch.Tensor, batch: int) -> torch.Tensor:
    """[B or 1, *mid, d] -> [B, prod(mid), d] (a shared leading 1 is expanded over the batch)."""
    if t.shape[0] not in (batch, 1):
        raise HooksUnsupported(f"a hooked module saw leading dimension {t.shape[0]}, not the batch {batch}")
    t = t.reshape(t.shape[0], -1, t.shape[-1]) if t.dim() >= 2 else t.reshape(t.shape[0], 1, -1)
    return t.expand(batch, -1, -1)


class _Capture:
    """Forward hooks that keep each hooked call's input and output.

    After the forward pass, ``torch.autograd.grad(sum of per-example losses, outputs)`` gives each
    output's gradient ``delta`` (row b from example b's loss only), and each parameter's projected
    per-example gradient follows from (input, delta) alone. For a weight used as ``x W``
    (Conv1D), ``A^T G_b B = (x_b A)^T (delta_b B)``, so the per-example gradient ``G_b`` is never
    formed; Linear (``W^T``), Embedding (``A[ids]``), biases (``sum_t delta_t``) and layer-norm
    weights (``sum_t delta_t * xhat_t``) likewise, and the count sketch by FFT
    (``_sketch_contribution``). Tensors that a ``Projector`` projects densely get their full
    per-example gradient first. The backward pass computes no weight gradient, so the
    whole costs about one training step.
    """

    def __init__(self, model, names, batch: int):
        self.sites = _usage_sites(model, names)
        self.batch = batch
        self.records: list[tuple[torch.nn.Module, list[tuple[str, str]], torch.Tensor, torch.Tensor]] = []
        self.handles = []

    def __enter__(self):
        by_module: dict[int, tuple[torch.nn.Module, list[tuple[str, str]]]] = {}
        for n, found in self.sites.items():
            for module, attr in found:
                by_module.setdefault(id(module), (module, []))[1].append((n, attr))
        for module, uses in by_module.values():
            self.handles.append(module.register_forward_hook(self._hook(uses), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def _hook(self, uses):
        def hook(module, args, kwargs, output):
            x = (args[0] if args else next(iter(kwargs.values()))).detach()
            if output.shape[0] == 1 and self.batch > 1:
                # A batch-shared output (GPT-2's position embeddings) made per-example, so its
                # gradient keeps each example's share instead of their sum.
                output = output.expand((self.batch,) + tuple(output.shape[1:]))
            self.records.append((module, uses, x, output))
            return output
        return hook


def _sketch_contribution(projector: SketchProjector, module, attr: str, name: str, shape, x, delta,
                         batch: int) -> torch.Tensor:
    """``[B, dim]``: the sketch of one parameter's per-example gradient through one hooked call.

    Biases (``sum_t delta_t``) and layer-norm weights (``sum_t delta_t * xhat_t``) are sketched
    directly; embeddings by scattering each token's output gradient into its row's buckets; the
    weights of Linear (``delta_t x_t^T``) and Conv1D (``x_t delta_t^T``) by FFT from the factors
    (``project_factors``, a few examples at a time so that the spectra stay in cache).
    """
    d = _per_example(delta, batch)  # [B, L, out]
    if attr == "bias" or isinstance(module, torch.nn.LayerNorm):
        return projector.project_tensor(name, _vector_gradient(module, attr, x, d, batch))
    if isinstance(module, torch.nn.Embedding):
        ids, d = _embedding_ids(module, name, x, d, batch)
        return projector.project_rows(name, shape, ids, d)
    xs = _per_example(x, batch)  # [B, L, in]
    if isinstance(module, Conv1D):  # weight [in, out]: G = sum_t x_t delta_t^T
        return projector.project_factors(name, shape, xs, d)
    return projector.project_factors(name, shape, d, xs)  # Linear weight [out, in]: G = sum_t delta_t x_t^T


def _vector_gradient(module, attr: str, x, d: torch.Tensor, batch: int) -> torch.Tensor:
    """``[B, n]`` per-example gradient of a bias (``sum_t delta_t``) or a layer-norm weight."""
    if attr == "bias":
        return d.sum(1)
    xhat = torch.nn.functional.layer_norm(x, module.normalized_shape, None, None, module.eps)
    return (d * _per_example(xhat, batch)).sum(1)


def _embedding_ids(module, name: str, x, d: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids ``[B, L]``, output gradients ``[B, L, n]`` with padding rows zeroed) of an embedding call."""
    ids = x if x.dim() >= 2 else x.unsqueeze(0)
    if ids.shape[0] not in (batch, 1):
        raise HooksUnsupported(f"{name}: embedding ids with leading dimension {ids.shape[0]}, batch {batch}")
    ids = ids.reshape(ids.shape[0], -1).expand(batch, -1)
    if module.padding_idx is not None:  # nn.Embedding gives the padding row no gradient
        d = d * (ids != module.padding_idx).unsqueeze(-1)
    return ids, d


def _hook_contribution(projector: AnyProjector, module, attr: str, name: str, shape, x, delta, batch: int,
                       matrices: dict) -> torch.Tensor:
    """``[B, dim]``: the projection of one parameter's per-example gradient through one call: the
    projector's own ``hook_contribution`` method if it has one (the measurement-only candidates of
    ``tda.bench_projection``), else the rule of its class."""
    own = getattr(projector, "hook_contribution", None)
    if own is not None:
        return own(module, attr, name, shape, x, delta, batch)
    if isinstance(projector, SketchProjector):
        return _sketch_contribution(projector, module, attr, name, shape, x, delta, batch)
    d = _per_example(delta, batch)  # [B, L, out]
    if attr == "bias" or isinstance(module, torch.nn.LayerNorm):
        if name not in matrices:
            matrices[name] = projector.matrix(name, shape)
        return _vector_gradient(module, attr, x, d, batch) @ matrices[name]
    kron = projector.plan(name, shape).kind == "kron"
    if isinstance(module, torch.nn.Embedding):
        ids, d = _embedding_ids(module, name, x, d, batch)
        if kron:
            a, b = projector.factors(name, shape)
            return torch.bmm(a[ids].transpose(1, 2), d @ b).reshape(batch, -1)
        full = torch.zeros((batch,) + tuple(shape), dtype=d.dtype)
        full.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, d.shape[-1]), d)
        return projector.project_tensor(name, full)
    xs = _per_example(x, batch)  # [B, L, in]
    if isinstance(module, Conv1D):  # weight [in, out] = [m, n]
        left, right = xs, d
    else:  # Linear weight [out, in] = [m, n]
        left, right = d, xs
    if kron:
        a, b = projector.factors(name, shape)
        return torch.bmm((left @ a).transpose(1, 2), right @ b).reshape(batch, -1)
    return projector.project_tensor(name, torch.bmm(left.transpose(1, 2), right))


def hook_features(model: torch.nn.Module, task: CausalLMTask, examples: Examples, names: Sequence[str],
                  projector: AnyProjector, *, batch_size: int = 64, desc: str | None = None
                  ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(indices, projected features [len(indices), dim])`` from one batched backward per chunk.

    Equal (to float rounding) to projecting vmap's per-example gradients with ``projector`` (a
    ``SketchProjector`` or a ``Projector``), at about the cost of a training step (see
    ``_Capture``). Handles parameters of Linear, Conv1D, Embedding and LayerNorm modules, tied uses
    included, and raises ``HooksUnsupported`` for anything else. It relies on the examples of a batch not interacting (eval mode, no batch
    statistics), true of the tasks' causal and seq2seq models; ``gradient_features`` checks it
    against the loop on two examples before using this path.
    """
    names = list(names)
    params = dict(model.named_parameters())
    _usage_sites(model, names)  # fail before any work
    chunks = _chunks(task, examples, batch_size)
    matrices: dict[str, torch.Tensor] = {}
    for idx in progress(chunks, desc=desc or f"gradient features ({len(examples)} examples)", total=len(chunks)):
        batch = task.encode(examples.subset(idx.tolist()))
        with eval_mode(model), torch.enable_grad(), _Capture(model, names, len(idx)) as cap:
            loss = task.per_example_loss(model, batch).sum()
            outputs = [rec[3] for rec in cap.records]
            if not outputs:
                raise HooksUnsupported("no hooked module ran in the forward pass")
            deltas = torch.autograd.grad(loss, outputs, allow_unused=True)
        with torch.no_grad():
            rows = torch.zeros(len(idx), projector.dim)
            for (module, uses, x, out), delta in zip(cap.records, deltas):
                if delta is None:
                    continue
                for name, attr in uses:
                    rows += _hook_contribution(projector, module, attr, name, tuple(params[name].shape), x, delta,
                                               len(idx), matrices)
        yield idx, rows


__all__ = ["HooksUnsupported", "hooks_supported", "hook_features"]
