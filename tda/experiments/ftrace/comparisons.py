"""The comparisons behind Part I's verdicts: paired (two methods on the same queries) and unpaired
(one method on two query slices), each with a two-level bootstrap interval (``tda.stats``).

The rule, the same for every claim: ``a`` *beats* ``b`` when the mean difference is larger than
``margin`` (practically clear) and its 95% bootstrap interval, resampling seeds and then queries
within each seed, lies above zero (statistically clear). Seeds are resampled because a seed draws
its own world, base model, queries and fine-tuning, so the queries of one seed are not
independent draws; pooling them as if they were (the rule before issue 11) understated the
uncertainty. ``se`` is the bootstrap replicates' standard deviation, for display.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ...stats import LEVEL, bootstrap_difference, bootstrap_mean
from ..variants import select

RULE = (f"higher by more than the margin, with the {LEVEL:.0%} bootstrap interval of the difference (over seeds, "
        "then queries) above zero")


def _side(df: pd.DataFrame, which) -> tuple[pd.DataFrame, str | None]:
    """The rows of one side of a comparison (a method label, or a mapping of variant columns) and
    its method label."""
    rows = df[df["method"] == which] if isinstance(which, str) else select(df, **dict(which))
    labels = rows["method"].unique()
    if len(labels) > 1:
        raise ValueError(f"{which} selects several methods ({list(labels)[:4]}): add variant columns")
    return rows, (labels[0] if len(labels) else which if isinstance(which, str) else None)


def _nan_result(**extra) -> dict:
    return {"diff": float("nan"), "se": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
            "beats": False, **extra}


def compare(per_query: pd.DataFrame, a, b, metric: str = "mrr", margin: float = 0.02, **filters) -> dict:
    """Paired comparison of methods ``a`` and ``b`` on the same queries (see the module docstring).

    ``a`` and ``b`` are method labels or mappings of variant columns (e.g. ``{"units": "block.0"}``);
    ``filters`` select rows (e.g. ``dataset="trex", slice="learned"``). Returns ``n`` (queries),
    ``mean_a``, ``mean_b``, ``diff`` (mean over queries of metric(a) - metric(b)), ``se``,
    ``ci_low``, ``ci_high``, ``beats``, ``margin``.
    """
    df = select(per_query, **filters)
    (rows_a, label_a), (rows_b, label_b) = _side(df, a), _side(df, b)
    missing = [str(s) for s, rows in ((a, rows_a), (b, rows_b)) if rows.empty]
    if missing:
        raise ValueError(f"no rows for method(s) {missing} with {filters}")
    both = pd.concat([rows_a.assign(_side="a"), rows_b.assign(_side="b")])
    wide = both.pivot_table(index=["dataset", "seed", "query"], columns="_side", values=metric).dropna()
    n = len(wide)
    base = {"a": label_a, "b": label_b, "metric": metric, "n": n, "margin": margin,
            "mean_a": float(wide["a"].mean()) if n else float("nan"),
            "mean_b": float(wide["b"].mean()) if n else float("nan")}
    if n < 2:
        return _nan_result(**base, diff=float((wide["a"] - wide["b"]).mean()) if n else float("nan"))
    d = wide["a"] - wide["b"]
    iv = bootstrap_mean([g.to_numpy() for _, g in d.groupby(level=["dataset", "seed"])])
    return {**base, "diff": iv.estimate, "se": iv.se, "ci_low": iv.low, "ci_high": iv.high,
            "beats": bool(iv.estimate > margin and iv.low > 0)}


def compare_groups(x: Sequence[float], y: Sequence[float], margin: float = 0.02, x_seeds: Sequence | None = None,
                   y_seeds: Sequence | None = None) -> dict:
    """Unpaired comparison of two groups of per-query values (e.g. one method on the learned and on
    the known slice): ``x`` beats ``y`` by the module's rule. ``x_seeds`` / ``y_seeds`` give each
    value's seed (None: one seed); only seeds present in both groups are compared."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xs = np.zeros(len(x), dtype=int) if x_seeds is None else np.asarray(x_seeds)
    ys = np.zeros(len(y), dtype=int) if y_seeds is None else np.asarray(y_seeds)
    if len(xs) != len(x) or len(ys) != len(y):
        raise ValueError(f"{len(xs)} seeds for {len(x)} x values or {len(ys)} for {len(y)} y values")
    shared = sorted(set(xs.tolist()) & set(ys.tolist()))
    keep_x, keep_y = np.isin(xs, shared), np.isin(ys, shared)
    x, xs, y, ys = x[keep_x], xs[keep_x], y[keep_y], ys[keep_y]
    base = {"n_x": len(x), "n_y": len(y), "seeds": len(shared), "margin": margin,
            "mean_x": float(x.mean()) if len(x) else float("nan"), "mean_y": float(y.mean()) if len(y) else float("nan")}
    if len(x) < 2 or len(y) < 2:
        return _nan_result(**base)
    iv = bootstrap_difference([x[xs == s] for s in shared], [y[ys == s] for s in shared])
    return {**base, "diff": iv.estimate, "se": iv.se, "ci_low": iv.low, "ci_high": iv.high,
            "beats": bool(iv.estimate > margin and iv.low > 0)}


def comparison_rows(comparisons: Sequence[dict], a: str = "comparison", **labels) -> list[dict]:
    """``compare`` results as table rows (rounded for display)."""
    return [{**labels, a: f"{c['a']} vs {c['b']}", "queries": c["n"], "MRR a": round(c["mean_a"], 3),
             "MRR b": round(c["mean_b"], 3), "difference": round(c["diff"], 3),
             "95% interval": f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}]", "beats": c["beats"]} for c in comparisons]


__all__ = ["RULE", "compare", "compare_groups", "comparison_rows"]
