"""CEA, contrastive error attribution (Ladhak, Durmus & Hashimoto, ACL 2023, arXiv 2212.10722).

What the paper does [paper: abstract; code: the authors' repository ``fladhak/contrastive_error_attribution``,
``e2e/cae_e2e.ipynb`` and ``xsum_canaries/england_china.ipynb``]:

- A few model errors are collected (5 in the authors' notebooks: erroneous outputs of the trained
  model, e.g. summaries that say "China" where the article is about England) and each is corrected
  by hand with a minimal edit (there: the canary word replaced back by the original entity).
- From the trained model, two copies are updated with a few gradient steps: one on the errors as
  they are (theta_err), one on the corrected outputs (theta_fix); the code takes 3 AdamW steps at
  learning rate 5e-6 on one batch holding all the error examples, no weight decay.
- Every training example z gets ``loss(z; theta_err) - loss(z; theta_fix)``; the *lowest* values
  are the likely data errors ("training instances that have a relatively small loss under
  theta_orig and a relatively larger loss under theta_fix"). So one ranking per error set.
- To scale to the whole training set, the top and bottom 500 examples of that ranking train an
  ELECTRA-large classifier whose probability scores every training example ("distillation").
- Metrics: average precision (auPR) and ROC AUC of that ranking against the known errors; for the
  XSum canaries the positives are training examples whose summary names the canary word while the
  article names the original entity and not the canary.

Our reconstruction and where it differs:

- The score is returned with the sign that ranks suspects first: ``loss(z; theta_fix) -
  loss(z; theta_err)`` (higher = more likely responsible), the negative of the notebooks' diff.
- Our training sets are a few hundred documents, so every candidate is scored directly: no
  classifier distillation (which approximates this same ranking for data too large to score).
- Step size: the notebooks' 5e-6 belongs to BART-base; our tiny models are fine-tuned at ~3e-3, so
  the default is 3 steps at a tenth of that, 3e-4 (``ContrastTraining``): a small move away from the
  trained model relative to fine-tuning, as in the paper. [our choice, before any result]
- The loss of a batch is the mean over examples of each example's mean token loss (the task's
  ``per_example_loss``), where BART's is the mean over all target tokens of the batch.
- ``per_query=True`` also gives one ranking per error (a pair trained on that error alone), so CEA
  can be scored per query beside the gradient methods; the paper's estimator is the set-level one.

The pair machinery (:func:`contrast_pair`, :func:`loss_contrast`) is shared with DDA's README
pipeline (``tda.methods.dda_pairs``), which builds such a pair at every epoch checkpoint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..checkpoints import load_checkpoint_model
from ..gradients import check_examples
from ..task import CausalLMTask, Examples, losses


@dataclass(frozen=True)
class ContrastTraining:
    """How each model of a contrast pair is made from the trained model: ``steps`` full-batch steps
    on all the error examples (or all the corrected ones) with ``optimizer`` "adamw" (CEA's code)
    or "sgd" (plain gradient descent, whose first-order effect is a gradient dot product), at
    learning rate ``lr``; ``max_grad_norm`` clips as fine-tuning does (None: no clipping, CEA)."""

    steps: int = 3
    lr: float = 3e-4
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not np.isfinite(self.lr) \
                or self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")


def corrected_examples(errors: Examples, corrected) -> Examples:
    """The corrected outputs as ``Examples`` with the errors' prompts (from ``Examples`` with the
    same prompts in order, or from a list of target strings)."""
    check_examples(errors, "errors")
    if isinstance(corrected, Examples):
        if list(corrected.prompts) != list(errors.prompts):
            raise ValueError("corrected outputs must share the errors' prompts, in order")
        right = list(corrected.targets)
    elif isinstance(corrected, str):
        raise TypeError("corrected must be Examples or a list of strings, not one string")
    else:
        right = list(corrected)
    if len(right) != len(errors):
        raise ValueError(f"{len(right)} corrected outputs for {len(errors)} errors")
    if right == list(errors.targets):
        raise ValueError("the corrected outputs equal the errors: there is no contrast to measure")
    return Examples(list(errors.prompts), right)


def train_copy(model, task: CausalLMTask, examples: Examples, training: ContrastTraining):
    """A copy of ``model`` after ``training.steps`` full-batch steps on ``examples`` (the model
    itself is untouched). Deterministic: no dropout, one fixed batch."""
    out = copy.deepcopy(model)
    params = [p for p in out.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay)
           if training.optimizer == "adamw" else torch.optim.SGD(params, lr=training.lr))
    batch = task.encode(examples)
    out.train()
    for _ in range(training.steps):
        loss = task.per_example_loss(out, batch).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"contrast training: loss became {loss.item()}; lower lr ({training.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if training.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, training.max_grad_norm)
        opt.step()
    out.eval()
    return out


def contrast_pair(model, task: CausalLMTask, errors: Examples, corrected, training: ContrastTraining):
    """(error model, ground model): copies of ``model`` trained on the errors and on their
    corrections (DDA's README calls them the error and the ground model)."""
    fixed = corrected_examples(errors, corrected)
    return train_copy(model, task, errors, training), train_copy(model, task, fixed, training)


def loss_contrast(error_model, ground_model, task: CausalLMTask, candidates: Examples,
                  batch_size: int = 64) -> np.ndarray:
    """``loss(c; ground) - loss(c; error)`` per candidate: positive when the step towards the
    errors made ``c`` likelier than the step towards their corrections did."""
    check_examples(candidates, "candidates")
    ground = losses(ground_model, task, candidates, batch_size=batch_size)
    error = losses(error_model, task, candidates, batch_size=batch_size)
    return (ground.double() - error.double()).numpy()


def cea(model, task: CausalLMTask, errors: Examples, corrected, candidates: Examples, *,
        training: ContrastTraining | None = None, per_query: bool = False, batch_size: int = 64) -> np.ndarray:
    """CEA scores (higher = more likely a cause of the errors), ``[1, n_candidates]`` for the error
    set as a whole (the paper's estimator) or ``[n_errors, n_candidates]`` with ``per_query``.

    ``model``: the trained model (a model or a checkpoint path; it is not changed); ``errors``:
    prompts with the erroneous outputs; ``corrected``: the corrected outputs (``Examples`` with
    the same prompts or a list of strings); ``candidates``: the training examples to rank.
    """
    training = training or ContrastTraining()
    check_examples(candidates, "candidates")
    fixed = corrected_examples(errors, corrected)
    model = load_checkpoint_model(model)
    groups: Sequence[list[int]] = [[q] for q in range(len(errors))] if per_query else [list(range(len(errors)))]
    rows = []
    for idx in groups:
        err, ground = contrast_pair(model, task, errors.subset(idx), fixed.subset(idx), training)
        rows.append(loss_contrast(err, ground, task, candidates, batch_size))
    return np.stack(rows)


__all__ = ["ContrastTraining", "corrected_examples", "train_copy", "contrast_pair", "loss_contrast", "cea"]
