"""Brute force for the gradient tests: one ordinary backward per example."""

from __future__ import annotations

import copy

import numpy as np
import torch

_BRUTE: dict = {}


def brute_force(model, task, examples, names) -> np.ndarray:
    """One ordinary ``loss.backward()`` per example on a copy of the model (cached per model and
    examples, so that each group's test slices the same reference gradients)."""
    key = (id(model), tuple(examples.prompts), tuple(examples.targets))
    if key not in _BRUTE:
        m = copy.deepcopy(model)
        per_name = {n: [] for n, _ in m.named_parameters()}
        for i in range(len(examples)):
            m.zero_grad(set_to_none=True)
            task.per_example_loss(m, task.encode(examples.subset([i])))[0].backward()
            for n, p in m.named_parameters():
                per_name[n].append(torch.zeros_like(p) if p.grad is None else p.grad.clone())
        _BRUTE[key] = {n: torch.stack(v) for n, v in per_name.items()}
    grads = _BRUTE[key]
    return torch.cat([grads[n].reshape(len(examples), -1) for n in names], dim=1).numpy()


def assert_close(a, b, rtol=1e-4):
    scale = max(np.abs(b).max(), 1e-12)
    assert np.abs(np.asarray(a) - b).max() <= rtol * scale
