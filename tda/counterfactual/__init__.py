"""Counterfactual retraining and what it measures: the ground truth that neither paper could afford.

- ``retrain``: fine-tuning on a subset of the training set with the full run's seed, batches and
  learning rates (``finetune_subset``), and the label check of Part II (``counterfactual_check``);
- ``stored``: retrains as store artifacts keyed by their subset (``retrain_all``);
- ``measure``: a query's support, ``log p(target)`` with EOS left out (minus a counterpart's);
- ``tail_patch``: one optimizer step from the final checkpoint on chosen examples (TrackStar);
- ``lds``: the linear datamodeling score over random half-subsets (Park et al. 2023).
"""

from .lds import lds_per_query, lds_summary, random_subsets, spearman, summed_scores
from .measure import support, target_logprob
from .retrain import (MAX_REMAINING_SHARE, CounterfactualReport, check_labels, counterfactual_check,
                      finetune_subset, keep_mask, retrain_without, subset_batches)
from .stored import load_retrained, retrain_all, retrain_params, stored_retrain, subset_digest
from .tail_patch import TailPatch, adam_moments

__all__ = ["MAX_REMAINING_SHARE", "keep_mask", "subset_batches", "finetune_subset", "retrain_without",
           "CounterfactualReport", "check_labels", "counterfactual_check", "support", "target_logprob",
           "subset_digest", "retrain_params", "stored_retrain", "retrain_all", "load_retrained", "TailPatch",
           "adam_moments", "random_subsets", "summed_scores", "spearman", "lds_per_query", "lds_summary"]
