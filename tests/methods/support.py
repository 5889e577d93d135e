"""Brute force for the method tests: flat per-example gradients by one backward each."""

from __future__ import annotations

import copy

import numpy as np
import torch
from transformers import GPT2LMHeadModel

from tda import gradients as G


def flat_grads(model, task, examples, group, correction=None, eps=1e-7) -> np.ndarray:
    """Brute force: one ``backward`` per example, optionally divided by sqrt(v) + eps."""
    names = G.select_parameters(model, group)
    rows = []
    for i in range(len(examples)):
        m = copy.deepcopy(model)
        m.zero_grad()
        task.per_example_loss(m, task.encode(examples.subset([i])))[0].backward()
        params = dict(m.named_parameters())
        parts = []
        for n in names:
            g = params[n].grad
            if correction is not None:
                g = g / (correction[n].sqrt() + eps)
            parts.append(g.reshape(-1))
        rows.append(torch.cat(parts).double().numpy())
    return np.stack(rows)


def close(a, b, rtol=1e-4):
    return np.abs(np.asarray(a) - np.asarray(b)).max() <= rtol * max(np.abs(b).max(), 1e-12)


def other_architecture(model):
    config = copy.deepcopy(model.config)
    config.n_layer = 1
    return GPT2LMHeadModel(config).eval()
