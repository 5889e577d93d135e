"""Per-example gradient features (flat or projected), in memory or as files on disk.

``gradient_features`` picks the fastest path that applies: the hooks path for projected features
without optimizer correction (after a self-check), else vmap, else the loop. Feature files are raw
memmaps plus a ``<file>.json`` sidecar (shape, dtype, parameters), written under a temporary name
and renamed, so a file is complete or absent.
"""

from __future__ import annotations

import json
import os
import warnings
import weakref
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..task import CausalLMTask, Examples
from .groups import GroupSpec, select_parameters
from .hooks import HooksUnsupported, _usage_sites, hook_features
from .per_example import DEFAULT_EPS, _chunks, _raise_nonfinite, check_examples, iter_gradients
from .projection import DEFAULT_KIND, AnyProjector, as_projector


def feature_dim(model: torch.nn.Module, group: GroupSpec = "all", projector: AnyProjector | None = None) -> int:
    """Width of a feature row: ``projector.dim``, or the number of selected parameters."""
    if projector is not None:
        return projector.dim
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in select_parameters(model, group))


def gradient_features(model: torch.nn.Module, task: CausalLMTask, examples: Examples, group: GroupSpec = "all", *,
                      projection: "AnyProjector | int | None" = None, seed: int = 0, kind: str = DEFAULT_KIND,
                      correction: Mapping[str, torch.Tensor] | None = None, eps: float = DEFAULT_EPS,
                      batch_size: int = 64, method: str = "auto", out: str | Path | None = None,
                      meta: dict | None = None, desc: str | None = None) -> np.ndarray:
    """Per-example gradient features, one row per example in order: ``[len(examples), d]`` float32.

    Without ``projection`` a row is the flattened gradient of the group (tensors concatenated in
    the model's order). ``projection`` is a dimension (``as_projector(dim, seed, kind)``: the count
    sketch ``SketchProjector`` by default, ``kind="rademacher"`` / ``"gaussian"`` the Kronecker
    ``Projector``) or a ready projector of either class. ``method``: "auto" uses the hooks path
    (``hook_features``, about the cost of a training step) for projected features without
    correction when the model passes its self-check, else vmap, else the loop; "hooks", "vmap" or
    "loop" force one. With ``out`` the
    rows are written chunk by chunk into a memory map at that path (plus ``<out>.json``, see
    ``save_features``, whose ``params["projection"]`` is the projector's ``describe()``) and the
    read-only memmap is returned; the file appears only when complete.
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


__all__ = ["feature_dim", "gradient_features", "save_features", "feature_params", "load_features"]
