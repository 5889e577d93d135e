"""Tail-patch (TrackStar's influence evaluation, Chang et al. 2024): one training step on a set of
training examples, taken from the final checkpoint, and the change in a query's support.

A method's top-k examples for a query *influence* the model when training on them moves the
model towards the query's target. Tail-patch measures exactly that, with no retraining: from the
final fine-tuned checkpoint ``θ``, one optimizer step on the k examples (one batch, the training
loss of the fine-tuning run, its gradient clipping) gives ``θ'``, and the score is how much it
raised the query's support (``tda.counterfactual.measure.support``: the query target's
log-probability, EOS excluded, minus the counterpart's where there is one).

Which step: **AdamW continuing from the checkpoint's state** (first and second moments, step
count) at the fine-tuning run's peak learning rate ``lr``, i.e. one more step of fine-tuning on
those examples, with the run's clipping; and the score is measured against the same step on *no*
examples (``g = 0``: the momentum alone), so that what the carried-over momentum of the last
fine-tuning batches does, the same for every method and query, cancels::

    m' = β1 m + (1 - β1) g,  v' = β2 v + (1 - β2) g²,  t' = t + 1
    θ' = θ (1 - lr λ) - lr (m' / (1 - β1^t')) / (√(v' / (1 - β2^t')) + ε)      (torch's AdamW)
    score = support(θ'(g = batch gradient)) - support(θ'(g = 0))

Why (checked on a known-answer case before any Part III result, ``tests/counterfactual``):

- the second moments are what scale every fine-tuning update of this model; a plain SGD step at
  an Adam learning rate moves it orders of magnitude less and towards the parameters with the
  largest raw gradients (kept as the ``"sgd"`` variant: ``θ' = θ - lr g``, a first-order TracIn
  at the final checkpoint);
- our first choice reset the first moment (``m' = g``), so that a step on no examples changes
  nothing. On the known case it failed: the step on the one example that teaches the query's
  fact *lowered* the query's log-probability, and its own (an overshoot: with the momentum reset
  the example's gradient enters the step ten times more strongly, ``1 / (1 - β1)``, than in any
  step of fine-tuning). Continuing AdamW gives it its fine-tuning weight, and there the teaching
  example's step raises the query most.

TrackStar's exact protocol (one step per retrieved example or one on all k; which optimizer state)
could not be checked here; this book steps once on the top-k together, which is what a user who
keeps or drops those k examples does.
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
    """AdamW's moments (by parameter name), step count and settings at a checkpoint."""

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    step: int
    beta1: float
    beta2: float
    eps: float
    weight_decay: float


def adam_moments(checkpoint: str | Path, names: Sequence[str]) -> AdamMoments:
    """The AdamW state a checkpoint saved (``tda.checkpoints``), for the trainable parameters
    ``names`` in the optimizer's order (tied weights once, as ``tda.train`` builds it). A
    checkpoint without one, such as ``epoch-000``, raises ``CheckpointError``; a state that does
    not match ``names`` (checked against the named second moments) raises ``ValueError``."""
    state = load_optimizer_state(checkpoint)
    per_param = state.get("state") or {}
    if len(per_param) != len(names):
        raise ValueError(f"{checkpoint}: AdamW state for {len(per_param)} parameters, the model has {len(names)} "
                         "trainable ones; the checkpoint was written by another model or training run")
    named_sq = second_moments(checkpoint)
    for i, name in enumerate(names):
        if name not in named_sq or not torch.equal(named_sq[name], per_param[i]["exp_avg_sq"]):
            raise ValueError(f"{checkpoint}: AdamW state {i} is not parameter {name!r}")
    steps = {int(float(s["step"])) for s in per_param.values()}
    if len(steps) != 1:
        raise ValueError(f"{checkpoint}: parameters at different AdamW step counts {sorted(steps)}")
    group = state["param_groups"][0]
    return AdamMoments(exp_avg={n: per_param[i]["exp_avg"] for i, n in enumerate(names)},
                       exp_avg_sq={n: per_param[i]["exp_avg_sq"] for i, n in enumerate(names)}, step=steps.pop(),
                       beta1=float(group["betas"][0]), beta2=float(group["betas"][1]), eps=float(group["eps"]),
                       weight_decay=float(group["weight_decay"]))


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
        self.moments = adam_moments(checkpoint, self.names) if optimizer == "adam" else None

    def gradient(self, rows: Sequence[int]) -> list[torch.Tensor]:
        """The clipped gradient of the training loss on the examples ``rows`` (one batch)."""
        rows = [int(r) for r in rows]
        if not rows:
            raise ValueError("a tail-patch step needs at least one training example")
        loss = self.task.per_example_loss(self.model, self.task.encode(self.train.subset(rows))).mean()
        grads = torch.autograd.grad(loss, self.params)
        if self.max_grad_norm:  # as torch.nn.utils.clip_grad_norm_
            total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            coef = torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)
            grads = [g * coef for g in grads]
        return list(grads)

    @torch.no_grad()
    def apply(self, grads: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The parameters after one optimizer step with gradient ``grads`` (module docstring)."""
        out = {}
        for name, p, g in zip(self.names, self.params, grads):
            if self.moments is None:
                out[name] = p - self.lr * g
                continue
            m = self.moments
            t = m.step + 1
            first = m.beta1 * m.exp_avg[name] + (1 - m.beta1) * g
            second = m.beta2 * m.exp_avg_sq[name] + (1 - m.beta2) * g * g
            denom = (second.sqrt() / (1 - m.beta2 ** t) ** 0.5) + m.eps
            out[name] = p * (1 - self.lr * m.weight_decay) - (self.lr / (1 - m.beta1 ** t)) * first / denom
        return out

    def step(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """The parameters after one step on the training examples ``rows`` (one batch)."""
        return self.apply(self.gradient(rows))

    def null_step(self) -> dict[str, torch.Tensor]:
        """The same step on no example (``g = 0``): the momentum and weight decay alone."""
        return self.apply([torch.zeros_like(p) for p in self.params])

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
