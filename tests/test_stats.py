"""The two-level bootstrap (``tda.stats``): seeds, then queries."""

from __future__ import annotations

import numpy as np
import pytest

from tda.stats import bootstrap_difference, bootstrap_mean


def test_one_seed_is_the_ordinary_bootstrap_of_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=400)
    iv = bootstrap_mean([x], n_boot=4000)
    assert iv.estimate == pytest.approx(x.mean())
    assert iv.se == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)), rel=0.1)  # the textbook standard error
    assert iv.low < x.mean() < iv.high and iv.n == 400
    assert bootstrap_mean([x], seed=3) == bootstrap_mean([x], seed=3)  # reproducible


def test_seeds_that_disagree_widen_the_interval():
    """Queries pooled as if independent ignore a seed-level shift; the two-level bootstrap does not."""
    rng = np.random.default_rng(1)
    shifts = [-0.3, 0.0, 0.3]
    groups = [s + rng.normal(0, 0.2, size=100) for s in shifts]
    pooled = bootstrap_mean([np.concatenate(groups)])
    two_level = bootstrap_mean(groups)
    assert two_level.estimate == pytest.approx(pooled.estimate)
    assert two_level.se > 5 * pooled.se
    # without a seed effect it stays near the pooled one (conservative: resampling 3 seeds also
    # counts their chance differences once more, about sqrt(2) here)
    same = [rng.normal(0, 0.2, size=100) for _ in shifts]
    ratio = bootstrap_mean(same).se / bootstrap_mean([np.concatenate(same)]).se
    assert 0.9 < ratio < 1.7


def test_difference_of_two_unpaired_samples():
    rng = np.random.default_rng(2)
    xs = [rng.normal(0.6, 0.1, size=50) for _ in range(3)]
    ys = [rng.normal(0.4, 0.1, size=30) for _ in range(3)]
    iv = bootstrap_difference(xs, ys)
    assert iv.estimate == pytest.approx(np.concatenate(xs).mean() - np.concatenate(ys).mean())
    assert 0.1 < iv.low < iv.estimate < iv.high < 0.3
    se = np.sqrt(np.concatenate(xs).var(ddof=1) / 150 + np.concatenate(ys).var(ddof=1) / 90)
    assert iv.se == pytest.approx(se, rel=0.25)  # no seed effect: about Welch's standard error


@pytest.mark.parametrize("groups,match", [([], "no groups"), ([[1.0], []], "has no values"),
                                          ([[1.0, np.nan]], "finite")])
def test_bad_input_is_refused(groups, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_mean(groups)


def test_difference_needs_the_same_seeds():
    with pytest.raises(ValueError, match="2 seeds for x but 1 for y"):
        bootstrap_difference([[1.0], [2.0]], [[1.0]])
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([[1.0, 2.0]], level=1.5)
