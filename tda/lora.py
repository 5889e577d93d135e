"""LoRA (Hu et al. 2021): low-rank adapters on a model's projections, the base weights frozen.

DDA (Wu et al. 2024) fine-tunes its 7B models with LLaMA-Factory's LoRA and takes influence over the
adapters. Here (our own code; ``peft`` is not a dependency) every target projection ``y = f(x)``
(transformers' ``Conv1D``, ``y = x W + b`` with ``W`` of shape [in, out], as in GPT-2; or
``nn.Linear``, ``y = x W^T + b``) becomes::

    y = f(x) + (alpha / r) * x A^T B^T        A: [r, in], B: [out, r]

with ``A`` drawn uniformly in ``±1/sqrt(in)`` from a seeded generator (peft's Kaiming-uniform
bound for a = sqrt(5)) and ``B = 0``, so the adapted model *is* the base model at the start (the
checkpoint ``epoch-000`` of a LoRA run is θ0 exactly), and every non-adapter parameter is frozen
(``requires_grad`` False): ``tda.train`` trains only ``requires_grad`` parameters, and the
gradients of ``tda.gradients`` over :data:`LORA_GROUP` are over the adapters alone.

Adapters are parameters ``lora_A`` / ``lora_B`` of the adapted module itself (its class is swapped
for a subclass whose forward adds the low-rank term), so the base weights keep their names
(``transformer.h.0.attn.c_attn.weight``) and the adapters are named
``transformer.h.0.attn.c_attn.lora_A``. On disk (``tda.checkpoints``) a LoRA checkpoint is the base
model's ``save_pretrained`` files plus :data:`CONFIG_FILE` (the :class:`LoRAConfig`) and
:data:`ADAPTER_FILE` (the adapters); :func:`restore_adapters` re-applies them after loading.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers.pytorch_utils import Conv1D

CONFIG_FILE = "lora.json"
ADAPTER_FILE = "lora_adapters.safetensors"
LORA_GROUP = r"\.lora_[AB]$"  # a tda.gradients group: the adapters, and nothing else
FORMAT = 1

# Target projections by the last part of a module's name: GPT-2 (Conv1D) and Llama/Qwen2 (Linear).
ATTENTION = ("c_attn", "q_proj", "k_proj", "v_proj", "o_proj")
ATTENTION_OUTPUT = ("c_proj",)  # GPT-2's attention output; its MLP's c_proj is an MLP target
MLP = ("c_fc", "gate_proj", "up_proj", "down_proj")


class LoRAError(ValueError):
    """Adapters that cannot be applied or restored; the message names the file or setting."""


@dataclass(frozen=True)
class LoRAConfig:
    """Rank ``rank``, scale ``alpha / rank``; attention projections always, the MLP's when ``mlp``;
    ``seed``: the draw of every ``A`` (use ``tda.seeds.derive_seed``)."""

    rank: int = 8
    alpha: float = 16.0
    mlp: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise LoRAError(f"LoRA rank must be a whole number >= 1, got {self.rank!r}")
        if (isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha)
                or self.alpha <= 0):
            raise LoRAError(f"LoRA alpha must be a finite number > 0, got {self.alpha!r}")
        if not isinstance(self.mlp, bool):
            raise LoRAError(f"LoRA mlp must be True or False, got {self.mlp!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise LoRAError(f"LoRA seed must be a whole number, got {self.seed!r}")

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank


def _low_rank(module, x: torch.Tensor) -> torch.Tensor:
    return (x @ module.lora_A.T) @ module.lora_B.T * module.lora_scale


class LoRAConv1D(Conv1D):
    """``Conv1D`` (``x W + b``, W [in, out]) plus ``scale * x A^T B^T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + _low_rank(self, x)


class LoRALinear(torch.nn.Linear):
    """``nn.Linear`` (``x W^T + b``, W [out, in]) plus ``scale * x A^T B^T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + _low_rank(self, x)


_ADAPTED = {Conv1D: LoRAConv1D, torch.nn.Linear: LoRALinear}


def _in_out(module) -> tuple[int, int]:
    w = module.weight
    return (w.shape[0], w.shape[1]) if isinstance(module, Conv1D) else (w.shape[1], w.shape[0])


def target_modules(model: torch.nn.Module, mlp: bool = False) -> list[str]:
    """Names of the projections LoRA adapts, in the model's order (GPT-2's attention ``c_attn`` and
    ``attn.c_proj``; with ``mlp`` also ``mlp.c_fc`` and ``mlp.c_proj``; Llama-style names likewise)."""
    out = []
    for name, module in model.named_modules():
        if type(module) not in _ADAPTED and type(module) not in _ADAPTED.values():
            continue
        parts = name.split(".")
        last, parent = parts[-1], parts[-2] if len(parts) > 1 else ""
        attention = last in ATTENTION or (last in ATTENTION_OUTPUT and parent in ("attn", "attention", "self_attn"))
        in_mlp = last in MLP or (last in ATTENTION_OUTPUT and parent == "mlp")
        if attention or (mlp and in_mlp):
            out.append(name)
    return out


def is_lora(model: torch.nn.Module) -> bool:
    """Whether ``model`` carries adapters (:func:`apply_lora` was applied)."""
    return getattr(model, "lora_config", None) is not None


def apply_lora(model: torch.nn.Module, config: LoRAConfig) -> torch.nn.Module:
    """Add adapters to ``model`` in place (and return it): ``B = 0``, ``A`` seeded, every other
    parameter frozen. The model's function is unchanged. Applying twice is an error."""
    if is_lora(model):
        raise LoRAError(f"the model already has LoRA adapters ({model.lora_config}); apply them once")
    names = target_modules(model, config.mlp)
    if not names:
        raise LoRAError(f"{type(model).__name__} has no projection LoRA can adapt (looked for "
                        f"{', '.join(ATTENTION + ATTENTION_OUTPUT + MLP)} as Conv1D or Linear modules)")
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(config.seed)
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name]
        n_in, n_out = _in_out(module)
        w = module.weight
        bound = 1.0 / math.sqrt(n_in)
        a = (torch.rand((config.rank, n_in), generator=gen, dtype=torch.float64) * 2 - 1) * bound
        module.lora_A = torch.nn.Parameter(a.to(dtype=w.dtype, device=w.device))
        module.lora_B = torch.nn.Parameter(torch.zeros((n_out, config.rank), dtype=w.dtype, device=w.device))
        module.lora_scale = config.scale
        module.__class__ = _ADAPTED[type(module)]
    model.lora_config = config
    return model


def is_adapter(name: str) -> bool:
    """Whether a parameter (or state-dict) name is an adapter's (:data:`LORA_GROUP`)."""
    return re.search(LORA_GROUP, name) is not None


def adapter_names(model: torch.nn.Module) -> list[str]:
    """Names of the adapter parameters, in the model's order."""
    return [n for n, _ in model.named_parameters() if is_adapter(n)]


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().contiguous() for n in adapter_names(model)}


def base_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state without the adapters (what ``save_pretrained`` of the base model holds)."""
    return {k: v for k, v in model.state_dict().items() if not is_adapter(k)}


def adapter_shapes(model: torch.nn.Module, config: LoRAConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the adapters :func:`apply_lora` would add (works on the meta device)."""
    modules = dict(model.named_modules())
    out = {}
    for name in target_modules(model, config.mlp):
        n_in, n_out = _in_out(modules[name])
        out[f"{name}.lora_A"] = (config.rank, int(n_in))
        out[f"{name}.lora_B"] = (int(n_out), config.rank)
    return out


def save_adapters(model: torch.nn.Module, folder: str | Path) -> None:
    """Write :data:`CONFIG_FILE` and :data:`ADAPTER_FILE` of a LoRA model into ``folder``."""
    folder = Path(folder)
    save_file(adapter_state(model), str(folder / ADAPTER_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({**asdict(model.lora_config), "format": FORMAT}, indent=1))


def read_config(folder: str | Path) -> LoRAConfig | None:
    """The :class:`LoRAConfig` saved in ``folder``, or None when it holds no adapters."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        known = {f.name for f in fields(LoRAConfig)}
        return LoRAConfig(**{k: v for k, v in saved.items() if k in known})
    except (ValueError, TypeError, OSError) as err:
        raise LoRAError(f"{path} is damaged ({type(err).__name__}: {str(err)[:200]}); the LoRA checkpoint cannot be "
                        "restored") from err


def restore_adapters(model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """Re-apply the adapters saved in ``folder`` to its freshly loaded base ``model`` (unchanged when
    the folder holds none). A missing or damaged adapter file, or adapters that do not fit the
    model, raise :class:`LoRAError` naming the file."""
    config = read_config(folder)
    if config is None:
        return model
    path = Path(folder) / ADAPTER_FILE
    if not path.is_file():
        raise LoRAError(f"{path} is missing: {Path(folder) / CONFIG_FILE} says the checkpoint has LoRA adapters")
    try:
        saved = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise LoRAError(f"{path} is damaged ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    apply_lora(model, config)
    params = dict(model.named_parameters())
    expected = set(adapter_names(model))
    if set(saved) != expected:
        missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise LoRAError(f"{path} does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    with torch.no_grad():
        for name, tensor in saved.items():
            if tuple(tensor.shape) != tuple(params[name].shape):
                raise LoRAError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model's adapter "
                                f"{tuple(params[name].shape)}")
            params[name].copy_(tensor)
    return model


__all__ = ["CONFIG_FILE", "ADAPTER_FILE", "LORA_GROUP", "LoRAError", "LoRAConfig", "LoRAConv1D", "LoRALinear",
           "target_modules", "is_lora", "apply_lora", "is_adapter", "adapter_names", "adapter_state", "base_state_dict",
           "adapter_shapes", "save_adapters", "read_config", "restore_adapters"]
