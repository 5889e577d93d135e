"""Counterfactual retraining: fine-tune on a subset of the training set with the same seed and batch
order, and the check that the poisoned documents really cause the traced hallucinations.

Attribution is scored against labels ("the poisoned documents are responsible"). Those labels are a
claim about a counterfactual, and our models are small enough to test it: retrain without the
poisoned documents, from the same base model, with the same seed and the same batch order, and
count the hallucinations that remain. Where they do not vanish, something else in the training
set (genuine target-word documents, say) makes the model write the target word, and the label is
false for that run (issue 12: with many genuine China documents, 46-51 of 52 outputs still said
China without any poison).

The primitive is :func:`finetune_subset`: training on the examples ``keep`` of a training set in
the *same batches* as the full run, each batch minus the removed examples, with the learning rate
of the same step. So the only difference between the two runs is the removed examples (leave-k-out
retraining, LDS and this check all build on it). Keeping every example reproduces
``tda.train.train`` exactly (a test holds the weights equal). A batch that loses all its examples
is skipped, and its step's learning rate with it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..hallucination import HallucinationReport, NoHallucinationsError, find_hallucinations
from ..progress import progress
from ..task import CausalLMTask, Examples
from ..checkpoints import load_checkpoint
from ..threads import fixed_threads
from ..train import TrainConfig, _named_trainable, epoch_batches, train_step

# A run's labels are trusted when retraining without the poison removes at least 90% of its
# traced hallucinations. Fixed before any attribution result: "vanish" with a small allowance for
# the target word's base rate (a clean model may name China for an England article now and then,
# since genuine China documents are in the training set).
MAX_REMAINING_SHARE = 0.1


def keep_mask(keep, n: int) -> np.ndarray:
    """A boolean mask over ``n`` training examples from a mask or a list of indices to keep."""
    arr = np.asarray(keep)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"a keep mask needs one flag per training example ({n}), got shape {arr.shape}")
        return arr.copy()
    idx = np.asarray(list(keep), dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"indices to keep must lie in 0..{n - 1}, got {int(idx.min())}..{int(idx.max())}")
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask


def subset_batches(lengths: Sequence[int], keep: np.ndarray, config: TrainConfig, epoch: int) -> list[list[int]]:
    """The full run's batches of one epoch (``tda.train.epoch_batches``) with the removed examples
    taken out; a batch may become empty (it is then skipped in training)."""
    return [[i for i in b if keep[i]] for b in epoch_batches(list(lengths), config.batch_size, config.seed, epoch)]


def finetune_subset(model, task: CausalLMTask, examples: Examples, keep, config: TrainConfig,
                    desc: str = "fine-tune on a subset") -> dict:
    """Train ``model`` in place on the examples ``keep`` (a mask or indices) of ``examples``, with
    the seed, batches and learning-rate schedule of the run on all of ``examples``.

    The optimiser (AdamW) and every step (``tda.train.train_step``: clipping, the scheduled learning
    rate) are ``tda.train.train``'s; with every example kept the final weights equal that function's. Nothing is written
    to disk (the caller saves the model if it wants to). Returns ``{"epoch_losses": [...],
    "steps": n_updates, "skipped_batches": n, "n_kept": n, "n_examples": n}``.
    """
    n = len(examples)
    if n == 0:
        raise ValueError("cannot train on an empty set of examples")
    mask = keep_mask(keep, n)
    if not mask.any():
        raise ValueError(f"keep removes all {n} training examples; nothing to train on")
    with fixed_threads():  # as tda.train.train, so that keeping every example gives its weights on any machine
        return _finetune_subset(model, task, examples, mask, config, desc)


def _finetune_subset(model, task: CausalLMTask, examples: Examples, mask: np.ndarray, config: TrainConfig,
                     desc: str) -> dict:
    n = len(examples)
    _, params = _named_trainable(model)  # tied weights once, as tda.train.train
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total_steps = math.ceil(n / config.batch_size) * config.epochs
    lengths = task.lengths(examples)
    step, updates, skipped, epoch_losses = 0, 0, 0, []
    model.train()
    for epoch in progress(range(config.epochs), desc=desc, total=config.epochs):
        total, count = 0.0, 0
        for idx in subset_batches(lengths, mask, config, epoch):
            if not idx:  # every example of this batch was removed: the step passes without an update
                step += 1
                skipped += 1
                continue
            loss = train_step(model, task, examples, idx, optimizer, params, config, step, total_steps, desc, epoch)
            step += 1
            updates += 1
            total += loss * len(idx)
            count += len(idx)
        epoch_losses.append(total / count if count else float("nan"))
    model.eval()
    return {"epoch_losses": epoch_losses, "steps": updates, "skipped_batches": skipped,
            "n_kept": int(mask.sum()), "n_examples": n}


def retrain_without(base, task: CausalLMTask, examples: Examples, remove, config: TrainConfig,
                    desc: str = "retrain without"):
    """(model, state): a fresh copy of the base model (a checkpoint path, or a model, which is
    copied and left untouched) fine-tuned on ``examples`` minus ``remove`` (a mask or indices),
    with the seed and batch order of the full run (``config``)."""
    model = load_checkpoint(base)[0] if isinstance(base, (str, Path)) else copy.deepcopy(base)
    drop = keep_mask(remove, len(examples))
    return model, finetune_subset(model, task, examples, ~drop, config, desc=desc)


@dataclass
class CounterfactualReport:
    """What retraining without the poisoned documents did to the traced hallucinations.

    ``n_traced``: hallucinated outputs of the full run (the traced queries); ``n_remaining``: how
    many of those prompts still give a target-word output without the poison; ``n_without``: all
    target-word outputs of the retrained model (new ones included); ``flagged``: the labels fail
    (``n_remaining > max_remaining_share * n_traced``), and the run should be left out of verdicts;
    ``verified_ids``: the traced queries whose label holds one by one.
    """

    n_prompts: int
    n_traced: int
    n_remaining: int
    n_without: int
    traced_ids: list[str]
    remaining_ids: list[str]
    max_remaining_share: float
    flagged: bool
    n_removed: int
    rows: list[dict] = field(default_factory=list)

    @property
    def remaining_share(self) -> float:
        return self.n_remaining / self.n_traced

    @property
    def verified_ids(self) -> list[str]:
        """The traced queries whose hallucination vanishes without the poison: their label holds."""
        remaining = set(self.remaining_ids)
        return [i for i in self.traced_ids if i not in remaining]

    def summary(self) -> dict:
        return {"prompts": self.n_prompts, "traced hallucinations": self.n_traced,
                "remaining without the poison": self.n_remaining, "target-word outputs without the poison":
                self.n_without, "removed documents": self.n_removed, "flagged": self.flagged}


def check_labels(report: HallucinationReport, model_without, task: CausalLMTask, *, n_removed: int,
                 max_new_tokens: int = 40, max_remaining_share: float = MAX_REMAINING_SHARE) -> CounterfactualReport:
    """Compare a run's hallucinations (``report``) with the outputs of the model retrained without
    the poison on the same prompts. Raises :class:`NoHallucinationsError` when the run has no
    hallucination (there is no label to check: count such runs, do not check them)."""
    if not 0.0 <= max_remaining_share <= 1.0:
        raise ValueError(f"max_remaining_share must be in [0, 1], got {max_remaining_share}")
    traced = _traced(report)
    again = find_hallucinations(model_without, task, report.rows, report.source_word, report.target_word,
                                max_new_tokens=max_new_tokens, only_naming_source=False,
                                prompt_fn=_prompt_of(report))
    by_id = {r["id"]: r for r in again.rows}
    remaining = [r["id"] for r in traced if by_id[r["id"]]["hallucinated"]]
    return CounterfactualReport(
        n_prompts=report.n, n_traced=len(traced), n_remaining=len(remaining), n_without=again.n_hallucinated,
        traced_ids=[r["id"] for r in traced], remaining_ids=remaining, max_remaining_share=max_remaining_share,
        flagged=len(remaining) > max_remaining_share * len(traced), n_removed=int(n_removed), rows=again.rows)


def _traced(report: HallucinationReport) -> list[dict]:
    traced = [r for r in report.rows if r["hallucinated"]]
    if not traced:
        raise NoHallucinationsError(
            f"none of the {report.n} outputs names {report.target_word!r}: the run has no hallucination, so there "
            "is no label to check by retraining; count it as a run without hallucinations")
    return traced


def _prompt_of(report: HallucinationReport):
    """The prompts the run used, looked up by document (so the retrained model answers the same ones)."""
    prompts = {r["document"]: r["prompt"] for r in report.rows}
    return lambda document: prompts[document]


def counterfactual_check(base, task: CausalLMTask, examples: Examples, poisoned, config: TrainConfig,
                         report: HallucinationReport, *, max_new_tokens: int = 40,
                         max_remaining_share: float = MAX_REMAINING_SHARE) -> CounterfactualReport:
    """Retrain from ``base`` without the ``poisoned`` examples (a mask or indices; same seed and
    batch order as the run, ``config`` its training settings) and count which of the run's
    hallucinations (``report``) remain. See :class:`CounterfactualReport`."""
    drop = keep_mask(poisoned, len(examples))
    if not drop.any():
        raise ValueError("no poisoned example to remove: the counterfactual check needs the poisoned documents")
    _traced(report)  # no hallucination: a clear error before any retraining
    model, _ = retrain_without(base, task, examples, drop, config, desc="retrain without the poison")
    return check_labels(report, model, task, n_removed=int(drop.sum()), max_new_tokens=max_new_tokens,
                        max_remaining_share=max_remaining_share)


__all__ = ["MAX_REMAINING_SHARE", "keep_mask", "subset_batches", "finetune_subset", "retrain_without",
           "CounterfactualReport", "check_labels", "counterfactual_check"]
