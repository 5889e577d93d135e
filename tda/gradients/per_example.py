"""Per-example gradients: vmap, or a loop of single backwards, optionally optimizer-corrected.

Every gradient here is the gradient of ``task.per_example_loss`` on one example (the mean loss
over its target tokens) with respect to a parameter group (``tda.gradients.groups``).

Examples are sorted by length and cut into chunks (so short facts are not padded to the length
of news documents); each chunk is one call of ``torch.func.vmap(torch.func.grad(loss_of_one_example))``
over ``functional_call`` of the model, where each row is re-batched as a batch of one. Causal rows
are right-padded with labels -100 and no attention mask, so padding never reaches the loss. Where
vmap fails (Hugging Face T5 builds its attention mask with data-dependent control flow)
``method="auto"`` falls back, with a warning, to a hook-free loop of single-example
``torch.autograd.grad`` calls; ``method="loop"`` forces it. The model is put in eval mode for the
duration (no dropout), and its state is not changed.

Optimizer correction (FTRACE's code, also TrackStar): each gradient is divided elementwise by
``sqrt(exp_avg_sq) + eps`` with AdamW's second moments at the checkpoint (``eps=1e-7``).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator, Mapping

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ..progress import progress
from ..task import CausalLMTask, Examples
from .groups import GroupSpec, select_parameters

DEFAULT_EPS = 1e-7


class NonFiniteGradientError(FloatingPointError):
    """A per-example gradient (or a feature or dot product built from it) is NaN or infinite."""


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Evaluate with dropout off, restoring the model's training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)



class _Functional:
    """Calls ``model`` with some parameters replaced, the way a task calls a model."""

    def __init__(self, model, params):
        self.model, self.params = model, params
        self.config = getattr(model, "config", None)

    def __call__(self, *args, **kwargs):
        return functional_call(self.model, self.params, args, kwargs)


def check_examples(examples: Examples, what: str) -> None:
    """Raise TypeError for anything but ``Examples`` and ValueError for an empty set."""
    if not isinstance(examples, Examples):
        raise TypeError(f"{what} must be tda.task.Examples, got {type(examples).__name__}")
    if len(examples) == 0:
        raise ValueError(f"{what} is empty")


def _chunks(task: CausalLMTask, examples: Examples, batch_size: int) -> list[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(task.lengths(examples)), kind="stable")
    return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]


def _denominators(names, correction, eps, params) -> dict[str, torch.Tensor] | None:
    if correction is None:
        return None
    missing = [n for n in names if n not in correction]
    if missing:
        raise ValueError(f"optimizer second moments are missing for {missing[:5]} "
                         f"({len(missing)} parameters); they hold: {', '.join(list(correction)[:20])}")
    out = {}
    for n in names:
        v = correction[n].detach().to(dtype=params[n].dtype)
        if tuple(v.shape) != tuple(params[n].shape):
            raise ValueError(f"second moment of {n} has shape {tuple(v.shape)}, the parameter "
                             f"{tuple(params[n].shape)}: the moments belong to another architecture")
        out[n] = v.sqrt().add_(eps)
    return out


def iter_gradients(model: torch.nn.Module, task: CausalLMTask, examples: Examples, group: GroupSpec = "all", *,
                   batch_size: int = 64, method: str = "auto", correction: Mapping[str, torch.Tensor] | None = None,
                   eps: float = DEFAULT_EPS, desc: str | None = None
                   ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield ``(indices, {name: gradients [len(indices), *shape]})`` chunk by chunk.

    ``indices`` index ``examples`` (chunks follow a length-sorted order). ``method`` is "vmap",
    "loop" or "auto" (vmap, falling back to the loop with a warning if vmap fails on the model).
    ``correction``, AdamW ``exp_avg_sq`` per parameter name, divides each gradient elementwise by
    ``sqrt(exp_avg_sq) + eps``. Gradients are not checked for NaN here (the consumers check what
    they produce, which costs one pass less); use ``gradient_features`` for checked output.
    """
    check_examples(examples, "examples")
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"method must be 'auto', 'vmap' or 'loop', got {method!r}")
    names = select_parameters(model, group)
    all_params = dict(model.named_parameters())
    selected = {n: all_params[n].detach() for n in names}
    rest = {n: p.detach() for n, p in all_params.items() if n not in selected}
    denom = _denominators(names, correction, eps, selected)

    def loss_one(sel, row):
        batch = {k: v.unsqueeze(0) for k, v in row.items()}
        return task.per_example_loss(_Functional(model, {**rest, **sel}), batch)[0]

    per_example = vmap(grad(loss_one), in_dims=(None, 0))

    def by_loop(idx):
        out = {n: torch.empty((len(idx),) + tuple(p.shape), dtype=p.dtype) for n, p in selected.items()}
        leaves = {n: p.detach().requires_grad_(True) for n, p in selected.items()}  # shares storage
        for row, i in enumerate(idx):
            with torch.enable_grad():
                loss = task.per_example_loss(_Functional(model, {**rest, **leaves}),
                                             task.encode(examples.subset([int(i)])))[0]
                grads = (torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                         if loss.requires_grad else [None] * len(leaves))  # the group is unused
            for n, g in zip(leaves, grads):
                if g is None:
                    out[n][row].zero_()
                else:
                    out[n][row].copy_(g)
        return out

    state = {"loop": method == "loop"}

    def compute(idx):
        if state["loop"]:
            return by_loop(idx)
        batch = task.encode(examples.subset(idx.tolist()))
        try:
            return per_example(selected, batch)
        except RuntimeError as err:
            if method == "vmap":
                raise
            warnings.warn(f"vmap over {type(model).__name__} failed ({str(err).splitlines()[0][:200]}); "
                          "computing per-example gradients with a loop of single backwards "
                          "(slower, same values)", RuntimeWarning, stacklevel=3)
            state["loop"] = True
            return by_loop(idx)

    chunks = _chunks(task, examples, batch_size)
    for idx in progress(chunks, desc=desc or f"gradients ({len(examples)} examples)", total=len(chunks)):
        # The contexts are entered per chunk, not across ``yield``: grad mode is thread-global.
        with eval_mode(model), torch.no_grad():
            grads = compute(idx)
            if denom is not None:
                for n in names:
                    grads[n].div_(denom[n])
        yield idx, grads


def _raise_nonfinite(examples: Examples, idx: np.ndarray, bad_rows, what: str) -> None:
    rows = [int(r) for r in np.flatnonzero(np.asarray(bad_rows))]
    i = int(idx[rows[0]]) if rows else int(idx[0])
    raise NonFiniteGradientError(
        f"{what} is NaN or infinite for {max(len(rows), 1)} example(s), first example {i} "
        f"(prompt {examples.prompts[i][:60]!r}, target {examples.targets[i][:60]!r}); the loss "
        "overflows at these weights (diverged checkpoint?) or a correction divided by ~0")



__all__ = ["DEFAULT_EPS", "NonFiniteGradientError", "eval_mode", "check_examples", "iter_gradients"]
