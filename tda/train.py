"""Pre-training and fine-tuning with a checkpoint (and AdamW's state) at the end of every epoch.

The checkpoints are ``tda.checkpoints``' format: ``epoch-000/`` is the starting model,
``epoch-001/``... follow each epoch. Training resumes from the last complete checkpoint, and since
each epoch's shuffle is seeded by (seed, epoch) and the model has no dropout, an interrupted run
ends with exactly the weights of an uninterrupted one.

Checkpoints inside an epoch (``save_at_steps``): FTRACE takes its pre-training checkpoints 0.5-1.5%
into pre-training, and its fine-tuning checkpoints at 5k/10k/30k/80k steps, not at epoch ends. A
run asked for them also writes ``step-NNNNNN/`` after those global steps. Resuming replays the
epoch from its last epoch checkpoint, so a step checkpoint written before an interruption is
reached again with the same weights; it is kept, not rewritten.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoints import (CheckpointError, OPTIMIZER, STATE, checkpoint_dir, drop_damaged_tail, list_checkpoints,
                          load_checkpoint, load_optimizer_state, read_state, save_checkpoint, step_checkpoint_dir)
from .progress import progress
from .seeds import derive_seed
from .task import CausalLMTask, Examples
from .threads import fixed_threads

# The version of epoch_batches' shuffle. It is part of the store key of every trained artifact, so
# a change of the batch order never reuses runs trained with the old one.
BATCH_ORDER = 2


@dataclass
class TrainConfig:
    """Optimisation settings. AdamW, batches shuffled per epoch with a seeded generator."""

    epochs: int = 20
    lr: float = 3e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"  # "constant" or "linear" (decay to 0 at the last step)
    seed: int = 0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in ("constant", "linear"):
            raise ValueError(f"schedule must be 'constant' or 'linear', got {self.schedule!r}")


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at a global step (a pure function of the step, so resuming needs no state)."""
    lr = config.lr
    if config.warmup_steps and step < config.warmup_steps:
        lr *= (step + 1) / config.warmup_steps
    if config.schedule == "linear":
        lr *= max(0.0, 1.0 - step / max(total_steps, 1))
    return lr


def epoch_learning_rates(config: TrainConfig, n_examples: int) -> np.ndarray:
    """Mean learning rate of each epoch of a training run (TracIn's checkpoint weights η_i)."""
    steps = math.ceil(n_examples / config.batch_size)
    total = steps * config.epochs
    return np.array([np.mean([learning_rate(config, e * steps + j, total) for j in range(steps)])
                     for e in range(config.epochs)])


def steps_at(fractions: Sequence[float], n_examples: int, config: TrainConfig) -> list[int]:
    """The global steps at the given fractions of a run (rounded, at least 1), for ``save_at_steps``.

    A fraction of 1.0 is the run's last step, whose checkpoint is the last epoch's (no step
    checkpoint is asked for it)."""
    total = math.ceil(n_examples / config.batch_size) * config.epochs
    return [max(1, round(f * total)) for f in fractions if round(f * total) < total]


def checkpoints_at(out_dir: str | Path, fractions: Sequence[float]) -> list[Path]:
    """The checkpoints of a finished run at fractions of its steps (``steps_at``): a step checkpoint,
    or the last epoch's for the run's last step. A missing one is a ``CheckpointError``."""
    epochs = list_checkpoints(out_dir)
    total = read_state(epochs[-1])["step"]
    out = []
    for f in fractions:
        step = max(1, round(f * total))
        ckpt = epochs[-1] if step >= total else step_checkpoint_dir(out_dir, step)
        if not (ckpt / STATE).is_file():
            raise CheckpointError(f"{ckpt} is missing: the run at {out_dir} was not trained with a checkpoint "
                                  f"at {f:g} of its {total} steps (save_at_steps)")
        out.append(ckpt)
    return out


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                  pool_batches: int = 32) -> list[list[int]]:
    """The batches of one epoch: a seeded shuffle, then examples of similar length grouped.

    Within pools of ``pool_batches`` batches the examples are sorted by length, so short facts
    are not padded to the length of news articles; the batch order is shuffled again.
    """
    gen = torch.Generator().manual_seed(derive_seed(seed, "batches", epoch))
    order = torch.randperm(len(lengths), generator=gen).tolist()
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start: start + pool], key=lambda i: lengths[i])
        batches += [chunk[j: j + batch_size] for j in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def train_step(model, task: CausalLMTask, examples: Examples, idx: list[int], optimizer, params, config: TrainConfig,
               step: int, total_steps: int, desc: str = "training", epoch: int = 0) -> float:
    """One optimisation step on the examples ``idx`` -- the batch's mean loss, backward, gradient
    clipping, the scheduled learning rate of global ``step``, AdamW's update -- and its loss. The one
    training step of every run here (``train``, and ``tda.counterfactual.finetune_subset``, which
    trains on a subset in the same batches)."""
    loss = task.per_example_loss(model, task.encode(examples.subset(idx))).mean()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; "
                                 f"lower the learning rate (now {config.lr})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, step, total_steps)
    optimizer.step()
    return loss.item()


def _named_trainable(model) -> tuple[list[str], list[torch.nn.Parameter]]:
    seen, names, params = set(), [], []
    for name, p in model.named_parameters():  # tied weights appear once, under their first name
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            names.append(name)
            params.append(p)
    return names, params


def train(model, tokenizer, task: CausalLMTask, examples: Examples, out_dir: str | Path,
          config: TrainConfig, desc: str = "training", save_at_steps: Sequence[int] = ()) -> dict:
    """Train ``model`` on ``examples``, checkpointing every epoch into ``out_dir``; resume if possible.

    ``save_at_steps``: global optimizer steps (1 .. epochs x batches per epoch) after which a
    checkpoint ``step-NNNNNN`` is written as well (see the module docstring); a step outside that
    range is an error. Returns the final state: ``{"epoch", "step", "epoch_losses": [...],
    "train_config": {...}}``. ``model`` ends holding the final weights.
    """
    if len(examples) == 0:
        raise ValueError("cannot train on an empty set of examples")
    with fixed_threads():  # the same weights on any machine (tda.threads)
        return _train(model, tokenizer, task, examples, Path(out_dir), config, desc, save_at_steps)


def _train(model, tokenizer, task: CausalLMTask, examples: Examples, out_dir: Path, config: TrainConfig, desc: str,
           save_at_steps: Sequence[int]) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    names, params = _named_trainable(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    extra_steps = sorted({int(x) for x in save_at_steps})
    outside = [x for x in extra_steps if not 1 <= x <= total_steps]
    if outside:
        raise ValueError(f"save_at_steps {outside} outside the run's steps 1..{total_steps} "
                         f"({config.epochs} epochs x {steps_per_epoch} batches)")

    done = drop_damaged_tail(out_dir)  # a checkpoint cut short is removed and written again
    if done:  # resume from the last complete epoch
        last = done[-1]
        state = read_state(last)
        if state.get("train_config") != asdict(config) or state.get("n_examples") != len(examples):
            raise CheckpointError(f"{last} was written by a different training run "
                                  "(other settings or data); use a fresh folder")
        lost = [x for x in extra_steps if x <= state["step"] and not (step_checkpoint_dir(out_dir, x) / STATE).is_file()]
        if lost:
            raise CheckpointError(f"{step_checkpoint_dir(out_dir, lost[0])} is missing, but {last} is later: resuming "
                                  "would never write it again; train into a fresh folder")
        trained, _ = load_checkpoint(last)
        model.load_state_dict(trained.state_dict())
        if (last / OPTIMIZER).is_file():
            optimizer.load_state_dict(load_optimizer_state(last))
    else:
        state = {"epoch": 0, "step": 0, "epoch_losses": [], "train_config": asdict(config),
                 "n_examples": len(examples)}
        save_checkpoint(model, tokenizer, None, names, state, checkpoint_dir(out_dir, 0))

    lengths = task.lengths(examples)
    model.train()
    bar = progress(range(state["epoch"], config.epochs), desc=desc, total=config.epochs,
                   initial=state["epoch"])
    for epoch in bar:
        total, count = 0.0, 0
        for idx in epoch_batches(lengths, config.batch_size, config.seed, epoch):
            loss = train_step(model, task, examples, idx, optimizer, params, config, state["step"], total_steps,
                              desc, epoch)
            state["step"] += 1
            total += loss * len(idx)
            count += len(idx)
            if state["step"] in extra_steps and not (step_checkpoint_dir(out_dir, state["step"]) / STATE).is_file():
                save_checkpoint(model, tokenizer, optimizer, names, state, step_checkpoint_dir(out_dir, state["step"]))
        state["epoch"] = epoch + 1
        state["epoch_losses"] = state["epoch_losses"] + [total / count]
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{total / count:.3f}")
        save_checkpoint(model, tokenizer, optimizer, names, state, checkpoint_dir(out_dir, epoch + 1))
    model.eval()
    return state
