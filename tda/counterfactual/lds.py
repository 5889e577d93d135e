"""The linear datamodeling score (LDS; Park et al. 2023, TRAK): does a method's attribution predict
what retraining on a subset does?

Draw ``M`` random subsets of the training set, each keeping a ``fraction`` of the examples (half,
as in TRAK's evaluation), and retrain on each. For a query and a method with scores
``τ(query, example)``, the method's prediction for subset ``S`` is the *summed* score
``Σ_{i in S} τ(query, i)`` (attribution as an additive model of the training set); the measured
outcome is the retrained model's support for the query's target (``tda.counterfactual.measure``:
its log-probability, or the hallucination-minus-correct margin). The query's LDS is the Spearman
rank correlation of the two over the ``M`` subsets; a method's LDS is the mean over queries, with
a bootstrap confidence interval over queries.

The sign: a score that says "this example supports the query" (a proponent scores high) predicts
a *higher* support, so a good method has a positive LDS. Scores a method does not give (a
candidate-set method says nothing about the examples outside a query's candidates, stored as NaN)
count as 0 in the sum: the method predicts no effect for them.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from ..metrics import bootstrap_ci
from ..seeds import derive_seed


def random_subsets(n: int, m: int, seed: int, fraction: float = 0.5) -> np.ndarray:
    """``[m, n]`` keep masks, each keeping exactly ``round(fraction * n)`` examples, subset ``j``
    drawn with ``derive_seed(seed, "lds", j)`` (so the first ``m`` subsets do not change when ``m``
    grows)."""
    if n < 2 or m < 1:
        raise ValueError(f"random subsets need n >= 2 examples and m >= 1 subsets (got n={n}, m={m})")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    size = int(round(fraction * n))
    if not 0 < size < n:
        raise ValueError(f"a fraction of {fraction} of {n} examples keeps {size}: nothing would vary")
    out = np.zeros((m, n), dtype=bool)
    for j in range(m):
        rng = np.random.default_rng(derive_seed(seed, "lds", j))
        out[j, rng.choice(n, size=size, replace=False)] = True
    return out


def summed_scores(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``[m, q]``: for every subset and query, the sum of the query's scores over the kept
    examples (``scores``: ``[q, n]``, NaN = not scored = 0)."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    masks = np.asarray(masks, dtype=np.float64)
    if scores.ndim != 2 or masks.ndim != 2 or scores.shape[1] != masks.shape[1]:
        raise ValueError(f"scores {scores.shape} and masks {masks.shape} must be [queries, n] and [subsets, n]")
    return masks @ scores.T


def spearman(x, y) -> float:
    """Spearman's rank correlation (ties get average ranks); NaN when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"spearman needs two vectors of the same length >= 2, got {x.shape} and {y.shape}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def lds_per_query(scores: np.ndarray, masks: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Per query: Spearman of the summed scores (``summed_scores``) against ``measured`` (``[m, q]``,
    the retrained models' support of each query); NaN where either is constant."""
    predicted = summed_scores(scores, masks)
    measured = np.asarray(measured, dtype=np.float64)
    if measured.shape != predicted.shape:
        raise ValueError(f"measured outcomes of shape {measured.shape}, expected {predicted.shape} (subsets x queries)")
    return np.array([spearman(predicted[:, j], measured[:, j]) for j in range(predicted.shape[1])])


def lds_summary(per_query: np.ndarray, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """``{"mean", "low", "high", "queries", "undefined"}``: the mean LDS over the queries where it is
    defined and a percentile bootstrap interval over those queries (``tda.metrics.bootstrap_ci``
    with one group); all NaN when no query has one."""
    values = np.asarray(per_query, dtype=np.float64)
    ok = values[np.isfinite(values)]
    out = {"queries": int(ok.size), "undefined": int(values.size - ok.size), "level": level}
    if ok.size == 0:
        return {**out, "mean": float("nan"), "low": float("nan"), "high": float("nan")}
    mean, low, high = bootstrap_ci([ok], level=level, n_boot=n_boot, seed=seed)
    return {**out, "mean": mean, "low": low, "high": high}


__all__ = ["random_subsets", "summed_scores", "spearman", "lds_per_query", "lds_summary"]
