"""Per-example gradient features: the engine behind TracIn, TRAK and DDA.

Every gradient here is the gradient of ``task.per_example_loss`` on one example (the mean loss
over its target tokens) with respect to a chosen *parameter group*:

- ``"all"``: every distinct parameter (tied input/output embeddings counted once);
- ``"embedding"``: the input embedding matrix (``wte`` in GPT-2; with tied weights its gradient
  also carries the output layer's share, as in FTRACE's "embedding layer" runs);
- ``"block.i"``: transformer block ``i`` (for an encoder-decoder, block ``i`` of both stacks;
  ``"encoder.block.i"`` / ``"decoder.block.i"`` pick one stack);
- ``"head"``: the final layer norm of the output stack, plus ``lm_head`` when it is not tied;
- a regular expression (``str`` that is not an alias, or ``re.Pattern``) searched in parameter
  names, or a list of any of these (their union, in the model's order).

How they are computed. Examples are sorted by length and cut into chunks (so short facts are not
padded to the length of news documents); each chunk is one call of
``torch.func.vmap(torch.func.grad(loss_of_one_example))`` over ``functional_call`` of the model,
where each row is re-batched as a batch of one. Causal rows are right-padded with labels -100 and
no attention mask, so padding never reaches the loss. Where vmap fails (Hugging Face T5 builds its
attention mask with data-dependent control flow) ``method="auto"`` falls back, with a warning, to
a hook-free loop of single-example ``torch.autograd.grad`` calls; ``method="loop"`` forces it.
The model is put in eval mode for the duration (no dropout), and its state is not changed.

Projected features have a faster third path (``hook_features``, ``method="hooks"``, chosen by
``"auto"`` when it applies): forward hooks keep each Linear / Conv1D / Embedding / LayerNorm
input, one batched backward gives the gradient of each module's output, and the Kronecker
projection of a weight's per-example gradient is ``(x_b A)^T (delta_b B)`` — so per-example
gradients are never formed and the cost is about one training step (vmap pays for writing
every example's full gradient to memory, which costs more than the training step itself here).
It is used only after a self-check against the loop on two examples, and not with optimizer
correction (an elementwise division does not factorise). Tests hold all three paths equal.

Optimizer correction (FTRACE's code, also TrackStar): each gradient is divided elementwise by
``sqrt(exp_avg_sq) + eps`` with AdamW's second moments at the checkpoint (``eps=1e-7``).

Random projection (``Projector``): features are ``phi(g) = sum_t P_t g_t`` over parameter tensors
``t``, each ``P_t`` an independent seeded matrix with entries of variance ``1/k`` (Rademacher
``+-1/sqrt(k)`` or Gaussian). No ``(all parameters x k)`` matrix is ever built:

- a 1-D tensor, or any tensor whose dense block has at most ``dense_max_entries`` entries, gets a
  dense block generated in fixed row blocks of 4,096 rows, each seeded by (seed, name, block), so
  the matrix does not depend on memory settings;
- larger tensors, reshaped to ``m x n`` (first dimension x the rest), get a factorised
  (Kronecker) projection ``A^T G B`` with ``A`` (m x k1) and ``B`` (n x k2), ``k1 * k2 = k``, so the
  block is ``kron(A, B)`` and costs ``m*n*min(k1, k2)`` per example instead of ``m*n*k``.

Inner-product error bound (proved in the docstring of ``Projector.variance_bound``): the estimate
``<phi(g), phi(h)>`` is unbiased and its variance is at most::

    (|g|^2 |h|^2 + <g,h>^2) / k  +  sum over Kronecker tensors t of (2/k1 + 2/k2 + 3/k) |g_t|^2 |h_t|^2

for Gaussian and (no larger) for Rademacher entries. The first term is the dense
Johnson-Lindenstrauss variance; the second is the price of factorising. It is near its worst for
low-rank gradients (a per-example gradient of a linear layer has rank <= the number of tokens),
where a single tensor's inner product is estimated with relative error ~sqrt(4/sqrt(k)) (0.35 at
k=1024); it shrinks when the gradient's mass is spread over many tensors. Measured on the "small"
model at initialisation (48 fact sentences, all parameters, k=1024): relative error of the
pairwise dot products 0.04 with this projection against 0.03 with a dense one (correlation with
the exact dots 0.97 vs 0.98). ``structure="dense"`` removes the second term at ``numel * k``
work per example (use it for small groups such as the embedding matrix).

TracIn without projection uses ``gradient_dots``: scores accumulate ``G_q @ G_c^T`` tensor by
tensor, so full flattened gradient matrices are never allocated (about 4x faster here, see the
design notes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from .progress import progress
from .task import CausalLMTask, Examples

GroupSpec = Union[str, "re.Pattern[str]", Sequence[Union[str, "re.Pattern[str]"]]]
Checkpoint = Union[str, Path, torch.nn.Module]

DEFAULT_EPS = 1e-7
_BLOCK_RE = re.compile(r"^(?:(encoder|decoder)\.)?block\.(\d+)$")
_BLOCK_CONTAINERS = ("h", "layers", "layer", "block", "blocks")
_FINAL_NORMS = ("ln_f", "final_layer_norm", "norm", "final_layernorm", "final_norm")


class NonFiniteGradientError(FloatingPointError):
    """A per-example gradient (or a feature or dot product built from it) is NaN or infinite."""


# ---------------------------------------------------------------------------------------------
# Parameter groups
# ---------------------------------------------------------------------------------------------
def parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the model's distinct parameters, in order (a tied weight appears once)."""
    return [name for name, _ in model.named_parameters()]


def _available(model) -> str:
    return ", ".join(parameter_names(model))


def _block_of(name: str) -> tuple[str, int] | None:
    """(stack prefix, block index) of a parameter inside a numbered transformer block."""
    parts = name.split(".")
    for j in range(len(parts) - 2):
        if parts[j] in _BLOCK_CONTAINERS and parts[j + 1].isdigit():
            return ".".join(parts[:j]), int(parts[j + 1])
    return None


def _embedding_names(model) -> list[str]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is None or id(emb.weight) not in by_id:
        return []
    return [by_id[id(emb.weight)]]


def _head_names(model) -> list[str]:
    names = parameter_names(model)
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    out = []
    for name in names:
        parts = name.split(".")
        if _block_of(name) is None and len(parts) >= 2 and parts[-2] in _FINAL_NORMS:
            if not seq2seq or name.startswith("decoder.") or ".decoder." in name:
                out.append(name)
    by_id = {id(p): n for n, p in model.named_parameters()}
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # A tied lm_head is the input embedding: it is not listed again (named_parameters drops it).
    if out_emb is not None and id(out_emb.weight) in by_id:
        tied = _embedding_names(model)
        if by_id[id(out_emb.weight)] not in tied:
            out.append(by_id[id(out_emb.weight)])
    return out


def _one_group(model, group) -> list[str]:
    names = parameter_names(model)
    if isinstance(group, re.Pattern):
        return [n for n in names if group.search(n)]
    if not isinstance(group, str):
        raise TypeError(f"a parameter group is a string, a compiled regex or a list of them; got "
                        f"{type(group).__name__}")
    if group == "all":
        return names
    if group in names:  # an exact parameter name is itself, not a regular expression
        return [group]
    if group == "embedding":
        return _embedding_names(model)
    if group == "head":
        return _head_names(model)
    match = _BLOCK_RE.match(group)
    if match:
        stack, index = match.group(1), int(match.group(2))
        out = []
        for n in names:
            found = _block_of(n)
            if found and found[1] == index and (stack is None or found[0].split(".")[-1] == stack):
                out.append(n)
        return out
    try:
        pattern = re.compile(group)
    except re.error as err:
        raise ValueError(f"parameter group {group!r} is neither a known group (all, embedding, head, "
                         f"block.i) nor a valid regular expression: {err}") from err
    return [n for n in names if pattern.search(n)]


def select_parameters(model: torch.nn.Module, group: GroupSpec = "all") -> list[str]:
    """Parameter names of a group (see the module docstring), in the model's order.

    A list is the union of its members. A group (or a member of a list) that matches no
    parameter raises ValueError naming it and listing the model's parameter names.
    """
    members = [group] if isinstance(group, (str, re.Pattern)) else list(group)
    if not members:
        raise ValueError("an empty list of parameter groups selects nothing")
    chosen: set[str] = set()
    for member in members:
        found = _one_group(model, member)
        if not found:
            label = member.pattern if isinstance(member, re.Pattern) else member
            raise ValueError(f"parameter group {label!r} matches no parameter of "
                             f"{type(model).__name__}; its parameters are: {_available(model)}")
        chosen.update(found)
    return [n for n in parameter_names(model) if n in chosen]


# ---------------------------------------------------------------------------------------------
# Checkpoints
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


def architecture_signature(checkpoint: Checkpoint) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, without loading weights for a path (built on the meta device)."""
    if isinstance(checkpoint, torch.nn.Module):
        return {n: tuple(p.shape) for n, p in checkpoint.named_parameters()}
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    path = Path(checkpoint)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint {path} has no config.json: not a saved model")
    config = AutoConfig.from_pretrained(path)
    cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        model = cls.from_config(config)
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


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


def _label(ckpt: Checkpoint) -> str:
    return type(ckpt).__name__ if isinstance(ckpt, torch.nn.Module) else str(ckpt)


def load_checkpoint_model(checkpoint: Checkpoint) -> torch.nn.Module:
    """The model of a checkpoint: a module as given, a training checkpoint or any saved HF model."""
    if isinstance(checkpoint, torch.nn.Module):
        return checkpoint
    from .models import load_model
    from .train import STATE, load_checkpoint

    path = Path(checkpoint)
    model, _ = load_checkpoint(path) if (path / STATE).is_file() else load_model(path)
    return model


def second_moments(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """AdamW ``exp_avg_sq`` of a training checkpoint (a path; a bare model has no optimizer state)."""
    if isinstance(checkpoint, torch.nn.Module):
        raise ValueError("optimizer correction needs checkpoint paths (whose optimizer.pt holds AdamW's "
                         "second moments) or explicit second moments, not bare models")
    from .train import adam_second_moments

    return adam_second_moments(checkpoint)


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Evaluate with dropout off, restoring the model's training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# Per-example gradients
# ---------------------------------------------------------------------------------------------
class _Functional:
    """Calls ``model`` with some parameters replaced, the way a task calls a model."""

    def __init__(self, model, params):
        self.model, self.params = model, params
        self.config = getattr(model, "config", None)

    def __call__(self, *args, **kwargs):
        return functional_call(self.model, self.params, args, kwargs)


def check_examples(examples: Examples, what: str) -> None:
    """Raise TypeError for anything but ``Examples`` and ValueError for an empty set."""
    if not isinstance(examples, Examples):
        raise TypeError(f"{what} must be tda.task.Examples, got {type(examples).__name__}")
    if len(examples) == 0:
        raise ValueError(f"{what} is empty")


def _chunks(task: CausalLMTask, examples: Examples, batch_size: int) -> list[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(np.asarray(task.lengths(examples)), kind="stable")
    return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]


def _denominators(names, correction, eps, params) -> dict[str, torch.Tensor] | None:
    if correction is None:
        return None
    missing = [n for n in names if n not in correction]
    if missing:
        raise ValueError(f"optimizer second moments are missing for {missing[:5]} "
                         f"({len(missing)} parameters); they hold: {', '.join(list(correction)[:20])}")
    out = {}
    for n in names:
        v = correction[n].detach().to(dtype=params[n].dtype)
        if tuple(v.shape) != tuple(params[n].shape):
            raise ValueError(f"second moment of {n} has shape {tuple(v.shape)}, the parameter "
                             f"{tuple(params[n].shape)}: the moments belong to another architecture")
        out[n] = v.sqrt().add_(eps)
    return out


def iter_gradients(model: torch.nn.Module, task: CausalLMTask, examples: Examples, group: GroupSpec = "all", *,
                   batch_size: int = 64, method: str = "auto", correction: Mapping[str, torch.Tensor] | None = None,
                   eps: float = DEFAULT_EPS, desc: str | None = None
                   ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield ``(indices, {name: gradients [len(indices), *shape]})`` chunk by chunk.

    ``indices`` index ``examples`` (chunks follow a length-sorted order). ``method`` is "vmap",
    "loop" or "auto" (vmap, falling back to the loop with a warning if vmap fails on the model).
    ``correction``, AdamW ``exp_avg_sq`` per parameter name, divides each gradient elementwise by
    ``sqrt(exp_avg_sq) + eps``. Gradients are not checked for NaN here (the consumers check what
    they produce, which costs one pass less); use ``gradient_features`` for checked output.
    """
    check_examples(examples, "examples")
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"method must be 'auto', 'vmap' or 'loop', got {method!r}")
    names = select_parameters(model, group)
    all_params = dict(model.named_parameters())
    selected = {n: all_params[n].detach() for n in names}
    rest = {n: p.detach() for n, p in all_params.items() if n not in selected}
    denom = _denominators(names, correction, eps, selected)

    def loss_one(sel, row):
        batch = {k: v.unsqueeze(0) for k, v in row.items()}
        return task.per_example_loss(_Functional(model, {**rest, **sel}), batch)[0]

    per_example = vmap(grad(loss_one), in_dims=(None, 0))

    def by_loop(idx):
        out = {n: torch.empty((len(idx),) + tuple(p.shape), dtype=p.dtype) for n, p in selected.items()}
        leaves = {n: p.detach().requires_grad_(True) for n, p in selected.items()}  # shares storage
        for row, i in enumerate(idx):
            with torch.enable_grad():
                loss = task.per_example_loss(_Functional(model, {**rest, **leaves}),
                                             task.encode(examples.subset([int(i)])))[0]
                grads = (torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                         if loss.requires_grad else [None] * len(leaves))  # the group is unused
            for n, g in zip(leaves, grads):
                if g is None:
                    out[n][row].zero_()
                else:
                    out[n][row].copy_(g)
        return out

    state = {"loop": method == "loop"}

    def compute(idx):
        if state["loop"]:
            return by_loop(idx)
        batch = task.encode(examples.subset(idx.tolist()))
        try:
            return per_example(selected, batch)
        except RuntimeError as err:
            if method == "vmap":
                raise
            warnings.warn(f"vmap over {type(model).__name__} failed ({str(err).splitlines()[0][:200]}); "
                          "computing per-example gradients with a loop of single backwards "
                          "(slower, same values)", RuntimeWarning, stacklevel=3)
            state["loop"] = True
            return by_loop(idx)

    chunks = _chunks(task, examples, batch_size)
    for idx in progress(chunks, desc=desc or f"gradients ({len(examples)} examples)", total=len(chunks)):
        # The contexts are entered per chunk, not across ``yield``: grad mode is thread-global.
        with eval_mode(model), torch.no_grad():
            grads = compute(idx)
            if denom is not None:
                for n in names:
                    grads[n].div_(denom[n])
        yield idx, grads


def _raise_nonfinite(examples: Examples, idx: np.ndarray, bad_rows, what: str) -> None:
    rows = [int(r) for r in np.flatnonzero(np.asarray(bad_rows))]
    i = int(idx[rows[0]]) if rows else int(idx[0])
    raise NonFiniteGradientError(
        f"{what} is NaN or infinite for {max(len(rows), 1)} example(s), first example {i} "
        f"(prompt {examples.prompts[i][:60]!r}, target {examples.targets[i][:60]!r}); the loss "
        "overflows at these weights (diverged checkpoint?) or a correction divided by ~0")


# ---------------------------------------------------------------------------------------------
# Random projection
# ---------------------------------------------------------------------------------------------
_ROWS_PER_BLOCK = 4096


def _seed_for(*parts) -> int:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _factor(k: int) -> tuple[int, int]:
    k1 = int(math.isqrt(k))
    while k % k1:
        k1 -= 1
    return k1, k // k1


@dataclass(frozen=True)
class _Plan:
    kind: str  # "dense" or "kron"
    m: int
    n: int


class Projector:
    """Seeded random projection of per-parameter-tensor gradients to ``dim`` dimensions.

    ``phi(g) = sum_t P_t g_t`` with an independent matrix per tensor name (seeded by ``seed``,
    the name and the shape), entries of variance ``1/dim``: ``kind="rademacher"`` (+-1/sqrt(dim))
    or ``"gaussian"``. ``structure="auto"`` projects small or 1-D tensors densely and larger ones
    with a Kronecker factorisation (see the module docstring); ``"dense"`` projects every tensor
    densely (exact Johnson-Lindenstrauss, ``numel * dim`` work per example, blocks regenerated on
    the fly when they exceed ``cache_bytes``); ``"kronecker"`` factorises every tensor with 2+
    dimensions. The same seed, name and shape always give the same matrix.
    """

    def __init__(self, dim: int, seed: int = 0, kind: str = "rademacher", structure: str = "auto",
                 dense_max_entries: int = 1 << 22, cache_bytes: int = 512 << 20):
        if int(dim) < 1:
            raise ValueError(f"projection dimension must be >= 1, got {dim}")
        if kind not in ("rademacher", "gaussian"):
            raise ValueError(f"projection kind must be 'rademacher' or 'gaussian', got {kind!r}")
        if structure not in ("auto", "dense", "kronecker"):
            raise ValueError(f"projection structure must be 'auto', 'dense' or 'kronecker', got {structure!r}")
        self.dim, self.seed, self.kind, self.structure = int(dim), int(seed), kind, structure
        self.dense_max_entries, self.cache_bytes = int(dense_max_entries), int(cache_bytes)
        self.k1, self.k2 = _factor(self.dim)
        self._cache: dict[tuple, torch.Tensor] = {}
        self._cached_bytes = 0

    def describe(self) -> dict:
        """The settings that fix the matrices (stored with features on disk)."""
        return {"dim": self.dim, "seed": self.seed, "kind": self.kind, "structure": self.structure,
                "dense_max_entries": self.dense_max_entries, "factors": [self.k1, self.k2]}

    # -- matrices --------------------------------------------------------------------------
    def plan(self, name: str, shape: Sequence[int]) -> _Plan:
        """How one tensor is projected: densely or as ``A^T G B`` of its ``m x n`` reshape."""
        shape = tuple(int(s) for s in shape)
        numel = int(np.prod(shape)) if shape else 1
        m = shape[0] if len(shape) >= 2 else numel
        n = numel // m if len(shape) >= 2 else 1
        kron = len(shape) >= 2 and (self.structure == "kronecker" or
                                    (self.structure == "auto" and numel * self.dim > self.dense_max_entries))
        if kron and self.k1 < 4:
            raise ValueError(f"a Kronecker projection to {self.dim} dims factorises as {self.k1} x {self.k2}, "
                             "which loses too much accuracy; choose a dimension with two similar factors "
                             "(a power of two or a square, e.g. 1024) or structure='dense'")
        return _Plan("kron" if kron else "dense", m, n)

    def _random(self, shape, *seed_parts) -> torch.Tensor:
        gen = torch.Generator().manual_seed(_seed_for(self.seed, self.kind, *seed_parts))
        if self.kind == "gaussian":
            return torch.randn(shape, generator=gen)
        return torch.randint(0, 2, shape, generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)

    def _remember(self, key, value: torch.Tensor) -> torch.Tensor:
        size = value.numel() * value.element_size()
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[key] = value
            self._cached_bytes += size
        return value

    def factors(self, name: str, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [m, k1], B [n, k2]) of a Kronecker-projected tensor; entries of variance 1/k1, 1/k2."""
        plan = self.plan(name, shape)
        key = ("kron", name, tuple(shape))
        if key not in self._cache:  # factors are small ((m + n) * sqrt(k)): always kept
            a = self._random((plan.m, self.k1), name, tuple(shape), "A").div_(math.sqrt(self.k1))
            b = self._random((plan.n, self.k2), name, tuple(shape), "B").div_(math.sqrt(self.k2))
            self._cache[key] = (a, b)
        return self._cache[key]

    def _dense_block(self, name: str, shape, block: int, rows: int) -> torch.Tensor:
        key = ("dense", name, tuple(shape), block)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        value = self._random((rows, self.dim), name, tuple(shape), "dense", block).div_(math.sqrt(self.dim))
        return self._remember(key, value)

    def matrix(self, name: str, shape: Sequence[int]) -> torch.Tensor:
        """The explicit ``[numel, dim]`` matrix of one tensor (for tests and small tensors only)."""
        plan = self.plan(name, shape)
        if plan.kind == "kron":
            a, b = self.factors(name, shape)
            return torch.kron(a, b)
        key = ("matrix", name, tuple(shape))
        if key in self._cache:
            return self._cache[key]
        numel = plan.m * plan.n
        if numel <= _ROWS_PER_BLOCK:
            return self._dense_block(name, shape, 0, numel)
        return self._remember(key, torch.cat([self._dense_block(name, shape, j, min(_ROWS_PER_BLOCK, numel - s))
                                              for j, s in enumerate(range(0, numel, _ROWS_PER_BLOCK))]))

    # -- projection ------------------------------------------------------------------------
    def project_tensor(self, name: str, g: torch.Tensor) -> torch.Tensor:
        """``[c, *shape]`` gradients of one tensor -> ``[c, dim]``."""
        c, shape = g.shape[0], tuple(g.shape[1:])
        plan = self.plan(name, shape)
        if plan.kind == "kron":
            a, b = self.factors(name, shape)
            G = g.reshape(c, plan.m, plan.n)
            # Multiply the cheaper side first: k1*m*n + k1*n*k2 versus m*n*k2 + k1*m*k2 flops.
            if self.k1 * plan.m * plan.n + self.k1 * plan.n * self.k2 <= plan.m * plan.n * self.k2 + self.k1 * plan.m * self.k2:
                y = torch.matmul(torch.matmul(a.T, G), b)
            else:
                y = torch.matmul(a.T, torch.matmul(G, b))
            return y.reshape(c, self.dim)
        flat = g.reshape(c, -1)
        numel = flat.shape[1]
        out = None
        for j, s in enumerate(range(0, numel, _ROWS_PER_BLOCK)):
            rows = min(_ROWS_PER_BLOCK, numel - s)
            part = flat[:, s: s + rows] @ self._dense_block(name, shape, j, rows)
            out = part if out is None else out.add_(part)
        return out

    def project(self, grads: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{name: [c, *shape]}`` -> ``[c, dim]``: the sum of every tensor's projection."""
        out = None
        for name, g in grads.items():
            y = self.project_tensor(name, g)
            out = y if out is None else out.add_(y)
        return out

    def variance_bound(self, g: Mapping[str, torch.Tensor], h: Mapping[str, torch.Tensor]) -> float:
        """Upper bound on ``Var <phi(g), phi(h)>`` for two gradients given tensor by tensor.

        Unbiasedness: ``E[P_t^T P_s] = I`` if ``t == s`` and 0 otherwise. Cross terms ``t != s``
        (independent, isotropic with covariance ``|g_t|^2/k I``) contribute
        ``(1/k) sum_{t!=s} (|g_t|^2|h_s|^2 + <g_t,h_t><g_s,h_s>)``. A dense Gaussian block adds
        ``(|g_t|^2|h_t|^2 + <g_t,h_t>^2)/k``, completing the dense JL variance
        ``(|g|^2|h|^2 + <g,h>^2)/k``. A Kronecker block ``X = tr(A^T G B B^T H^T A)``: conditioning
        on ``B`` and using ``Var(z^T M z) = |M|_F^2 + tr(M^2)`` for Gaussian ``z`` gives
        ``E_B Var_A <= (2/k1)(1 + 2/k2)|G|^2|H|^2`` and ``Var_B E_A <= (2/k2)|G|^2|H|^2``, so it adds at
        most ``(2/k1 + 2/k2 + 3/k)|g_t|^2|h_t|^2`` beyond the dense share. Rademacher entries have
        smaller fourth moments, so the same bound holds.
        """
        g2 = h2 = dot = 0.0
        extra = 0.0
        for name, gt in g.items():
            ht = h[name]
            a, b = float(gt.double().pow(2).sum()), float(ht.double().pow(2).sum())
            g2, h2, dot = g2 + a, h2 + b, dot + float((gt.double() * ht.double()).sum())
            if self.plan(name, tuple(gt.shape)).kind == "kron":
                extra += (2 / self.k1 + 2 / self.k2 + 3 / self.dim) * a * b
        return (g2 * h2 + dot * dot) / self.dim + extra


def as_projector(projection: "Projector | int | None", seed: int = 0, kind: str = "rademacher") -> Projector | None:
    """``None`` (no projection), a dimension, or a ready ``Projector``."""
    if projection is None or isinstance(projection, Projector):
        return projection
    if isinstance(projection, bool) or not isinstance(projection, (int, np.integer)):
        raise TypeError(f"projection must be None, an int dimension or a Projector, got {projection!r}")
    return Projector(int(projection), seed=seed, kind=kind)


# ---------------------------------------------------------------------------------------------
# Hooks path: projected per-example gradients from one batched backward
# ---------------------------------------------------------------------------------------------
class HooksUnsupported(RuntimeError):
    """The hooks path cannot handle this model, group or setting (the caller falls back to vmap)."""


def _hook_module_types() -> tuple:
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, Conv1D, torch.nn.Embedding, torch.nn.LayerNorm)


def _usage_sites(model, names) -> dict[str, list[tuple[torch.nn.Module, str]]]:
    """Every (module, attribute) through which each selected parameter enters the forward pass."""
    params = dict(model.named_parameters())
    wanted = {id(params[n]): n for n in names}
    sites: dict[str, list] = {n: [] for n in names}
    for module in model.modules():
        for attr, p in module._parameters.items():
            if p is not None and id(p) in wanted:
                sites[wanted[id(p)]].append((module, attr))
    types = _hook_module_types()
    for n, found in sites.items():
        for module, attr in found:
            if not isinstance(module, types) or attr not in ("weight", "bias"):
                raise HooksUnsupported(f"{n} is used by {type(module).__name__}.{attr}, which has no rule")
            if isinstance(module, torch.nn.Embedding) and (module.max_norm is not None or module.scale_grad_by_freq
                                                           or module.sparse):
                raise HooksUnsupported(f"{n}: embeddings with max_norm / scale_grad_by_freq / sparse")
            if isinstance(module, torch.nn.LayerNorm) and len(module.normalized_shape) != 1:
                raise HooksUnsupported(f"{n}: layer norm over several dimensions")
            if len(params[n].shape) not in (1, 2):
                raise HooksUnsupported(f"{n} has {len(params[n].shape)} dimensions")
    return sites


def hooks_supported(model: torch.nn.Module, group: GroupSpec = "all") -> bool:
    """Whether every parameter of the group enters through a module the hooks path handles."""
    try:
        _usage_sites(model, select_parameters(model, group))
    except HooksUnsupported:
        return False
    return True


def _per_example(t: torch.Tensor, batch: int) -> torch.Tensor:
    """[B or 1, *mid, d] -> [B, prod(mid), d] (a shared leading 1 is expanded over the batch)."""
    if t.shape[0] not in (batch, 1):
        raise HooksUnsupported(f"a hooked module saw leading dimension {t.shape[0]}, not the batch {batch}")
    t = t.reshape(t.shape[0], -1, t.shape[-1]) if t.dim() >= 2 else t.reshape(t.shape[0], 1, -1)
    return t.expand(batch, -1, -1)


class _Capture:
    """Forward hooks that keep each hooked call's input and output.

    After the forward pass, ``torch.autograd.grad(sum of per-example losses, outputs)`` gives each
    output's gradient ``delta`` (row b from example b's loss only), and each parameter's projected
    per-example gradient follows from (input, delta) alone. For a weight used as ``x W``
    (Conv1D), ``A^T G_b B = (x_b A)^T (delta_b B)``, so the per-example gradient ``G_b`` is never
    formed; Linear (``W^T``), Embedding (``A[ids]``), biases (``sum_t delta_t``) and layer-norm
    weights (``sum_t delta_t * xhat_t``) likewise. Tensors that the projector projects densely get
    their full per-example gradient first. The backward pass computes no weight gradient, so the
    whole costs about one training step.
    """

    def __init__(self, model, names, batch: int):
        self.sites = _usage_sites(model, names)
        self.batch = batch
        self.records: list[tuple[torch.nn.Module, list[tuple[str, str]], torch.Tensor, torch.Tensor]] = []
        self.handles = []

    def __enter__(self):
        by_module: dict[int, tuple[torch.nn.Module, list[tuple[str, str]]]] = {}
        for n, found in self.sites.items():
            for module, attr in found:
                by_module.setdefault(id(module), (module, []))[1].append((n, attr))
        for module, uses in by_module.values():
            self.handles.append(module.register_forward_hook(self._hook(uses), with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def _hook(self, uses):
        def hook(module, args, kwargs, output):
            x = (args[0] if args else next(iter(kwargs.values()))).detach()
            if output.shape[0] == 1 and self.batch > 1:
                # A batch-shared output (GPT-2's position embeddings) made per-example, so its
                # gradient keeps each example's share instead of their sum.
                output = output.expand((self.batch,) + tuple(output.shape[1:]))
            self.records.append((module, uses, x, output))
            return output
        return hook


def _hook_contribution(projector: Projector, module, attr: str, name: str, shape, x, delta, batch: int,
                       matrices: dict) -> torch.Tensor:
    """``[B, dim]``: the projection of one parameter's per-example gradient through one call."""
    from transformers.pytorch_utils import Conv1D

    d = _per_example(delta, batch)  # [B, L, out]
    if attr == "bias" or isinstance(module, torch.nn.LayerNorm):
        if attr == "bias":
            g = d.sum(1)
        else:
            xhat = torch.nn.functional.layer_norm(x, module.normalized_shape, None, None, module.eps)
            g = (d * _per_example(xhat, batch)).sum(1)
        if name not in matrices:
            matrices[name] = projector.matrix(name, shape)
        return g @ matrices[name]
    kron = projector.plan(name, shape).kind == "kron"
    if isinstance(module, torch.nn.Embedding):
        ids = x if x.dim() >= 2 else x.unsqueeze(0)
        if ids.shape[0] not in (batch, 1):
            raise HooksUnsupported(f"{name}: embedding ids with leading dimension {ids.shape[0]}, batch {batch}")
        ids = ids.reshape(ids.shape[0], -1).expand(batch, -1)
        if module.padding_idx is not None:  # nn.Embedding gives the padding row no gradient
            d = d * (ids != module.padding_idx).unsqueeze(-1)
        if kron:
            a, b = projector.factors(name, shape)
            return torch.bmm(a[ids].transpose(1, 2), d @ b).reshape(batch, -1)
        full = torch.zeros((batch,) + tuple(shape), dtype=d.dtype)
        full.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, d.shape[-1]), d)
        return projector.project_tensor(name, full)
    xs = _per_example(x, batch)  # [B, L, in]
    if isinstance(module, Conv1D):  # weight [in, out] = [m, n]
        left, right = xs, d
    else:  # Linear weight [out, in] = [m, n]
        left, right = d, xs
    if kron:
        a, b = projector.factors(name, shape)
        return torch.bmm((left @ a).transpose(1, 2), right @ b).reshape(batch, -1)
    return projector.project_tensor(name, torch.bmm(left.transpose(1, 2), right))


def hook_features(model: torch.nn.Module, task: CausalLMTask, examples: Examples, names: Sequence[str],
                  projector: Projector, *, batch_size: int = 64, desc: str | None = None
                  ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(indices, projected features [len(indices), dim])`` from one batched backward per chunk.

    Equal (to float rounding) to projecting vmap's per-example gradients with ``projector``, at
    about the cost of a training step (see ``_Capture``). Handles parameters of Linear, Conv1D,
    Embedding and LayerNorm modules, tied uses included, and raises ``HooksUnsupported`` for
    anything else. It relies on the examples of a batch not interacting (eval mode, no batch
    statistics), true of the tasks' causal and seq2seq models; ``gradient_features`` checks it
    against the loop on two examples before using this path.
    """
    names = list(names)
    params = dict(model.named_parameters())
    _usage_sites(model, names)  # fail before any work
    chunks = _chunks(task, examples, batch_size)
    matrices: dict[str, torch.Tensor] = {}
    for idx in progress(chunks, desc=desc or f"gradient features ({len(examples)} examples)", total=len(chunks)):
        batch = task.encode(examples.subset(idx.tolist()))
        with eval_mode(model), torch.enable_grad(), _Capture(model, names, len(idx)) as cap:
            loss = task.per_example_loss(model, batch).sum()
            outputs = [rec[3] for rec in cap.records]
            if not outputs:
                raise HooksUnsupported("no hooked module ran in the forward pass")
            deltas = torch.autograd.grad(loss, outputs, allow_unused=True)
        with torch.no_grad():
            rows = torch.zeros(len(idx), projector.dim)
            for (module, uses, x, out), delta in zip(cap.records, deltas):
                if delta is None:
                    continue
                for name, attr in uses:
                    rows += _hook_contribution(projector, module, attr, name, tuple(params[name].shape), x, delta,
                                               len(idx), matrices)
        yield idx, rows


# ---------------------------------------------------------------------------------------------
# Features (flat or projected), in memory or on disk
# ---------------------------------------------------------------------------------------------
def feature_dim(model: torch.nn.Module, group: GroupSpec = "all", projector: Projector | None = None) -> int:
    """Width of a feature row: ``projector.dim``, or the number of selected parameters."""
    if projector is not None:
        return projector.dim
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in select_parameters(model, group))


def gradient_features(model: torch.nn.Module, task: CausalLMTask, examples: Examples, group: GroupSpec = "all", *,
                      projection: "Projector | int | None" = None, seed: int = 0, kind: str = "rademacher",
                      correction: Mapping[str, torch.Tensor] | None = None, eps: float = DEFAULT_EPS,
                      batch_size: int = 64, method: str = "auto", out: str | Path | None = None,
                      meta: dict | None = None, desc: str | None = None) -> np.ndarray:
    """Per-example gradient features, one row per example in order: ``[len(examples), d]`` float32.

    Without ``projection`` a row is the flattened gradient of the group (tensors concatenated in
    the model's order). ``projection`` is a dimension (a ``Projector(dim, seed, kind)`` is made)
    or a ``Projector``. ``method``: "auto" uses the hooks path (``hook_features``, about the cost
    of a training step) for projected features without correction when the model passes its
    self-check, else vmap, else the loop; "hooks", "vmap" or "loop" force one. With ``out`` the
    rows are written chunk by chunk into a memory map at that path (plus ``<out>.json``, see
    ``save_features``) and the read-only memmap is returned; the file appears only when complete.
    A NaN or infinite row raises ``NonFiniteGradientError``.
    """
    check_examples(examples, "examples")
    projector = as_projector(projection, seed=seed, kind=kind)
    names = select_parameters(model, group)
    width = feature_dim(model, names, projector)
    shape = (len(examples), width)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        result = np.memmap(partial, mode="w+", dtype=np.float32, shape=shape)
    else:
        result = np.empty(shape, dtype=np.float32)
    for idx, rows in _feature_rows(model, task, examples, names, projector, correction, eps, batch_size,
                                   method, desc):
        finite = torch.isfinite(rows).all(dim=1)
        if not bool(finite.all()):
            _raise_nonfinite(examples, idx, ~finite.numpy(), "a gradient feature")
        result[idx] = rows.numpy()
    if out is None:
        return result
    result.flush()
    del result
    os.replace(partial, out)
    params = {"group": names if not isinstance(group, str) else group, "parameters": names,
              "projection": projector.describe() if projector else None,
              "corrected": correction is not None, "eps": eps, **(meta or {})}
    _write_sidecar(out, shape, "float32", params)
    return load_features(out, shape=shape)


# Models (weakly held) whose hooks path passed its self-check, per (parameters, projector).
_HOOKS_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, set]" = weakref.WeakKeyDictionary()


def _hooks_or_none(model, task, examples, names, projector, batch_size, desc, forced: bool):
    """The hooks path's row iterator after a self-check, or None (with a warning) to use vmap."""
    key = (tuple(names), json.dumps(projector.describe()))
    if key in _HOOKS_CHECKED.get(model, ()):
        return hook_features(model, task, examples, names, projector, batch_size=batch_size, desc=desc)
    try:
        _usage_sites(model, names)
        # Two examples in one batch: checks the rules and that a batch-shared output was split.
        first = examples.subset(list(range(min(2, len(examples)))))
        got = torch.cat([r for _, r in hook_features(model, task, first, names, projector, batch_size=2,
                                                      desc="hooks self-check")])
        order, ref = [], []
        for idx, grads in iter_gradients(model, task, first, names, batch_size=2, method="loop",
                                         desc="hooks self-check"):
            order.append(idx)
            ref.append(projector.project(grads))
        want = torch.cat(ref)[torch.from_numpy(np.argsort(np.concatenate(order)))]
        finite = torch.isfinite(want).all(dim=1)
        if not bool(finite.all()):  # a broken model, not a broken path: say so
            _raise_nonfinite(first, np.arange(len(first)), ~finite.numpy(), "a gradient feature")
        got = got[torch.from_numpy(np.argsort(_chunks(task, first, 2)[0]))]
        err = float((got - want).norm() / want.norm().clamp(min=1e-30))
        if not err < 1e-3:  # e.g. a parameter also used outside its module's forward
            raise HooksUnsupported(f"self-check failed (relative error {err:.2g} against the loop)")
    except HooksUnsupported as why:
        if forced:
            raise
        warnings.warn(f"hooks path unavailable for {type(model).__name__} ({why}); using vmap", RuntimeWarning,
                      stacklevel=4)
        return None
    _HOOKS_CHECKED.setdefault(model, set()).add(key)
    return hook_features(model, task, examples, names, projector, batch_size=batch_size, desc=desc)


def _feature_rows(model, task, examples, names, projector, correction, eps, batch_size, method, desc):
    """(indices, feature rows) chunk by chunk, by the fastest path that applies."""
    if method not in ("auto", "hooks", "vmap", "loop"):
        raise ValueError(f"method must be 'auto', 'hooks', 'vmap' or 'loop', got {method!r}")
    if method == "hooks" and (projector is None or correction is not None):
        raise ValueError("method='hooks' computes projected features without optimizer correction only "
                         "(an elementwise correction does not factorise through the low-rank products)")
    if method in ("auto", "hooks") and projector is not None and correction is None:
        rows = _hooks_or_none(model, task, examples, names, projector, batch_size, desc, method == "hooks")
        if rows is not None:
            yield from rows
            return
    for idx, grads in iter_gradients(model, task, examples, names, batch_size=batch_size, method=method,
                                     correction=correction, eps=eps, desc=desc):
        if projector is not None:
            yield idx, projector.project(grads)
        else:
            yield idx, torch.cat([grads[n].reshape(len(idx), -1) for n in names], dim=1)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _write_sidecar(path: Path, shape, dtype: str, params: dict) -> None:
    tmp = _sidecar(path).with_name(_sidecar(path).name + ".tmp")
    tmp.write_text(json.dumps({"shape": list(shape), "dtype": dtype, "params": params}, indent=1, default=str))
    os.replace(tmp, _sidecar(path))


def save_features(path: str | Path, features: np.ndarray, params: dict | None = None) -> Path:
    """Write a 2-D feature matrix as a raw memmap file plus ``<path>.json`` (shape, dtype, params)."""
    path = Path(path)
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be a 2-D matrix, got shape {features.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    mm = np.memmap(partial, mode="w+", dtype=features.dtype, shape=features.shape)
    mm[:] = features
    mm.flush()
    del mm
    os.replace(partial, path)
    _write_sidecar(path, features.shape, features.dtype.str, params or {})
    return path


def feature_params(path: str | Path) -> dict:
    """The sidecar of a feature file: ``{"shape", "dtype", "params"}``."""
    side = _sidecar(Path(path))
    if not side.is_file():
        raise FileNotFoundError(f"{path} has no sidecar {side.name}: not a complete feature file")
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{side} is corrupt: {err}") from err


def load_features(path: str | Path, shape: Sequence[int] | None = None) -> np.memmap:
    """A read-only memmap of saved features; ``shape``, if given, must match the saved one.

    A file whose size does not match its sidecar (truncated, or written by something else)
    raises ValueError, as does a different expected ``shape``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no feature file at {path}")
    side = feature_params(path)
    saved = tuple(int(s) for s in side["shape"])
    dtype = np.dtype(side["dtype"])
    if shape is not None and tuple(int(s) for s in shape) != saved:
        raise ValueError(f"features at {path} have shape {saved}, expected {tuple(shape)}: they were "
                         "computed for other examples, parameters or projection")
    expected = int(np.prod(saved)) * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(f"features at {path} hold {actual} bytes but the sidecar says shape {saved} "
                         f"of {dtype} ({expected} bytes): the file is incomplete or corrupt")
    return np.memmap(path, mode="r", dtype=dtype, shape=saved)


# ---------------------------------------------------------------------------------------------
# Dot products without flat matrices (TracIn, DDA)
# ---------------------------------------------------------------------------------------------
@dataclass
class GradientDots:
    """``dots[i, j] = <g(query i), g(candidate j)>`` and the squared norms of both sides."""

    dots: np.ndarray
    query_sq_norms: np.ndarray
    candidate_sq_norms: np.ndarray

    def cosine(self) -> np.ndarray:
        """Dot products of unit-normalised gradients (a zero gradient gives 0)."""
        q = np.sqrt(self.query_sq_norms)[:, None]
        c = np.sqrt(self.candidate_sq_norms)[None, :]
        denom = q * c
        return np.divide(self.dots, denom, out=np.zeros_like(self.dots), where=denom > 0)


def gradient_dots(model: torch.nn.Module, task: CausalLMTask, queries: Examples, candidates: Examples,
                  group: GroupSpec = "all", *, projection: "Projector | int | None" = None, seed: int = 0,
                  kind: str = "rademacher", correction: Mapping[str, torch.Tensor] | None = None,
                  eps: float = DEFAULT_EPS, batch_size: int = 64, method: str = "auto",
                  max_query_bytes: int = 1 << 30) -> GradientDots:
    """All query-candidate gradient dot products at one model, accumulated tensor by tensor.

    Query gradients are held in memory (per tensor, never concatenated); candidate gradients
    stream chunk by chunk and ``scores += G_q[t] @ G_c[t]^T`` per tensor ``t``. If the queries'
    gradients exceed ``max_query_bytes`` the queries are processed in blocks (candidate
    gradients are then recomputed per block). With ``projection`` both sides are projected
    first and the dots are those of the projected features.
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    projector = as_projector(projection, seed=seed, kind=kind)
    names = select_parameters(model, group)
    kw = dict(batch_size=batch_size, method=method, correction=correction, eps=eps)
    if projector is not None:
        fq = gradient_features(model, task, queries, names, projection=projector, desc="query gradients", **kw)
        fc = gradient_features(model, task, candidates, names, projection=projector,
                               desc="candidate gradients", **kw)
        fq64, fc64 = fq.astype(np.float64), fc.astype(np.float64)
        return GradientDots(fq64 @ fc64.T, (fq64 ** 2).sum(1), (fc64 ** 2).sum(1))

    row_bytes = 4 * feature_dim(model, names)
    per_block = max(1, int(max_query_bytes // max(row_bytes, 1)))
    dots = np.zeros((len(queries), len(candidates)), dtype=np.float64)
    q_sq = np.zeros(len(queries), dtype=np.float64)
    c_sq = np.zeros(len(candidates), dtype=np.float64)
    for start in range(0, len(queries), per_block):
        q_idx_all = list(range(start, min(start + per_block, len(queries))))
        block = queries.subset(q_idx_all)
        held = {n: [] for n in names}
        order = []
        for idx, grads in iter_gradients(model, task, block, names, desc="query gradients", **kw):
            order.append(idx)
            for n in names:
                held[n].append(grads[n].reshape(len(idx), -1))
        order = np.concatenate(order)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        q_grads = {n: torch.cat(held[n])[torch.from_numpy(inverse)] for n in names}
        del held
        sq = sum(q_grads[n].double().pow(2).sum(1) for n in names).numpy()
        q_sq[start: start + len(block)] = sq
        if not np.isfinite(sq).all():
            _raise_nonfinite(block, np.arange(len(block)), ~np.isfinite(sq), "a query gradient")
        for idx, grads in iter_gradients(model, task, candidates, names, desc="candidate gradients", **kw):
            acc = None
            norms = None
            for n in names:
                gc = grads[n].reshape(len(idx), -1)
                part = q_grads[n] @ gc.T
                acc = part if acc is None else acc.add_(part)
                if start == 0:
                    nn_ = gc.pow(2).sum(1, dtype=torch.float64)
                    norms = nn_ if norms is None else norms.add_(nn_)
            block_dots = acc.numpy().astype(np.float64)
            if not np.isfinite(block_dots).all() or (norms is not None and not torch.isfinite(norms).all()):
                bad = ~np.isfinite(block_dots).all(0)
                if norms is not None:
                    bad |= ~torch.isfinite(norms).numpy()
                _raise_nonfinite(candidates, idx, bad, "a candidate gradient")
            dots[start: start + len(block), idx] = block_dots
            if norms is not None:
                c_sq[idx] = norms.numpy()
    return GradientDots(dots, q_sq, c_sq)


__all__ = ["NonFiniteGradientError", "check_examples", "parameter_names", "select_parameters", "as_checkpoint_list",
           "architecture_signature", "check_same_architecture", "load_checkpoint_model", "second_moments",
           "eval_mode", "iter_gradients", "Projector", "as_projector", "feature_dim", "gradient_features",
           "save_features", "load_features", "feature_params", "GradientDots", "gradient_dots", "HooksUnsupported",
           "hooks_supported", "hook_features"]
