"""Confidence intervals by a two-level bootstrap: over seeds, then over queries within each seed.

A seed draws its own world, base model, query sample and fine-tuning run, so queries of one seed
share everything a seed decides and are not independent of each other; pooling them as if they
were understates the uncertainty. The bootstrap here resamples at both levels: seeds with
replacement, then, independently for every seed drawn, its queries with replacement. The statistic
is the mean over all resampled queries (each query weighs the same, as in the point estimate).
With one seed it is the ordinary bootstrap over queries.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


class Interval(NamedTuple):
    estimate: float  # the statistic on the data itself
    low: float
    high: float
    se: float  # standard deviation of the bootstrap replicates
    n: int  # values (queries) in all groups


def _groups(groups: Sequence[Sequence[float]], what: str) -> list[np.ndarray]:
    out = [np.asarray(g, dtype=np.float64).ravel() for g in groups]
    if not out:
        raise ValueError(f"{what}: no groups (seeds) to bootstrap")
    if any(g.size == 0 for g in out):
        raise ValueError(f"{what}: a group (seed) has no values; leave it out or give it values")
    if any(not np.isfinite(g).all() for g in out):
        raise ValueError(f"{what}: values must be finite")
    return out


def _replicates(groups: list[np.ndarray], chosen: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate (row of ``chosen``: the seeds drawn), the sum and the count of the values
    resampled within each seed drawn."""
    n_boot, s = chosen.shape
    sums = np.zeros((n_boot, s))
    counts = np.zeros((n_boot, s))
    for g, values in enumerate(groups):
        at = chosen == g
        k = int(at.sum())
        if not k:
            continue
        draws = rng.integers(0, len(values), size=(k, len(values)))
        sums[at] = values[draws].sum(1)
        counts[at] = len(values)
    return sums.sum(1), counts.sum(1)


def bootstrap_mean(groups: Sequence[Sequence[float]], n_boot: int = N_BOOT, level: float = LEVEL,
                   seed: int = 0) -> Interval:
    """The mean over all values of ``groups`` (one group per seed) and its percentile interval."""
    gs = _groups(groups, "bootstrap_mean")
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(gs), size=(n_boot, len(gs)))
    sums, counts = _replicates(gs, chosen, rng)
    reps = sums / counts
    return _interval(float(np.concatenate(gs).mean()), reps, level, sum(len(g) for g in gs))


def bootstrap_difference(groups_x: Sequence[Sequence[float]], groups_y: Sequence[Sequence[float]],
                         n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """mean(x) - mean(y) for two unpaired samples of the same seeds (``groups_x[i]`` and
    ``groups_y[i]`` are seed i's), resampling the seeds jointly and the values of each side apart."""
    gx, gy = _groups(groups_x, "bootstrap_difference (x)"), _groups(groups_y, "bootstrap_difference (y)")
    if len(gx) != len(gy):
        raise ValueError(f"bootstrap_difference: {len(gx)} seeds for x but {len(gy)} for y")
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(gx), size=(n_boot, len(gx)))  # the same seeds on both sides
    sx, cx = _replicates(gx, chosen, rng)
    sy, cy = _replicates(gy, chosen, rng)  # the queries of each side drawn apart
    reps = sx / cx - sy / cy
    estimate = float(np.concatenate(gx).mean() - np.concatenate(gy).mean())
    return _interval(estimate, reps, level, sum(len(g) for g in gx) + sum(len(g) for g in gy))


def _interval(estimate: float, reps: np.ndarray, level: float, n: int) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1 - level) / 2
    low, high = np.quantile(reps, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), float(reps.std(ddof=1)) if len(reps) > 1 else 0.0, n)


__all__ = ["N_BOOT", "LEVEL", "Interval", "bootstrap_mean", "bootstrap_difference"]
