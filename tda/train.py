"""Pre-training and fine-tuning with a checkpoint (and AdamW's state) at the end of every epoch.

Checkpoint layout in ``out_dir``: ``epoch-000/`` is the starting model (TracIn and DDA need the
model before training), ``epoch-001/``... follow each epoch. Each holds the model and tokenizer
(``save_pretrained``), ``optimizer.pt`` (AdamW state with parameter names, so Adam's second
moments can correct gradients) and ``state.json`` (epoch, step, losses so far). A checkpoint is
written to a hidden temporary folder and renamed, so it is complete or absent. Training resumes
from the last complete checkpoint, and since each epoch's shuffle is seeded by (seed, epoch) and
the model has no dropout, an interrupted run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .progress import progress
from .task import CausalLMTask, Examples

STATE = "state.json"
OPTIMIZER = "optimizer.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt."""


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


def checkpoint_dir(out_dir: str | Path, epoch: int) -> Path:
    return Path(out_dir) / f"epoch-{epoch:03d}"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints in order of epoch (incomplete temporary folders are ignored)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise CheckpointError(f"no checkpoint folder at {out}")
    return sorted(p for p in out.glob("epoch-[0-9][0-9][0-9]") if (p / STATE).is_file())


def read_state(ckpt: str | Path) -> dict:
    path = Path(ckpt) / STATE
    if not path.is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint: {STATE} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err


def load_checkpoint(ckpt: str | Path):
    """(model, tokenizer) of a checkpoint, with a clear error when it is missing or corrupt."""
    from .models import load_model

    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint {ckpt} does not exist")
    read_state(ckpt)
    try:
        return load_model(ckpt)
    except Exception as err:  # safetensors, json and HF errors all mean the same thing here
        raise CheckpointError(f"checkpoint {ckpt} is corrupt or incomplete: {err}") from err


def adam_second_moments(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """AdamW's ``exp_avg_sq`` per parameter name at a checkpoint (FTRACE's optimizer correction)."""
    path = Path(ckpt) / OPTIMIZER
    if not path.is_file():
        raise CheckpointError(f"{ckpt} has no optimizer state ({OPTIMIZER}); the starting checkpoint "
                              "epoch-000 never has one")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err
    names, state = saved["param_names"], saved["optimizer"]["state"]
    return {name: state[i]["exp_avg_sq"] for i, name in enumerate(names) if i in state}


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                  pool_batches: int = 32) -> list[list[int]]:
    """The batches of one epoch: a seeded shuffle, then examples of similar length grouped.

    Within pools of ``pool_batches`` batches the examples are sorted by length, so short facts
    are not padded to the length of news articles; the batch order is shuffled again.
    """
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start: start + pool], key=lambda i: lengths[i])
        batches += [chunk[j: j + batch_size] for j in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def _named_trainable(model) -> tuple[list[str], list[torch.nn.Parameter]]:
    seen, names, params = set(), [], []
    for name, p in model.named_parameters():  # tied weights appear once, under their first name
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            names.append(name)
            params.append(p)
    return names, params


def _save_checkpoint(model, tokenizer, optimizer, names, state: dict, dest: Path) -> None:
    tmp = dest.with_name("." + dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "param_names": names}, tmp / OPTIMIZER)
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    tmp.rename(dest)


def train(model, tokenizer, task: CausalLMTask, examples: Examples, out_dir: str | Path,
          config: TrainConfig, desc: str = "training") -> dict:
    """Train ``model`` on ``examples``, checkpointing every epoch into ``out_dir``; resume if possible.

    Returns the final state: ``{"epoch", "step", "epoch_losses": [...], "train_config": {...}}``.
    ``model`` ends holding the final weights.
    """
    if len(examples) == 0:
        raise ValueError("cannot train on an empty set of examples")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, params = _named_trainable(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    done = list_checkpoints(out_dir)
    if done:  # resume from the last complete epoch
        last = done[-1]
        state = read_state(last)
        if state.get("train_config") != asdict(config) or state.get("n_examples") != len(examples):
            raise CheckpointError(f"{last} was written by a different training run "
                                  "(other settings or data); use a fresh folder")
        from .models import load_model
        trained, _ = load_model(last)
        model.load_state_dict(trained.state_dict())
        if (last / OPTIMIZER).is_file():
            saved = torch.load(last / OPTIMIZER, map_location="cpu", weights_only=True)
            optimizer.load_state_dict(saved["optimizer"])
    else:
        state = {"epoch": 0, "step": 0, "epoch_losses": [], "train_config": asdict(config),
                 "n_examples": len(examples)}
        _save_checkpoint(model, tokenizer, None, names, state, checkpoint_dir(out_dir, 0))

    lengths = task.lengths(examples)
    model.train()
    bar = progress(range(state["epoch"], config.epochs), desc=desc, total=config.epochs,
                   initial=state["epoch"])
    for epoch in bar:
        total, count = 0.0, 0
        for idx in epoch_batches(lengths, config.batch_size, config.seed, epoch):
            batch = task.encode(examples.subset(idx))
            loss = task.per_example_loss(model, batch).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at epoch {epoch + 1}; "
                                         f"lower the learning rate (now {config.lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, state["step"], total_steps)
            optimizer.step()
            state["step"] += 1
            total += loss.item() * len(idx)
            count += len(idx)
        state["epoch"] = epoch + 1
        state["epoch_losses"] = state["epoch_losses"] + [total / count]
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{total / count:.3f}")
        _save_checkpoint(model, tokenizer, optimizer, names, state, checkpoint_dir(out_dir, epoch + 1))
    model.eval()
    return state
