"""Which device a run computes on, and a task whose batches land there.

The package builds every batch in one place, ``CausalLMTask.encode`` (and ``Seq2SeqTask.encode``),
on the CPU. :func:`on_device` wraps a task so that its batches are moved to the model's device:
training (``tda.train.train``), losses and hidden states then run on a CUDA device unchanged. Parts
that build tensors outside ``encode`` still compute on the CPU: greedy generation
(``tda.hallucination``), and the per-example gradient engine (``tda.gradients``: feature rows,
projections and hooks are CPU tensors). Run those on a CPU copy of the model (checkpoints load on
the CPU) until they are device-aware.
"""

from __future__ import annotations

import copy

import torch

DEVICES = ("auto", "cpu", "cuda")


def pick_device(choice: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA device if there is one, else the CPU; ``"cpu"``; ``"cuda"`` (an
    error naming the problem when no CUDA device is visible)."""
    if choice not in DEVICES and not str(choice).startswith("cuda:"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), got {choice!r}")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {choice!r} was asked for, but no CUDA device is visible (torch "
                           f"{torch.__version__}, built {'with' if torch.backends.cuda.is_built() else 'without'} "
                           "CUDA): install a CUDA build of torch, or use device 'cpu'")
    return device


def on_device(task, device: torch.device | str):
    """A copy of ``task`` whose ``encode`` returns its tensors on ``device`` (``task`` itself on the CPU)."""
    device = torch.device(device)
    if device.type == "cpu":
        return task
    moved = copy.copy(task)
    encode = task.encode

    def encode_on_device(examples):
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in encode(examples).items()}

    moved.encode = encode_on_device
    return moved


__all__ = ["DEVICES", "pick_device", "on_device"]
