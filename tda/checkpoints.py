"""The one checkpoint format: save, list, load, optimizer second moments, architecture check.

A training run (``tda.train``) writes ``epoch-000/`` (the starting model: TracIn and DDA need the
model before training), then ``epoch-001/``... after each epoch, into its folder. Each checkpoint
holds the model and tokenizer (``save_pretrained``), ``optimizer.pt`` (AdamW's state with the
parameter names, so Adam's second moments can correct gradients; ``epoch-000`` has none) and
``state.json`` (epoch, step, losses so far). A checkpoint is written to a hidden temporary folder
and renamed, so it is complete or absent — unless the disk fills or the machine fails before the
data reaches it: then ``drop_damaged_tail`` removes the damaged last checkpoints so that training
resumes from the last sound one, and ``run_problems`` tells a finished run with a checkpoint
folder missing (the store's reuse check). A corrupt checkpoint inside a store entry is an error
that names the entry and the command that removes it.

The attribution methods take a checkpoint as a path (a training checkpoint or any saved Hugging
Face model) or as a model already in memory (the type ``Checkpoint``).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Sequence, Union

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from .lora import ADAPTER_FILE, CONFIG_FILE as LORA_CONFIG, LoRAError, adapter_shapes, base_state_dict, is_lora
from .lora import read_config as read_lora_config
from .lora import restore_adapters, save_adapters
from .models import load_model
from .store import entry_of, file_problem, remove_advice

STATE = "state.json"
OPTIMIZER = "optimizer.pt"
Checkpoint = Union[str, Path, torch.nn.Module]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt."""


# ---------------------------------------------------------------------------------------------
# a training run's checkpoints
# ---------------------------------------------------------------------------------------------
def checkpoint_dir(out_dir: str | Path, epoch: int) -> Path:
    return Path(out_dir) / f"epoch-{epoch:03d}"


def step_checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    """A checkpoint written after global step ``step`` inside an epoch (``tda.train``'s ``save_at_steps``)."""
    return Path(out_dir) / f"step-{step:06d}"


def list_step_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete step checkpoints (``step_checkpoint_dir``) in order of step; [] when there are none."""
    out = Path(out_dir)
    if not out.is_dir():
        raise CheckpointError(f"no checkpoint folder at {out}")
    return sorted(p for p in out.glob("step-[0-9][0-9][0-9][0-9][0-9][0-9]") if (p / STATE).is_file())


def checkpoint_epoch(checkpoint: str | Path) -> int:
    """The epoch of a checkpoint folder (``checkpoint_dir``'s inverse: ``.../epoch-003`` -> 3)."""
    name = Path(checkpoint).name
    prefix, _, digits = name.partition("-")
    if prefix != "epoch" or not digits.isdigit():
        raise ValueError(f"{name!r} is not a checkpoint folder name (epoch-NNN)")
    return int(digits)


def save_checkpoint(model, tokenizer, optimizer, names: Sequence[str], state: dict, dest: Path) -> None:
    """Write a checkpoint atomically (a hidden temporary folder, renamed when complete).

    ``names`` are the parameter names in the optimizer's order; ``optimizer`` None writes no
    optimizer state (the starting checkpoint). A LoRA model (``tda.lora``) is written as its base
    model's files plus its adapters (``lora.json``, ``lora_adapters.safetensors``); loading
    re-applies them."""
    tmp = dest.with_name("." + dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if is_lora(model):
        model.save_pretrained(tmp, state_dict=base_state_dict(model))
        save_adapters(model, tmp)
    else:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "param_names": list(names)}, tmp / OPTIMIZER)
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    tmp.rename(dest)


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints in order of epoch (incomplete temporary folders are ignored)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise CheckpointError(f"no checkpoint folder at {out}")
    return sorted(p for p in out.glob("epoch-[0-9][0-9][0-9]") if (p / STATE).is_file())


def _in_store(ckpt: str | Path) -> str:
    """For an error about a checkpoint: the store entry it lies in and how to rebuild it ('' outside
    the store)."""
    entry = entry_of(ckpt)
    return f"; it belongs to the store entry {entry}: {remove_advice(entry)}" if entry else ""


def _brief(err: Exception) -> str:
    """An error's first line, at most 200 characters (torch's load errors run to a page, and advise
    loading with ``weights_only=False``, which does not help with a damaged file)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def checkpoint_problem(ckpt: str | Path) -> str | None:
    """What is wrong with a checkpoint's files, or None: ``state.json``, ``config.json`` and the
    weights must be there, and every file well-formed (``tda.store.file_problem``: JSON parses, a
    safetensors or ``optimizer.pt`` file is not cut short). Reads headers only."""
    ckpt = Path(ckpt)
    for name in (STATE, "config.json"):
        if not (ckpt / name).is_file():
            return f"{name} is missing"
    if not any(ckpt.glob("*.safetensors")) and not (ckpt / "pytorch_model.bin").is_file():
        return "the model's weights are missing"
    if (ckpt / LORA_CONFIG).is_file() and not (ckpt / ADAPTER_FILE).is_file():
        return f"{ADAPTER_FILE} is missing ({LORA_CONFIG} says the checkpoint has LoRA adapters)"
    for path in sorted(p for p in ckpt.iterdir() if p.is_file()):
        problem = file_problem(path)
        if problem:
            return f"{path.name}: {problem}"
    return None


def drop_damaged_tail(out_dir: str | Path) -> list[Path]:
    """The complete checkpoints of a training folder, after removing the damaged ones at its end.

    While the last checkpoint has a :func:`checkpoint_problem` (a write cut short by a full disk or
    a crash), it is removed with a warning naming it and the fault, so that ``tda.train.train``
    resumes from the last sound checkpoint and writes the rest again — identically, since each
    epoch's batches and learning rates are a function of the seed and the step. Damage before the
    tail is left for the readers' errors (resuming never reads it)."""
    done = list_checkpoints(out_dir)
    while done and (problem := checkpoint_problem(done[-1])):
        last = done.pop()
        warnings.warn(f"checkpoint {last} is damaged ({problem}); removing it and resuming from "
                      f"{done[-1].name if done else 'the start'}", stacklevel=2)
        aside = last.with_name("." + last.name + ".damaged")
        if aside.exists():
            shutil.rmtree(aside)
        last.rename(aside)  # out of list_checkpoints' sight at once, even if the removal is cut short
        shutil.rmtree(aside)
    return done


def run_problems(out_dir: str | Path) -> list[str]:
    """What a finished training run's folder lacks: every epoch's checkpoint, ``epoch-000`` to the
    number of epochs its training settings (``state.json``) name; ``[]`` when nothing is missing.

    The store runs it when it reuses a training entry (``Store.get_or_create(check=...)``), so a
    checkpoint folder deleted by hand is noticed even in entries written before manifests listed
    their files — otherwise the previous epoch would silently pass for the final model."""
    try:
        done = list_checkpoints(out_dir)
    except CheckpointError as err:
        return [str(err)]
    if not done:
        return [f"{out_dir} holds no complete checkpoint"]
    try:
        epochs = int(read_state(done[-1])["train_config"]["epochs"])
    except (CheckpointError, KeyError, TypeError, ValueError) as err:
        return [f"{done[-1] / STATE} names no training settings ({type(err).__name__}: {err})"]
    present = {p.name for p in done}
    return [f"{checkpoint_dir(out_dir, e)} is missing (the run trains {epochs} epochs: epoch-000 to "
            f"{checkpoint_dir(out_dir, epochs).name})"
            for e in range(epochs + 1) if checkpoint_dir(out_dir, e).name not in present]


def read_state(ckpt: str | Path) -> dict:
    path = Path(ckpt) / STATE
    if not path.is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint: {STATE} is missing{_in_store(ckpt)}")
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path} is corrupt ({_brief(err)}){_in_store(ckpt)}") from err


def load_checkpoint(ckpt: str | Path):
    """(model, tokenizer) of a checkpoint, with a clear error when it is missing or corrupt (naming
    the store entry it lies in and the command that removes it)."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint {ckpt} does not exist")
    read_state(ckpt)
    try:
        model, tokenizer = load_model(ckpt)
    except Exception as err:  # safetensors, json and HF errors all mean the same thing here
        raise CheckpointError(f"checkpoint {ckpt} is corrupt or incomplete ({_brief(err)}){_in_store(ckpt)}") from err
    return _with_adapters(model, ckpt), tokenizer


def _with_adapters(model, folder: Path):
    """``model`` with the LoRA adapters saved in ``folder`` re-applied (as it is when there are none);
    a missing or damaged adapter file is a CheckpointError naming it."""
    try:
        return restore_adapters(model, folder)
    except LoRAError as err:
        raise CheckpointError(f"checkpoint {folder}: {err}{_in_store(folder)}") from err


def _optimizer_file(ckpt: str | Path) -> dict:
    path = Path(ckpt) / OPTIMIZER
    if not path.is_file():
        raise CheckpointError(f"{ckpt} has no optimizer state ({OPTIMIZER}); the starting checkpoint "
                              "epoch-000 never has one")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is corrupt ({_brief(err)}){_in_store(ckpt)}") from err


def load_optimizer_state(ckpt: str | Path) -> dict:
    """The optimizer's ``state_dict`` saved in a checkpoint (to resume training)."""
    return _optimizer_file(ckpt)["optimizer"]


def second_moments(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """AdamW's ``exp_avg_sq`` per parameter name at a checkpoint (FTRACE's optimizer correction).

    A bare model has no optimizer state (ValueError); a checkpoint without ``optimizer.pt`` raises
    CheckpointError."""
    if isinstance(checkpoint, torch.nn.Module):
        raise ValueError("optimizer correction needs checkpoint paths (whose optimizer.pt holds AdamW's "
                         "second moments) or explicit second moments, not bare models")
    saved = _optimizer_file(checkpoint)
    names, state = saved["param_names"], saved["optimizer"]["state"]
    return {name: state[i]["exp_avg_sq"] for i, name in enumerate(names) if i in state}


# ---------------------------------------------------------------------------------------------
# checkpoints as the attribution methods take them: paths or models
# ---------------------------------------------------------------------------------------------
def as_checkpoint_list(checkpoints) -> list[Checkpoint]:
    """A non-empty list of checkpoints (paths or models); a single one is wrapped in a list."""
    if isinstance(checkpoints, (str, Path, torch.nn.Module)):
        return [checkpoints]
    out = list(checkpoints) if checkpoints is not None else []
    if not out:
        raise ValueError("the list of checkpoints is empty: give at least one checkpoint path or model")
    for c in out:
        if not isinstance(c, (str, Path, torch.nn.Module)):
            raise TypeError(f"a checkpoint is a path or a torch module, got {type(c).__name__}")
    return out


def load_checkpoint_model(checkpoint: Checkpoint) -> torch.nn.Module:
    """The model of a checkpoint: a module as given, a training checkpoint or any saved HF model."""
    if isinstance(checkpoint, torch.nn.Module):
        return checkpoint
    path = Path(checkpoint)
    if (path / STATE).is_file():
        return load_checkpoint(path)[0]
    return _with_adapters(load_model(path)[0], path)


def architecture_signature(checkpoint: Checkpoint) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, without loading weights for a path (built on the meta device)."""
    if isinstance(checkpoint, torch.nn.Module):
        return {n: tuple(p.shape) for n, p in checkpoint.named_parameters()}
    path = Path(checkpoint)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint {path} has no config.json: not a saved model")
    config = AutoConfig.from_pretrained(path)
    cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    try:
        lora = read_lora_config(path)
    except LoRAError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from err
    adapters = adapter_shapes(model, lora) if lora is not None else {}
    return {**{n: tuple(p.shape) for n, p in model.named_parameters()}, **adapters}


def _label(ckpt: Checkpoint) -> str:
    return type(ckpt).__name__ if isinstance(ckpt, torch.nn.Module) else str(ckpt)


def check_same_architecture(checkpoints: Sequence[Checkpoint]) -> None:
    """Raise ValueError if the checkpoints' parameter names or shapes differ."""
    ref = architecture_signature(checkpoints[0])
    for i, ckpt in enumerate(checkpoints[1:], start=1):
        sig = architecture_signature(ckpt)
        if sig == ref:
            continue
        diff = sorted(set(ref) ^ set(sig)) or [n for n in ref if ref[n] != sig[n]]
        name = diff[0]
        raise ValueError(f"checkpoints mix architectures: checkpoint 0 ({_label(checkpoints[0])}) and "
                         f"checkpoint {i} ({_label(ckpt)}) differ at parameter {name!r} "
                         f"({ref.get(name, 'absent')} vs {sig.get(name, 'absent')})")


__all__ = ["STATE", "OPTIMIZER", "Checkpoint", "CheckpointError", "checkpoint_dir", "step_checkpoint_dir",
           "list_step_checkpoints", "checkpoint_epoch", "save_checkpoint",
           "list_checkpoints", "checkpoint_problem", "drop_damaged_tail", "run_problems", "read_state",
           "load_checkpoint", "load_optimizer_state", "second_moments",
           "as_checkpoint_list", "load_checkpoint_model", "architecture_signature", "check_same_architecture"]
