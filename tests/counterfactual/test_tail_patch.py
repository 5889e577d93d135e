"""Tail-patch (tda.counterfactual.tail_patch): the step equals torch's AdamW continuing from the
checkpoint, and on the known case the one teaching example has the largest score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tda.checkpoints import CheckpointError, load_checkpoint, load_optimizer_state
from tda.counterfactual import TailPatch, support


def _torch_step(known, rows):
    """One step of torch.optim.AdamW continuing from the final checkpoint's state."""
    model, _ = load_checkpoint(known.final)
    model.eval()
    params, seen = [], set()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    opt = torch.optim.AdamW(params, lr=known.config.lr)
    opt.load_state_dict(load_optimizer_state(known.final))
    for group in opt.param_groups:
        group["lr"] = known.config.lr
    if rows:
        known.task.per_example_loss(model, known.task.encode(known.train.subset(rows))).mean().backward()
        torch.nn.utils.clip_grad_norm_(params, known.config.max_grad_norm)
    else:
        for p in params:
            p.grad = torch.zeros_like(p)
    opt.step()
    return model


@pytest.mark.parametrize("rows", [[0], [2, 5, 7], []])
def test_step_is_adamw_continuing_from_the_checkpoint(known, rows):
    patch = TailPatch(known.final, known.task, known.train, lr=known.config.lr,
                      max_grad_norm=known.config.max_grad_norm)
    ours = patch.step(rows) if rows else patch.null_step()
    ref = dict(_torch_step(known, rows).named_parameters())
    for name, value in ours.items():
        assert torch.allclose(value, ref[name], atol=1e-7, rtol=1e-5), name
    after = support(_torch_step(known, rows), known.task, known.query)
    assert patch.support(ours, known.query) == pytest.approx(after, abs=1e-5)


def test_sgd_variant_is_a_plain_gradient_step(known):
    patch = TailPatch(known.final, known.task, known.train, lr=0.1, max_grad_norm=None, optimizer="sgd")
    model, _ = load_checkpoint(known.final)
    known.task.per_example_loss(model, known.task.encode(known.train.subset([1, 3]))).mean().backward()
    new = patch.step([3, 1])
    for name, p in model.named_parameters():
        if name in new:
            assert torch.allclose(new[name], p.detach() - 0.1 * p.grad, atol=1e-7), name
    assert all(torch.equal(v, p) for v, p in zip(patch.null_step().values(), patch.params))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_teaching_example_has_the_largest_tail_patch(known, optimizer):
    patch = TailPatch(known.final, known.task, known.train, lr=known.config.lr,
                      max_grad_norm=known.config.max_grad_norm, optimizer=optimizer)
    scores = patch.scores(known.query, None, [[i] for i in range(len(known.train))])
    assert int(np.argmax(scores)) == known.teacher and scores[known.teacher] > 0, scores
    # a selection is a set: order and repeats do not matter, and it is stepped once
    again = patch.scores(known.query, None, [[known.teacher, 3], [3, known.teacher]])
    assert again[0] == again[1]


def test_tail_patch_errors(known):
    with pytest.raises(ValueError, match="optimizer must be"):
        TailPatch(known.final, known.task, known.train, lr=1e-3, optimizer="adafactor")
    with pytest.raises(ValueError, match="lr must be"):
        TailPatch(known.final, known.task, known.train, lr=0)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        TailPatch(known.base, known.task, known.train, lr=1e-3)
    patch = TailPatch(known.final, known.task, known.train, lr=1e-3)
    with pytest.raises(ValueError, match="at least one training example"):
        patch.step([])
    with pytest.raises(ValueError, match="one query"):
        patch.scores(known.train.subset([0, 1]), None, [[0]])
