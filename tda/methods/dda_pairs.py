"""DDA as the authors' README describes it: a ground and an error model at every checkpoint.

The authors' repository (``cansee5/DDA``, README at revision 1a2117c; its code files are empty)
describes the pipeline in seven steps [code: README]:

(1) build the poisoned data set; (2) fine-tune (LLaMA-Factory, the summarisation-expert template);
(3) generate positive (correct) and negative (hallucinated) samples with the trained model;
(4) from the trained model, train a "ground" model on the positive and an "error" model on the
negative samples, same template and framework as fine-tuning, "to form a pair of comparison
models"; (5) repeat step 4 for the model of every training epoch; (6) compute influence scores for
each pair; (7) debias and denoise, then AUC and recall.

So DDA's contrast is between two *models* (as in CEA, Ladhak et al. 2023, whose XSum setup DDA
reuses), and one pair ranks the training set for a whole error set: a set-level AUC. Our
reconstruction [inf], documented where it fills a gap:

- For checkpoint ``theta_i`` (``i = 0`` the base model before fine-tuning, ``1..N`` the epoch
  checkpoints), the pair is made as CEA makes it (``tda.methods.cea.contrast_pair``): copies of
  ``theta_i`` updated with a few full-batch steps on the hallucinated outputs (error model) and on
  their corrections (ground model). The README says "same framework as fine-tuning" without
  settings; ``ContrastTraining`` gives them (default: CEA's 3 AdamW steps, at a tenth of our
  fine-tuning learning rate).
- Influence of a pair on a training example ``z`` (``influence``):
  ``"loss"`` -- ``IS_i(z) = loss(z; ground_i) - loss(z; error_i)``, exactly CEA's estimator at that
  checkpoint; ``"gradient"`` -- its first-order form ``grad loss(z; theta_i) . (ground_i - error_i)``,
  a gradient dot product as in DDA's formula IS = grad f . grad l, with the parameter difference
  of the pair standing for the test side.
- Denoise: the mean over the epoch checkpoints ``1..N``; debias: minus ``beta`` times the pair
  score at ``theta_0``: ``DDA = mean_i IS_i - beta IS_0``.
- The queries: the whole error set at once (``per_query=False``, the README's set-level ranking)
  or one pair per hallucinated output (``per_query=True``), for a per-query AUC beside the
  minimal-pair reconstruction (``tda.methods.dda``), which contrasts two *outputs* at one model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..checkpoints import as_checkpoint_list, load_checkpoint_model
from ..gradients import check_examples, iter_gradients, select_parameters
from ..progress import progress
from ..task import CausalLMTask, Examples
from .dda import check_beta
from .cea import ContrastTraining, contrast_pair, corrected_examples, loss_contrast

INFLUENCES = ("loss", "gradient")


@dataclass
class PairInfluence:
    """``scores[i, q, c]``: influence of the pair made at checkpoint ``i`` (0 = θ0, the base
    model) for error set ``q`` (one set, or one per hallucinated output) on candidate ``c``.
    Every DDA variant is a combination of these numbers (no training, no gradient)."""

    scores: np.ndarray

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim != 3 or self.scores.shape[0] < 2:
            raise ValueError(f"scores must be [1 + N checkpoints (N >= 1), queries, candidates], got shape "
                             f"{self.scores.shape}")

    @property
    def n_epochs(self) -> int:
        return self.scores.shape[0] - 1

    def dda(self, beta=1.0, denoise: bool = True, debias: bool = True) -> np.ndarray:
        """``[queries, candidates]``: ``mean_{i>=1} IS_i`` (or ``IS_N`` without denoise) minus
        ``beta * IS_0`` (nothing subtracted without debias or at β = 0)."""
        beta = check_beta(beta)
        s = self.scores[1:].mean(0) if denoise else self.scores[-1].copy()
        if debias and beta != 0:
            s = s - beta * self.scores[0]
        return s

    def checkpoint(self, i: int) -> np.ndarray:
        """The pair score of one checkpoint alone (``i = 0``: the term debias subtracts)."""
        return self.scores[i].copy()

    def term_scales(self) -> tuple[np.ndarray, np.ndarray]:
        """Per query, the norms over candidates of the denoised term and of the θ0 term: β times
        their ratio compares across model sizes where raw β does not."""
        return np.linalg.norm(self.scores[1:].mean(0), axis=1), np.linalg.norm(self.scores[0], axis=1)

    def save(self, folder: Path) -> None:
        np.save(Path(folder) / "pair_scores.npy", self.scores)

    @classmethod
    def load(cls, folder: Path) -> "PairInfluence":
        return cls(np.load(Path(folder) / "pair_scores.npy"))


def gradient_contrast(model, error_model, ground_model, task: CausalLMTask, candidates: Examples, *,
                      group="all", batch_size: int = 64) -> np.ndarray:
    """``grad loss(c; model) . (ground - error)`` per candidate, over the parameters of ``group``:
    the first-order change of each candidate's loss from the error model to the ground model."""
    names = select_parameters(model, group)
    g_params, e_params = dict(ground_model.named_parameters()), dict(error_model.named_parameters())
    delta = {n: (g_params[n].detach() - e_params[n].detach()) for n in names}
    out = np.zeros(len(candidates), dtype=np.float64)
    for idx, grads in iter_gradients(model, task, candidates, names, batch_size=batch_size,
                                     desc="candidate gradients"):
        acc = sum((grads[n].reshape(len(idx), -1).double() @ delta[n].reshape(-1).double()) for n in names)
        out[idx] = acc.numpy()
    if not np.isfinite(out).all():
        raise FloatingPointError("a candidate gradient is not finite")
    return out


def pair_influence(checkpoints, task: CausalLMTask, errors: Examples, corrected, candidates: Examples, *,
                   training: ContrastTraining | None = None, per_query: bool = False, influence: str = "loss",
                   group="all", batch_size: int = 64, verbose: bool = False) -> PairInfluence:
    """:class:`PairInfluence` over ``checkpoints`` (θ0 first, then every epoch checkpoint; paths
    or models, none of them changed).

    ``errors``: prompts with the hallucinated outputs (the README's negative samples);
    ``corrected``: the correct outputs (positive samples: ``Examples`` with the same prompts or a
    list of strings); ``candidates``: the training examples to rank. ``per_query``: one pair per
    hallucinated output instead of one for the set; ``influence``: "loss" or "gradient" (see the
    module docstring); ``group``: the parameters of the gradient form.
    """
    if influence not in INFLUENCES:
        raise ValueError(f"influence must be one of {INFLUENCES}, got {influence!r}")
    training = training or ContrastTraining()
    check_examples(candidates, "candidates")
    fixed = corrected_examples(errors, corrected)
    ckpts = as_checkpoint_list(checkpoints)
    if len(ckpts) < 2:
        raise ValueError("the README pipeline needs θ0 and at least one epoch checkpoint")
    groups: Sequence[list[int]] = [[q] for q in range(len(errors))] if per_query else [list(range(len(errors)))]
    out = np.zeros((len(ckpts), len(groups), len(candidates)))
    for i, ckpt in enumerate(progress(ckpts, desc="ground/error pairs", total=len(ckpts)) if verbose else ckpts):
        model = load_checkpoint_model(ckpt)
        for q, idx in enumerate(groups):
            err, ground = contrast_pair(model, task, errors.subset(idx), fixed.subset(idx), training)
            if influence == "loss":
                out[i, q] = loss_contrast(err, ground, task, candidates, batch_size)
            else:
                out[i, q] = gradient_contrast(model, err, ground, task, candidates, group=group, batch_size=batch_size)
            del err, ground
    return PairInfluence(out)


__all__ = ["INFLUENCES", "PairInfluence", "gradient_contrast", "pair_influence"]
