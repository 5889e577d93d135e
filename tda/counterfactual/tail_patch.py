"""Tail-patch (TrackStar's influence evaluation, Chang et al. 2024): one training step on a set of
training examples, taken from the final checkpoint, and the change in a query's support.

A method's top-k examples for a query *influence* the model when training on them moves the
model towards the query's target. Tail-patch measures exactly that, with no retraining: from the
final fine-tuned checkpoint ``θ``, one optimizer step on the k examples (one batch, the training
loss of the fine-tuning run, its gradient clipping) gives ``θ'``, and the score is
``support(θ') - support(θ)`` (``tda.counterfactual.measure.support``: the query target's
log-probability, EOS excluded, minus the counterpart's where there is one).

Which step (a choice, made before any result): **AdamW continuing from the checkpoint's state,
with its first moment reset**, at the fine-tuning run's peak learning rate ``lr``::

    v' = β2 v + (1 - β2) g²,   v̂ = v' / (1 - β2^(t+1)),   θ' = θ (1 - lr λ) - lr g / (√v̂ + ε)

with ``v`` and ``t`` AdamW's second moment and step count saved in the checkpoint, ``g`` the
clipped gradient of the batch, ``λ`` the weight decay. Why:

- the second moments are what scale every fine-tuning update of this model; a plain SGD step at
  an Adam learning rate would move it orders of magnitude less, and in other directions (towards
  the parameters with the largest raw gradients), so the ``"sgd"`` option (``θ' = θ - lr g``) is
  kept only as a variant to compare;
- the first moment saved in the checkpoint is the momentum of the last batches of fine-tuning.
  Carrying it on would add the same large move for every method and every query, unrelated to the
  examples tested; reset, a step on no examples changes nothing (with no weight decay), so the
  score is what the examples alone do.

TrackStar's own evaluation (as we read the paper; its text was not available here) steps on each
retrieved proponent separately and averages; the brief of this book steps once on the top-k
together, which is what a user who keeps or drops those k examples does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.func import functional_call

from ..checkpoints import load_checkpoint, load_optimizer_state, second_moments
from ..task import CausalLMTask, Examples
from .measure import support

OPTIMIZERS = ("adam", "sgd")


@dataclass
class AdamMoments:
    """AdamW's second moments (by parameter name), step count and settings at a checkpoint."""

    exp_avg_sq: dict[str, torch.Tensor]
    step: int
    beta2: float
    eps: float
    weight_decay: float


def adam_moments(checkpoint: str | Path) -> AdamMoments:
    """The AdamW state a checkpoint saved (``tda.checkpoints``): a checkpoint without one, such as
    ``epoch-000``, raises ``CheckpointError``."""
    state = load_optimizer_state(checkpoint)
    if not state.get("state"):
        raise ValueError(f"{checkpoint}: its optimizer state is empty (no step was taken)")
    steps = {int(float(s["step"])) for s in state["state"].values()}
    if len(steps) != 1:
        raise ValueError(f"{checkpoint}: parameters at different AdamW step counts {sorted(steps)}")
    group = state["param_groups"][0]
    return AdamMoments(exp_avg_sq=second_moments(checkpoint), step=steps.pop(), beta2=float(group["betas"][1]),
                       eps=float(group["eps"]), weight_decay=float(group["weight_decay"]))


class _Bound:
    """Calls ``model`` with its parameters replaced, the way a task calls a model."""

    def __init__(self, model, params: dict[str, torch.Tensor]):
        self.model, self.params = model, params

    def __call__(self, *args, **kwargs):
        return functional_call(self.model, self.params, args, kwargs)


class TailPatch:
    """One step from ``checkpoint`` on any set of ``train`` examples, and a query's support after it.

    ``task`` is the fine-tuning task (the step's loss is the training loss, EOS included);
    ``lr`` the step's learning rate (the fine-tuning run's peak rate); ``max_grad_norm`` the run's
    clipping (0 or None: none); ``optimizer`` ``"adam"`` or ``"sgd"`` (module docstring).
    """

    def __init__(self, checkpoint: str | Path, task: CausalLMTask, train: Examples, lr: float,
                 max_grad_norm: float | None = 1.0, optimizer: str = "adam"):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.model, _ = load_checkpoint(checkpoint)
        self.model.eval()
        self.task, self.train, self.lr = task, train, float(lr)
        self.max_grad_norm, self.optimizer = max_grad_norm, optimizer
        self.names, self.params, seen = [], [], set()
        for name, p in self.model.named_parameters():  # tied weights once, as training does
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                self.names.append(name)
                self.params.append(p)
        self.moments = adam_moments(checkpoint) if optimizer == "adam" else None
        if self.moments is not None:
            missing = [n for n in self.names if n not in self.moments.exp_avg_sq]
            if missing:
                raise ValueError(f"{checkpoint}: no AdamW second moment for parameter(s) {missing[:3]}; the "
                                 "checkpoint was written by another model or training run")

    def step(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """The parameters after one step on the training examples ``rows`` (one batch)."""
        rows = [int(r) for r in rows]
        if not rows:
            raise ValueError("a tail-patch step needs at least one training example")
        loss = self.task.per_example_loss(self.model, self.task.encode(self.train.subset(rows))).mean()
        grads = torch.autograd.grad(loss, self.params)
        if self.max_grad_norm:  # as torch.nn.utils.clip_grad_norm_
            total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            coef = torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)
            grads = [g * coef for g in grads]
        out = {}
        with torch.no_grad():
            for name, p, g in zip(self.names, self.params, grads):
                if self.moments is None:
                    out[name] = p - self.lr * g
                    continue
                m = self.moments
                t = m.step + 1
                v = m.beta2 * m.exp_avg_sq[name] + (1 - m.beta2) * g * g
                v_hat = v / (1 - m.beta2 ** t)
                out[name] = p * (1 - self.lr * m.weight_decay) - self.lr * g / (v_hat.sqrt() + m.eps)
        return out

    def null_step(self) -> dict[str, torch.Tensor]:
        """The step on no example: only AdamW's weight decay, if any (the parameters otherwise)."""
        decay = 1 - self.lr * self.moments.weight_decay if self.moments is not None else 1.0
        with torch.no_grad():
            return {n: p * decay for n, p in zip(self.names, self.params)}

    def support(self, params: dict[str, torch.Tensor] | None, queries: Examples,
                counterparts: Examples | None = None) -> np.ndarray:
        """``tda.counterfactual.measure.support`` of the queries under ``params`` (None: the
        checkpoint's own parameters)."""
        model = self.model if params is None else _Bound(self.model, params)
        return support(model, self.task, queries, counterparts)

    def scores(self, query: Examples, counterpart: Examples | None, selections: Sequence[Sequence[int]]) -> np.ndarray:
        """Tail-patch score of each selection of training rows for one query (a one-example
        ``Examples``): support after the step minus support after the null step. Repeated
        selections (as sets) are stepped once."""
        if len(query) != 1 or (counterpart is not None and len(counterpart) != 1):
            raise ValueError("scores() takes one query (and at most one counterpart) at a time")
        before = float(self.support(self.null_step(), query, counterpart)[0])
        done: dict[frozenset, float] = {}
        out = np.empty(len(selections))
        for i, rows in enumerate(selections):
            key = frozenset(int(r) for r in rows)
            if key not in done:
                done[key] = float(self.support(self.step(sorted(key)), query, counterpart)[0]) - before
            out[i] = done[key]
        return out


__all__ = ["OPTIMIZERS", "AdamMoments", "adam_moments", "TailPatch"]
