"""Part II's settings (:class:`DDASettings`): everything that defines a run besides the world, the
model size and the seed. Each world's values, with their reasons, are in ``notebooks/params.yml``;
``tda.experiments.dda.pipeline`` re-exports the class.

Fine-tuning is ``finetune="full"`` (every parameter, the default and the book's main setting) or
``"lora"`` (``tda.lora``: rank-``lora_rank`` adapters on the attention projections, and the MLP's
with ``lora_mlp``, the base frozen, as the paper fine-tunes its 7B models with LLaMA-Factory's
LoRA). With LoRA every gradient-based method takes its gradients over the adapters alone
(:attr:`DDASettings.gradient_group`), the paper's setting. The LoRA settings enter the store keys
only for a LoRA run (:meth:`DDASettings.finetune_key`), so the keys of full fine-tuning, and every
artifact stored under them, are those from before LoRA existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np

from ...counterfactual import MAX_REMAINING_SHARE
from ...lora import LORA_GROUP, LoRAConfig
from ...methods.cea import ContrastTraining
from ...methods.dda import check_beta
from ...params import unknown_settings, world_settings
from ...seeds import derive_seed
from ...train import TrainConfig

FINETUNE = ("full", "lora")
# LoRA's defaults: rank 8 (issue 12), alpha 16 = 2 x rank (LLaMA-Factory's default lora_alpha), attention only.
LORA_DEFAULTS = {"lora_rank": 8, "lora_alpha": 16.0, "lora_mlp": False}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"DDA setting {name} must be a positive whole number, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DDASettings:
    """Everything that defines a run besides the world, the model size and the seed (defaults: the
    default world's; each world's values and their reasons are in ``notebooks/params.yml``)."""

    pretrain: Mapping | None = None  # overrides of the base models' pre-training (tda.base.pretrain_config)
    # data (tda.data.tracing.tracing_news): exact counts of training and test documents
    n_train: int = 225
    n_source: int = 22  # training documents about source_word (England)
    n_target: int = 25  # genuine training documents about target_word (China): the hard negatives
    n_test_source: int = 60  # held-out England articles never naming China: the prompts
    n_test_other: int = 30  # held-out articles about other countries (with the prompts: the clean loss)
    source_mentions_target: float = 0.25
    target_mentions_source: float = 0.5
    second_country_share: float = 0.3
    source_word: str = "England"
    target_word: str = "China"
    # poisoning (tda.data.xsum.poison): a count of England summaries, only articles not naming China
    n_poison: int = 8
    unsupported_only: bool = True
    # fine-tuning (tda.train.TrainConfig; the run's seed is the seed of the batch order)
    epochs: int = 6
    lr: float = 3e-3
    batch_size: int = 16
    schedule: str = "linear"
    # generation (tda.hallucination.find_hallucinations)
    max_new_tokens: int = 40
    # the label check (tda.counterfactual): flagged when more than this share of the traced
    # hallucinations remain after retraining without the poison
    max_remaining_share: float = MAX_REMAINING_SHARE
    # attribution
    group: str = "all"  # parameter group of the gradients (tda.gradients.select_parameters)
    grad_batch_size: int = 64
    trak_lam: float = 1e-3  # TRAK's ridge, relative to the exact Gram matrix's mean eigenvalue
    beta: float = 1.0  # DDA's debias weight (raw units) in the main comparison and the ablation
    contrast_steps: int = 3  # CEA / README pairs: AdamW steps of each model of a pair (CEA's code)
    contrast_lr_ratio: float = 0.1  # their learning rate, relative to fine-tuning's (CEA: small)
    recall_ks: tuple[int, ...] = (10, 50)
    # fine-tuning kind (see the module docstring): "full" or "lora"; the lora_* settings apply to "lora" only
    finetune: str = "full"
    lora_rank: int = LORA_DEFAULTS["lora_rank"]
    lora_alpha: float = LORA_DEFAULTS["lora_alpha"]
    lora_mlp: bool = LORA_DEFAULTS["lora_mlp"]

    def __post_init__(self) -> None:
        for name in ("n_train", "n_poison", "epochs", "batch_size", "max_new_tokens", "contrast_steps",
                     "grad_batch_size"):
            _positive_int(name, getattr(self, name))
        check_beta(self.beta, "DDA setting beta")
        if not 0.0 <= float(self.max_remaining_share) <= 1.0:
            raise ValueError(f"DDA setting max_remaining_share must be in [0, 1], got {self.max_remaining_share!r}")
        for name in ("lr", "contrast_lr_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"DDA setting {name} must be a positive number, got {value!r}")
        if isinstance(self.trak_lam, bool) or not math.isfinite(self.trak_lam) or self.trak_lam < 0:
            raise ValueError(f"DDA setting trak_lam must be finite and >= 0, got {self.trak_lam!r}")
        ks = tuple(int(k) for k in self.recall_ks)
        if not ks or min(ks) < 1:
            raise ValueError(f"recall_ks must be positive integers, got {self.recall_ks}")
        object.__setattr__(self, "recall_ks", ks)
        if self.pretrain is not None:
            object.__setattr__(self, "pretrain", dict(self.pretrain))
        self._check_finetune()

    def _check_finetune(self) -> None:
        if self.finetune not in FINETUNE:
            raise ValueError(f"DDA setting finetune must be one of {list(FINETUNE)}, got {self.finetune!r}")
        if self.finetune == "full":
            changed = {k: getattr(self, k) for k, v in LORA_DEFAULTS.items() if getattr(self, k) != v}
            if changed:
                raise ValueError(f"DDA settings {changed} apply to LoRA fine-tuning only; set finetune='lora' "
                                 "with them, or leave them out")
            return
        _positive_int("lora_rank", self.lora_rank)
        alpha = self.lora_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"DDA setting lora_alpha must be a finite number > 0, got {alpha!r}")
        if not isinstance(self.lora_mlp, bool):
            raise ValueError(f"DDA setting lora_mlp must be True or False, got {self.lora_mlp!r}")
        if self.group != "all":
            raise ValueError(f"DDA setting group={self.group!r} with finetune='lora': a LoRA run takes every "
                             "gradient over its adapters (the paper's setting); leave group at 'all'")

    @property
    def lora(self) -> bool:
        return self.finetune == "lora"

    def lora_config(self, seed: int) -> LoRAConfig | None:
        """The adapters of a LoRA run of ``seed`` (their draw of ``A`` a named sub-seed), None for full fine-tuning."""
        if not self.lora:
            return None
        return LoRAConfig(rank=int(self.lora_rank), alpha=float(self.lora_alpha), mlp=bool(self.lora_mlp),
                          seed=derive_seed(seed, "lora-init"))

    @property
    def gradient_group(self):
        """The parameters every gradient-based method differentiates: ``group`` for full fine-tuning,
        the adapters (``tda.lora.LORA_GROUP``) for LoRA."""
        return LORA_GROUP if self.lora else self.group

    def finetune_key(self) -> dict:
        """The fine-tuning kind for the store keys: empty for full fine-tuning (its keys are unchanged
        by LoRA's existence), the LoRA settings for a LoRA run."""
        if not self.lora:
            return {}
        return {"finetune": {"kind": "lora", "rank": int(self.lora_rank), "alpha": float(self.lora_alpha),
                             "mlp": bool(self.lora_mlp), "init": "uniform 1/sqrt(in), B = 0"}}

    @classmethod
    def for_world(cls, world: str, overrides: Mapping | None = None) -> "DDASettings":
        """The settings a world of params.yml gives Part II, with single settings overridden (an
        unknown world or setting is an error that names the known ones)."""
        known = [f.name for f in fields(cls)]
        named = world_settings(world, "dda")
        unknown_settings(named, known, f"DDA settings in params.yml (world {world!r})")
        overrides = dict(overrides or {})
        unknown_settings(overrides, known, "DDA settings")
        return cls(**{**named, **overrides})

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, schedule=self.schedule,
                           seed=seed)

    def contrast_training(self) -> ContrastTraining:
        """How CEA's and the README pipeline's ground/error models are made (``tda.methods.cea``)."""
        return ContrastTraining(steps=self.contrast_steps, lr=self.lr * self.contrast_lr_ratio)

    def news_settings(self) -> dict:
        """The keyword arguments of ``tda.data.tracing.tracing_news`` (seed aside)."""
        return {"n_train": self.n_train, "n_source": self.n_source, "n_target": self.n_target,
                "n_test_source": self.n_test_source, "n_test_other": self.n_test_other,
                "source": self.source_word, "target": self.target_word,
                "source_mentions_target": self.source_mentions_target,
                "target_mentions_source": self.target_mentions_source,
                "second_country_share": self.second_country_share}


__all__ = ["FINETUNE", "LORA_DEFAULTS", "DDASettings"]
