"""What a counterfactual measures on a query: the log-probability of its target, EOS left out.

Every experiment of Part III (tail-patch, leave-k-out, LDS) compares a model's *support* for a
query's target before and after an intervention on the training data. The support is

- ``log p(target | prompt)``, summed over the target's tokens, with the closing EOS left out of
  the sum (``task.without_eos()``: attribution is about the answer, not about stopping; on a query
  whose answer the model has not learned the EOS term alone can be 10 nats), or
- with a *counterpart* (Part II: the correct output beside the hallucinated one, differing only in
  the poisoned word), ``log p(target) - log p(counterpart)``: how much more the model favours the
  hallucination than the correct output, so that what the two share (the rest of the sentence)
  cancels.

The *loss* of a query is minus its support. Sums, not means, over tokens: the support is then the
log-probability of the whole answer (a multi-token answer is as hard as all its tokens together).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..task import CausalLMTask, Examples


@torch.no_grad()
def target_logprob(model, task: CausalLMTask, examples: Examples, batch_size: int = 128) -> np.ndarray:
    """``log p(target | prompt)`` of every example, summed over the target tokens, EOS excluded.

    ``model`` may be a module or any callable the task can call (e.g. a model with replaced
    parameters, see ``tda.counterfactual.tail_patch``). Float64, one value per example.
    """
    if len(examples) == 0:
        return np.zeros(0)
    scoring = task.without_eos()
    out = []
    for start in range(0, len(examples), batch_size):
        batch = scoring.encode(examples.subset(range(start, min(start + batch_size, len(examples)))))
        loss, mask = scoring.per_token_loss(model, batch)
        if not mask.any(1).all():
            raise ValueError("an example has no target token besides EOS: its log-probability would be 0 by "
                             "construction; give every query a non-empty target")
        out.append(-loss.sum(1).double())
    return torch.cat(out).numpy()


def support(model, task: CausalLMTask, queries: Examples, counterparts: Examples | None = None,
            batch_size: int = 128) -> np.ndarray:
    """Per query: ``log p(target)``, or ``log p(target) - log p(counterpart)`` with counterparts
    (module docstring). Higher = the model favours the query's target more."""
    out = target_logprob(model, task, queries, batch_size)
    if counterparts is not None:
        if len(counterparts) != len(queries):
            raise ValueError(f"{len(counterparts)} counterparts for {len(queries)} queries")
        out = out - target_logprob(model, task, counterparts, batch_size)
    return out


SupportFn = Callable[[object], np.ndarray]


__all__ = ["target_logprob", "support", "SupportFn"]
