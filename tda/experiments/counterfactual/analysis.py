"""Part III's analysis: each method's label metric on the case's queries, and summaries of the
tail-patch, leave-k-out and LDS tables (``pipeline``) per method and k, as the chapters show them
and the results files record them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ... import metrics
from ...counterfactual import lds_summary
from .interface import REFERENCES, Case, check_methods
from .pipeline import CaseResults

LABEL_NAMES = {"mrr": "MRR", "auc": "AUC"}


def label_table(case: Case, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (method, query): the method's label metric on the query (``case.label_metric``):
    MRR of the first positive among the rows the method scores (ties pessimistic, as Part I), or
    ROC AUC over all training rows with the positives as positives (as Part II)."""
    rows = []
    for m in check_methods(case, methods):
        for j in range(len(case.queries)):
            s = case.scores[m][j]
            if case.label_metric == "mrr":
                scored = np.flatnonzero(np.isfinite(s))
                relevant = np.flatnonzero(np.isin(scored, case.positives[j]))
                value = float(metrics.mrr(s[scored][None, :], [relevant])[0])
            else:
                rel = np.zeros(len(s), dtype=bool)
                rel[case.positives[j]] = True
                value = float(metrics.roc_auc(np.nan_to_num(s, nan=-np.inf)[None, :], rel[None, :])[0])
            rows.append({"dataset": case.name, "method": m, "query": j, "slice": case.query_slice[j],
                         "metric": case.label_metric, "value": value})
    return pd.DataFrame(rows)


def _se(x: pd.Series) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def _order(df: pd.DataFrame, order: Sequence[str] | None) -> pd.DataFrame:
    if order is None or df.empty:
        return df
    rank = {m: i for i, m in enumerate(order)}
    return df.sort_values(["dataset", "method"], key=lambda c: c.map(rank) if c.name == "method" else c,
                          kind="stable").reset_index(drop=True)


def label_summary(table: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean label metric per (dataset, method) over the case's queries."""
    out = table.groupby(["dataset", "method", "metric"], sort=False)["value"].agg(
        mean="mean", queries="size").reset_index()
    return _order(out, order)


def tail_patch_summary(table: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean tail-patch score per (dataset, method, k) with its standard error over queries."""
    out = table.groupby(["dataset", "method", "k"], sort=False)["tail_patch"].agg(
        mean="mean", se=_se, queries="size").reset_index()
    return _order(out, order)


def leave_k_out_summary(table: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per (dataset, method, k): mean loss change (support lost) and its standard error, the flip
    rate (share of the sampled queries whose behaviour is gone), and how many labelled positives
    the selection held on average."""
    g = table.groupby(["dataset", "method", "k"], sort=False)
    out = g["loss_change"].agg(loss_change="mean", se=_se, queries="size")
    out["flip_rate"] = g["flipped"].mean()
    out["flips"] = g["flipped"].sum()
    out["positives removed"] = g["positives removed"].mean()
    return _order(out.reset_index(), order)


def lds_summary_table(table: pd.DataFrame, level: float = 0.95, seed: int = 0,
                      order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean LDS per (dataset, method) with a bootstrap confidence interval over queries
    (``tda.counterfactual.lds_summary``), and how many queries had none."""
    rows = []
    for (dataset, method), g in table.groupby(["dataset", "method"], sort=False):
        rows.append({"dataset": dataset, "method": method, **lds_summary(g["lds"].to_numpy(), level=level, seed=seed)})
    return _order(pd.DataFrame(rows), order)


def per_query(table: pd.DataFrame, value: str, k: int | None = None) -> dict[str, np.ndarray]:
    """``{method: values over the queries every method has, in query order}`` of one table column
    (at ``k`` where the table has one), for the paired comparisons of the claims."""
    df = table if k is None else table[table["k"] == k]
    wide = df.pivot_table(index="query", columns="method", values=value, aggfunc="first", sort=True).dropna()
    return {m: wide[m].to_numpy(dtype=np.float64) for m in wide.columns}


def means(summary: pd.DataFrame, column: str = "mean", k: int | None = None) -> dict[str, float]:
    """``{method: value}`` of one summary column (at ``k`` where the summary has one)."""
    df = summary if k is None else summary[summary["k"] == k]
    return {m: float(v) for m, v in zip(df["method"], df[column])}


def overview(labels: pd.DataFrame, tail: pd.DataFrame, loo: pd.DataFrame, lds: pd.DataFrame, k: int,
             metric: str, order: Sequence[str]) -> pd.DataFrame:
    """One row per method and reference row: its label metric, tail-patch and leave-k-out at ``k``,
    and its LDS with the interval (blank where a row has no such number)."""
    out = []
    for m in order:
        row = {"method": m}
        lab = labels[labels["method"] == m]
        row[LABEL_NAMES[metric]] = round(float(lab["mean"].iloc[0]), 3) if len(lab) else None
        t = tail[(tail["method"] == m) & (tail["k"] == k)]
        row[f"tail-patch @{k}"] = f"{t['mean'].iloc[0]:+.3f} ± {t['se'].iloc[0]:.3f}" if len(t) else ""
        lo = loo[(loo["method"] == m) & (loo["k"] == k)] if not loo.empty else loo
        row[f"loss change @{k}"] = f"{lo['loss_change'].iloc[0]:+.3f}" if len(lo) else ""
        row[f"flip rate @{k}"] = (f"{lo['flip_rate'].iloc[0]:.2f} ({int(lo['flips'].iloc[0])}/"
                                  f"{int(lo['queries'].iloc[0])})" if len(lo) else "")
        d = lds[lds["method"] == m] if not lds.empty else lds
        row["LDS [95% CI]"] = (f"{d['mean'].iloc[0]:+.3f} [{d['low'].iloc[0]:+.3f}, {d['high'].iloc[0]:+.3f}]"
                               if len(d) and np.isfinite(d["mean"].iloc[0]) else "")
        out.append(row)
    return pd.DataFrame(out)


def results_entry(labels: pd.DataFrame, tail: pd.DataFrame, loo: pd.DataFrame, lds: pd.DataFrame,
                  methods: Sequence[str]) -> dict[str, dict]:
    """Per method (and reference row): ``"label"``, ``"tail_patch"`` (mean by k), ``"leave_k_out"``
    (mean loss change, flip rate and queries by k), ``"lds"`` (mean, interval, queries): the form of
    ``book/executed/results/counterfactual_*.json``."""
    out: dict[str, dict] = {}
    for m in list(methods) + list(REFERENCES):
        e: dict = {}
        lab = labels[labels["method"] == m]
        if len(lab):
            e["label"] = {"metric": str(lab["metric"].iloc[0]), "mean": float(lab["mean"].iloc[0])}
        t = tail[tail["method"] == m]
        e["tail_patch"] = {str(int(k)): {"mean": float(a), "se": float(b), "queries": int(n)}
                           for k, a, b, n in zip(t["k"], t["mean"], t["se"], t["queries"])}
        lo = loo[loo["method"] == m] if not loo.empty else loo
        e["leave_k_out"] = {str(int(k)): {"loss_change": float(a), "se": float(b), "flip_rate": float(f),
                                          "queries": int(n)}
                            for k, a, b, f, n in zip(lo["k"], lo["loss_change"], lo["se"], lo["flip_rate"],
                                                     lo["queries"])} if len(lo) else {}
        d = lds[lds["method"] == m] if not lds.empty else lds
        if len(d):
            r = d.iloc[0]
            e["lds"] = {"mean": float(r["mean"]), "low": float(r["low"]), "high": float(r["high"]),
                        "level": float(r["level"]), "queries": int(r["queries"]), "undefined": int(r["undefined"])}
        out[m] = e
    return out


def _number(value, where: str, finite: bool = True) -> float | None:
    if value is None and not finite:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def check_results(data: dict, source: str = "results") -> None:
    """Check a Part III results file (``book/executed/results/counterfactual_*.json``, as read back):
    per data set and method, ``tail_patch`` by k (a mean each), ``leave_k_out`` by k (mean loss
    change and a flip rate in [0, 1]) for the methods retrained for, ``lds`` (mean inside its
    interval) for the attribution methods, and ``claims`` whose ids are C1…. Leave-k-out may be
    missing only where the data set's guards list no leave-k-out query (the full run shows the
    behaviour on none); a chapter with nothing to trace (``"traced": false``) has no data set and no
    claim. ValueError naming the field."""
    if data.get("traced", True) is False:
        if data.get("datasets") or data.get("claims"):
            raise ValueError(f"{source}: nothing was traced, yet it has data sets or claims")
        return
    datasets = data.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError(f"{source}: no 'datasets' (expected one entry per data set)")
    for d, entry in datasets.items():
        methods = entry.get("methods") if isinstance(entry, dict) else None
        if not methods:
            raise ValueError(f"{source}: datasets.{d} has no 'methods'")
        if not any(e.get("lds") for e in methods.values()):
            raise ValueError(f"{source}: datasets.{d}: no method has 'lds'")
        # leave-k-out retrains for queries the full run shows; none may be (the guards say so)
        retrained = (entry.get("guards") or {}).get("leave-k-out queries", [None])
        if retrained and not any(e.get("leave_k_out") for e in methods.values()):
            raise ValueError(f"{source}: datasets.{d}: no method has 'leave_k_out' (leave-k-out queries: "
                             f"{retrained})")
        for m, e in methods.items():
            where = f"{source}: datasets.{d}.methods.{m}"
            if not e.get("tail_patch"):
                raise ValueError(f"{where}: no 'tail_patch' by k")
            for k, t in e["tail_patch"].items():
                if not str(k).isdigit():
                    raise ValueError(f"{where}.tail_patch: key {k!r} is not a k")
                _number(t.get("mean"), f"{where}.tail_patch.{k}.mean")
            for k, lo in e.get("leave_k_out", {}).items():
                _number(lo.get("loss_change"), f"{where}.leave_k_out.{k}.loss_change")
                if not 0.0 <= _number(lo.get("flip_rate"), f"{where}.leave_k_out.{k}.flip_rate") <= 1.0:
                    raise ValueError(f"{where}.leave_k_out.{k}.flip_rate: {lo['flip_rate']} is not a share")
            if "lds" in e:
                mean = _number(e["lds"].get("mean"), f"{where}.lds.mean", finite=False)
                low = _number(e["lds"].get("low"), f"{where}.lds.low", finite=False)
                high = _number(e["lds"].get("high"), f"{where}.lds.high", finite=False)
                if mean is not None and not (low is not None and high is not None and low <= mean <= high):
                    raise ValueError(f"{where}.lds: mean {mean} outside its interval [{low}, {high}]")
    claims_ = data.get("claims")
    if not isinstance(claims_, list) or not claims_:
        raise ValueError(f"{source}: no 'claims' list")
    for c in claims_:
        if not str(c.get("id", "")).startswith("C") or not c.get("verdict") or not c.get("rule"):
            raise ValueError(f"{source}: claim {c.get('id')!r} lacks a C id, a verdict or a rule")


@dataclass
class Summary:
    """Every case's tables pooled, and their summaries (one row per data set, method and k)."""

    labels: pd.DataFrame  # per query
    tail: pd.DataFrame
    loo: pd.DataFrame
    lds: pd.DataFrame
    label_means: pd.DataFrame
    tail_means: pd.DataFrame
    loo_means: pd.DataFrame
    lds_means: pd.DataFrame
    metric: str


def summarise(results: Sequence[CaseResults], order: Sequence[str] | None = None) -> Summary:
    """Pool the cases of a chapter (one per data set) and summarise each table."""
    if not results:
        raise ValueError("no case to summarise")
    metrics_ = {r.case.label_metric for r in results}
    if len(metrics_) > 1:
        raise ValueError(f"cases with different label metrics {sorted(metrics_)}; summarise them apart")
    labels = pd.concat([label_table(r.case, r.settings.methods) for r in results], ignore_index=True)
    tail = pd.concat([r.tail for r in results], ignore_index=True)
    loo = pd.concat([r.loo for r in results if not r.loo.empty], ignore_index=True) if any(
        not r.loo.empty for r in results) else pd.DataFrame()
    lds = pd.concat([r.lds for r in results if not r.lds.empty], ignore_index=True) if any(
        not r.lds.empty for r in results) else pd.DataFrame()
    return Summary(labels=labels, tail=tail, loo=loo, lds=lds, label_means=label_summary(labels, order),
                   tail_means=tail_patch_summary(tail, order),
                   loo_means=leave_k_out_summary(loo, order) if not loo.empty else pd.DataFrame(),
                   lds_means=lds_summary_table(lds, order=order) if not lds.empty else pd.DataFrame(),
                   metric=metrics_.pop())


def dataset_view(summary: Summary, dataset: str) -> dict[str, pd.DataFrame]:
    """The summaries of one data set (for ``overview`` and ``results_entry``)."""
    pick = lambda df: df[df["dataset"] == dataset] if not df.empty else df  # noqa: E731
    return {"labels": pick(summary.label_means), "tail": pick(summary.tail_means), "loo": pick(summary.loo_means),
            "lds": pick(summary.lds_means)}


__all__ = ["LABEL_NAMES", "label_table", "label_summary", "tail_patch_summary", "leave_k_out_summary",
           "lds_summary_table", "per_query", "means", "overview", "results_entry", "check_results", "Summary",
           "summarise", "dataset_view"]
