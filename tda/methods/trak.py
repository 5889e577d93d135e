"""TRAK (Park et al. 2023): projected gradients with a kernel correction, ensembled.

At each checkpoint (or model) ``i``: ``Phi`` are projected per-example loss gradients of the
training set (default: the candidates), and

    score_i(q, c) = phi(q) (Phi^T Phi + lambda I)^{-1} phi(c)^T ,

averaged over checkpoints. ``lam`` is relative to the kernel's mean eigenvalue
(``lambda = lam * trace(Phi^T Phi) / k``) unless ``relative=False``. As ``lambda`` grows,
``lambda * score`` tends to the plain projected dot product. TRAK's per-example reweighting by
``1 - p`` (a classifier's probability of the label) has no single counterpart for a multi-token
LM loss and is omitted (the loss gradient is the model output function, Q = I).
"""

from __future__ import annotations

import numpy as np

from ..checkpoints import as_checkpoint_list, check_same_architecture, load_checkpoint_model
from ..gradients import GroupSpec, as_projector, check_examples, gradient_features
from ..task import CausalLMTask, Examples
from .tracin import resolve_corrections


def trak(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *, train: Examples | None = None,
         group: GroupSpec = "all", projection=1024, seed: int = 0, kind: str = "rademacher", lam: float = 1e-3,
         relative: bool = True, correction=False, batch_size: int = 64, method: str = "auto") -> np.ndarray:
    """TRAK scores ``[n_queries, n_candidates]``, averaged over checkpoints (paths or models).

    ``train`` sets the examples of the kernel ``Phi^T Phi`` (default: the candidates);
    ``projection`` is a dimension or a ``Projector`` (required: the kernel is k x k);
    ``lam`` the ridge (relative, see the module docstring); ``correction`` as in ``tracin``.
    """
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    if train is not None:
        check_examples(train, "train")
    projector = as_projector(projection, seed=seed, kind=kind)
    if projector is None:
        raise ValueError("TRAK needs a random projection (its kernel is k x k); pass projection=k")
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    ckpts = as_checkpoint_list(checkpoints)
    check_same_architecture(ckpts)
    moments = resolve_corrections(ckpts, correction)
    total = np.zeros((len(queries), len(candidates)))
    for ckpt, moments_of in zip(ckpts, moments):
        model = load_checkpoint_model(ckpt)
        kw = dict(projection=projector, correction=moments_of(), batch_size=batch_size, method=method)
        phi_q = gradient_features(model, task, queries, group, desc="TRAK query features", **kw).astype(np.float64)
        phi_c = gradient_features(model, task, candidates, group, desc="TRAK candidate features", **kw).astype(np.float64)
        phi_t = phi_c if train is None else gradient_features(
            model, task, train, group, desc="TRAK train features", **kw).astype(np.float64)
        kernel = phi_t.T @ phi_t
        ridge = lam * np.trace(kernel) / kernel.shape[0] if relative else lam
        try:
            solved = np.linalg.solve(kernel + ridge * np.eye(kernel.shape[0]), phi_c.T)
        except np.linalg.LinAlgError as err:
            raise ValueError(f"TRAK's kernel is singular (lambda={ridge:g}, {len(phi_t)} training examples for "
                             f"{kernel.shape[0]} dims); use lam > 0") from err
        total += phi_q @ solved
    return total / len(ckpts)


def trak_from_dots(query_train_dots, train_gram, lam: float = 1e-3, relative: bool = True) -> np.ndarray:
    """TRAK without projection, on one model: ``D (K + lambda I)^{-1}``, ``[n_queries, n_train]``.

    ``query_train_dots`` ``D``: exact gradient dot products of each query with each training
    example (the candidates are the training examples); ``train_gram`` ``K``: the exact Gram matrix
    of the training gradients, ``[n_train, n_train]``. This is the limit of :func:`trak` as the
    projection grows (``E[P^T P] = I`` and the push-through identity ``(Phi^T Phi + lambda I)^{-1}
    Phi^T = Phi^T (Phi Phi^T + lambda I)^{-1}``), so it has no projection noise; it is cheap
    whenever the training set is small (one n x n solve). ``lam`` is relative to the Gram's mean
    eigenvalue (``lambda = lam * trace(K) / n``) unless ``relative=False``. Queries may be any
    linear combination of outputs (e.g. hallucinated minus correct): the formula is linear in ``D``.
    """
    dots = np.asarray(query_train_dots, dtype=np.float64)
    gram = np.asarray(train_gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"train_gram must be a square matrix [n_train, n_train], got shape {gram.shape}")
    if dots.ndim != 2 or dots.shape[1] != gram.shape[0]:
        raise ValueError(f"query_train_dots must be [n_queries, {gram.shape[0]}] (one column per training example), "
                         f"got shape {dots.shape}")
    if not (np.isfinite(dots).all() and np.isfinite(gram).all()):
        raise ValueError("query_train_dots and train_gram must be finite")
    if isinstance(lam, bool) or not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    ridge = lam * np.trace(gram) / len(gram) if relative else float(lam)
    try:
        return np.linalg.solve(gram + ridge * np.eye(len(gram)), dots.T).T
    except np.linalg.LinAlgError as err:
        raise ValueError(f"TRAK's Gram matrix is singular (lambda={ridge:g}); use lam > 0") from err
