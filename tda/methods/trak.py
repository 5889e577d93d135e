"""TRAK (Park et al. 2023): projected gradients with a kernel correction, ensembled.

At each checkpoint (or model) ``i``: ``Phi`` are projected per-example loss gradients of the
training set (default: the candidates), and

    score_i(q, c) = phi(q) (Phi^T Phi + lambda I)^{-1} phi(c)^T ,

averaged over checkpoints (and over projection seeds, ``seeds``). ``lam`` is relative to the
kernel's mean eigenvalue (``lambda = lam * trace(Phi^T Phi) / k``) unless ``relative=False``. As
``lambda`` grows, ``lambda * score`` tends to the plain projected dot product. TRAK's per-example
reweighting by ``1 - p`` (a classifier's probability of the label) has no single counterpart for
a multi-token LM loss and is omitted (the loss gradient is the model output function, Q = I).

Projection noise. The score depends on the projection twice: the features, and the kernel's
inverse, which amplifies the projection's noise along the kernel's small eigenvalues, most when
``k`` is near the number of training examples ``n``. ``trak_per_seed`` and ``seed_agreement``
measure it (agreement of the scores across projection seeds); ``tda.experiments.trak_stability``
tabulates it on Part II's runs.

Without projection (``projection=None``). By the push-through identity
``(Phi^T Phi + lambda I)^{-1} Phi^T = Phi^T (Phi Phi^T + lambda I)^{-1}`` the scores need only
dot products, so as ``k`` grows they tend to ``d_q (K + lambda I)^{-1}`` (training examples as
candidates), with ``d_q`` the exact query-training gradient dots and ``K`` the exact training Gram
matrix; with other candidates, Woodbury gives
``(d_qc - d_qt (K + lambda I)^{-1} d_tc) / lambda``. ``projection=None`` computes that limit from
one exact gradient pass (``tda.gradients.gradient_dots``): no projection noise, an ``n x n`` solve,
and cheap whenever the training set is small (Part II: 150-225 documents). Its relative ridge is
``lam * trace(K) / n``, the mean nonzero eigenvalue of the exact kernel (``n`` < #parameters),
which is the projected definition at ``k = n``. Projected features with ``k > n`` use the same
dual form (an ``n x n`` solve instead of ``k x k``; same scores).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from ..checkpoints import as_checkpoint_list, check_same_architecture, load_checkpoint_model
from ..gradients import (DEFAULT_KIND, GroupSpec, Projector, SketchProjector, as_projector, check_examples,
                         gradient_dots, gradient_features)
from ..task import CausalLMTask, Examples
from .tracin import resolve_corrections


def _solve(kernel: np.ndarray, ridge: float, rhs: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.linalg.solve(kernel + ridge * np.eye(len(kernel)), rhs)
    except np.linalg.LinAlgError as err:
        raise ValueError(f"TRAK's kernel is singular (lambda={ridge:g}, {what}); use lam > 0") from err


def _dual(qt: np.ndarray, tt: np.ndarray, ridge: float, qc: np.ndarray | None = None,
          tc: np.ndarray | None = None) -> np.ndarray:
    """Scores from dot products: ``qt (tt + ridge I)^{-1}`` when the candidates are the training
    examples (``qc``/``tc`` None), else ``(qc - qt (tt + ridge I)^{-1} tc) / ridge`` (Woodbury)."""
    if qc is None:
        return _solve(tt, ridge, qt.T, f"{len(tt)} training examples").T
    if not ridge > 0:
        raise ValueError("TRAK with a separate training set in dot-product form needs lambda > 0 (Woodbury "
                         f"divides by it), got {ridge:g}")
    return (qc - qt @ _solve(tt, ridge, tc, f"{len(tt)} training examples")) / ridge


def trak_from_features(phi_q: np.ndarray, phi_c: np.ndarray, lam: float, relative: bool = True,
                       phi_t: np.ndarray | None = None) -> np.ndarray:
    """TRAK's formula on given features of one checkpoint: ``[n_q, n_c]`` scores.

    ``phi_t`` (default: ``phi_c``) are the kernel's examples. With ``k`` <= their number ``n`` the
    ``k x k`` kernel is solved; with ``k > n`` the same scores come from the ``n x n`` dual form.
    """
    phi_q, phi_c = np.asarray(phi_q, dtype=np.float64), np.asarray(phi_c, dtype=np.float64)
    same = phi_t is None
    phi_t = phi_c if same else np.asarray(phi_t, dtype=np.float64)
    n, k = phi_t.shape
    ridge = lam * float(np.einsum("ij,ij->", phi_t, phi_t)) / k if relative else lam
    if k > n:
        gram, qt = phi_t @ phi_t.T, phi_q @ phi_t.T
        if same:
            return _dual(qt, gram, ridge)
        return _dual(qt, gram, ridge, phi_q @ phi_c.T, phi_t @ phi_c.T)
    return phi_q @ _solve(phi_t.T @ phi_t, ridge, phi_c.T, f"{n} training examples for {k} dims")


def trak_from_dots(qt: np.ndarray, tt: np.ndarray, lam: float, relative: bool = True, qc: np.ndarray | None = None,
                   tc: np.ndarray | None = None) -> np.ndarray:
    """TRAK without projection from exact gradient dot products of one checkpoint (module docstring):
    ``qt`` query-training ``[n_q, n]``, ``tt`` the training Gram matrix ``[n, n]``; ``qc`` and ``tc``
    (query-candidate, training-candidate) when the candidates are not the training examples.
    ``lam`` relative to ``trace(tt) / n`` unless ``relative=False``."""
    qt, tt = np.asarray(qt, dtype=np.float64), np.asarray(tt, dtype=np.float64)
    if (qc is None) != (tc is None):
        raise ValueError("give both qc and tc (other candidates than the training examples) or neither")
    ridge = lam * float(np.trace(tt)) / len(tt) if relative else lam
    if qc is None:
        return _dual(qt, tt, ridge)
    return _dual(qt, tt, ridge, np.asarray(qc, dtype=np.float64), np.asarray(tc, dtype=np.float64))


def _concat(a: Examples, b: Examples) -> Examples:
    spans = None if a.cut_spans is None and b.cut_spans is None else (
        [a.span(i) for i in range(len(a))] + [b.span(i) for i in range(len(b))])
    return Examples(list(a.prompts) + list(b.prompts), list(a.targets) + list(b.targets), spans)


def _exact_scores(model, task, queries: Examples, candidates: Examples, train: Examples | None, group, lam: float,
                  relative: bool, kw: dict) -> np.ndarray:
    """One checkpoint's TRAK without projection: one exact pass, queries and training examples held."""
    nq = len(queries)
    if train is None:
        d = gradient_dots(model, task, _concat(queries, candidates), candidates, group, **kw).dots
        return trak_from_dots(d[:nq], d[nq:], lam, relative)
    nt = len(train)
    d = gradient_dots(model, task, _concat(queries, train), _concat(train, candidates), group, **kw).dots
    return trak_from_dots(d[:nq, :nt], d[nq:, :nt], lam, relative, qc=d[:nq, nt:], tc=d[nq:, nt:])


def trak_per_seed(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *,
                  train: Examples | None = None, group: GroupSpec = "all", projection=1024,
                  seeds: Sequence[int] = (0,), kind: str = DEFAULT_KIND, lam: float = 1e-3, relative: bool = True,
                  correction=False, batch_size: int = 64, method: str = "auto") -> np.ndarray:
    """TRAK scores per projection seed ``[len(seeds), n_queries, n_candidates]``, each averaged over
    checkpoints (``trak``'s arguments; ``seeds`` the projections' seeds). With ``projection=None``
    (no projection, the module docstring's limit) there is one row whatever ``seeds``; a ready
    projector has its own seed, so it takes no ``seeds`` beyond one."""
    check_examples(queries, "queries")
    check_examples(candidates, "candidates")
    if train is not None:
        check_examples(train, "train")
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no projection seed given: pass seeds=[0] (or more, for an ensemble)")
    if isinstance(projection, (Projector, SketchProjector)) and len(seeds) > 1:
        raise ValueError(f"a ready projector has its own seed ({projection.seed}); pass a dimension to ensemble "
                         f"over seeds {seeds}")
    exact = projection is None
    projectors = [None] if exact else [as_projector(projection, seed=s, kind=kind) for s in seeds]
    if exact and method == "hooks":
        raise ValueError("method='hooks' computes projected features only; TRAK without projection uses exact "
                         "gradients (method 'auto', 'vmap' or 'loop')")
    ckpts = as_checkpoint_list(checkpoints)
    check_same_architecture(ckpts)
    moments = resolve_corrections(ckpts, correction)
    total = np.zeros((len(projectors), len(queries), len(candidates)))
    for ckpt, moments_of in zip(ckpts, moments):
        model = load_checkpoint_model(ckpt)
        kw = dict(correction=moments_of(), batch_size=batch_size, method=method)
        if exact:
            total[0] += _exact_scores(model, task, queries, candidates, train, group, lam, relative, kw)
            continue
        for j, projector in enumerate(projectors):
            feats = dict(projection=projector, **kw)
            phi_q = gradient_features(model, task, queries, group, desc="TRAK query features", **feats)
            phi_c = gradient_features(model, task, candidates, group, desc="TRAK candidate features", **feats)
            phi_t = None if train is None else gradient_features(model, task, train, group,
                                                                 desc="TRAK train features", **feats)
            total[j] += trak_from_features(phi_q, phi_c, lam, relative, phi_t)
    return total / len(ckpts)


def trak(checkpoints, task: CausalLMTask, queries: Examples, candidates: Examples, *, train: Examples | None = None,
         group: GroupSpec = "all", projection=1024, seed: int = 0, seeds: Sequence[int] | None = None,
         kind: str = DEFAULT_KIND, lam: float = 1e-3, relative: bool = True, correction=False, batch_size: int = 64,
         method: str = "auto") -> np.ndarray:
    """TRAK scores ``[n_queries, n_candidates]``, averaged over checkpoints (paths or models).

    ``train`` sets the examples of the kernel ``Phi^T Phi`` (default: the candidates);
    ``projection`` is a dimension (``tda.gradients.as_projector(k, seed, kind)``: the count sketch by
    default), a ready projector, or None for TRAK without projection (exact gradients, see the
    module docstring); ``seeds`` (instead of ``seed``) averages the scores over projections with
    those seeds (an ensemble that steadies them; ``seed_agreement`` says how much it needs);
    ``lam`` the ridge (relative, see the module docstring); ``correction`` as in ``tracin``.
    """
    return trak_per_seed(checkpoints, task, queries, candidates, train=train, group=group, projection=projection,
                         seeds=[seed] if seeds is None else seeds, kind=kind, lam=lam, relative=relative,
                         correction=correction, batch_size=batch_size, method=method).mean(0)


def _row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of ``a`` with the same row of ``b`` (NaN for a constant row)."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(1) / np.where(denom > 0, denom, 1), np.nan)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over queries (rows) of the Spearman correlation between two score matrices (queries
    whose scores are constant in either are left out)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"two score matrices of one shape are needed, got {a.shape} and {b.shape}")
    return float(np.nanmean(_row_spearman(a, b)))


def seed_agreement(per_seed: np.ndarray) -> dict:
    """How much TRAK's scores depend on the projection: from ``trak_per_seed``'s ``[S, n_q, n_c]``.

    ``agreement``: Spearman correlation of a query's scores over the candidates between two seeds,
    averaged over queries and all pairs of seeds (1: the projection does not matter; near 0: the
    scores are the projection's noise); ``agreement_min``: the lowest pair's. ``ensemble_agreement``:
    the same between the averages of two disjoint halves of the seeds, i.e. what an ensemble of
    ``ensemble_size`` seeds reaches (None below 4 seeds, where a half is one seed).
    """
    per_seed = np.asarray(per_seed, dtype=np.float64)
    if per_seed.ndim != 3 or len(per_seed) < 2:
        raise ValueError(f"agreement across seeds needs scores of at least 2 seeds [S, n_q, n_c], got shape "
                         f"{per_seed.shape}")
    pairs = [rank_agreement(per_seed[i], per_seed[j]) for i, j in itertools.combinations(range(len(per_seed)), 2)]
    half = len(per_seed) // 2
    ensemble = (rank_agreement(per_seed[:half].mean(0), per_seed[half: 2 * half].mean(0)) if half >= 2 else None)
    return {"seeds": len(per_seed), "agreement": float(np.mean(pairs)), "agreement_min": float(np.min(pairs)),
            "ensemble_agreement": ensemble, "ensemble_size": half if half >= 2 else None}


__all__ = ["trak", "trak_per_seed", "trak_from_features", "trak_from_dots", "rank_agreement", "seed_agreement"]
