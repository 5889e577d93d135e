"""Part II's figures, in the book's style (``tda.plots``), from the tables of ``analysis`` and ``mechanism``."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ...plots import METHOD_COLORS, figure

NOTHING = "no hallucinated output to trace"


def _color(method: str):
    for name in sorted(METHOD_COLORS, key=len, reverse=True):  # "DDA (README pipeline)" takes DDA's colour
        if method.startswith(name):
            return METHOD_COLORS[name]
    return {"CEA": "#56b4e9"}.get(method.split(" ")[0], "#555555")


def empty_figure(message: str, width: float = 6.4, height: float = 2.4):
    """A figure that says why there is nothing to show (e.g. no hallucinated output to trace)."""
    fig, ax = figure(width, height)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11)
    return fig


def plot_methods(table, methods: Sequence[str] | None = None):
    """Per method (rows of ``analysis.comparison``): AUC per error set over all documents (solid)
    and on hard negatives only (hatched), mean over seeds with the bootstrap interval; the per-query
    AUC as a diamond where the method has one."""
    if table.empty:
        return empty_figure(NOTHING)
    t = table if methods is None else table[table["method"].isin(methods)]
    fig, ax = figure(max(6.4, 0.9 * len(t)), 3.8)
    x = np.arange(len(t))
    err = np.vstack([t["set auc mean"] - t["set auc low"], t["set auc high"] - t["set auc mean"]]).clip(0)
    colors = [_color(m) for m in t["method"]]
    ax.bar(x - 0.2, t["set auc mean"], 0.4, yerr=err, color=colors, alpha=0.9, capsize=3, label="per error set")
    ax.bar(x + 0.2, t["set hard_auc mean"], 0.4, color=colors, alpha=0.45, hatch="//",
           label="per error set, hard negatives only")
    has_pq = t["auc mean"].notna().to_numpy()
    ax.scatter(x[has_pq] - 0.2, t["auc mean"][has_pq], marker="D", color="black", s=18, zorder=3,
               label="per query (mean)")
    ax.set_xticks(x, t["method"], rotation=30, ha="right")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("AUC")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_events(table):
    """Per event type: the share of its England training summaries that were poisoned, and the
    share of its England test documents on which the model hallucinates."""
    if table.empty:
        return empty_figure("no runs")
    fig, ax = figure(6.4, 3.4)
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["poisoned share"], 0.4, label="poisoned share of England training summaries",
           color="#949494")
    ax.bar(x + 0.2, table["hallucination rate"], 0.4, label="hallucination rate on England test documents",
           color=_color("DDA"))
    ax.set_xticks(x, table["event"])
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("share")
    return fig


def plot_ablation(table, paper: Mapping[str, float] | None = None):
    """Mean AUC ± std of each ablation variant; the paper's figure as a marker where it has one."""
    if table.empty:
        return empty_figure(NOTHING)
    fig, ax = figure(6.4, 3.4)
    y = np.arange(len(table))[::-1]
    ax.barh(y, table["auc mean"], xerr=table["auc std"].fillna(0), color=_color("DDA"), alpha=0.85, capsize=4,
            label="ours")
    if paper:
        py = [yy for yy, v in zip(y, table["variant"]) if v in paper]
        px = [paper[v] for v in table["variant"] if v in paper]
        ax.scatter(px, py, marker="D", color="black", zorder=3, label="paper")
    ax.set_yticks(y, table["variant"])
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("AUC (mean ± std over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_beta(curves: Mapping[str, object], knee: float = 0.4, xlabel: str | None = None):
    """AUC against β, one line (mean over seeds, ± std band) per labelled curve of ``analysis.beta_curve``."""
    curves = {k: c for k, c in curves.items() if not c.empty}
    if not curves:
        return empty_figure(NOTHING)
    fig, ax = figure(6.4, 3.6)
    styles = ["-", "--", ":", "-."]
    for i, (label, c) in enumerate(curves.items()):
        color = _color("DDA (README" if "README" in label else "DDA") if i < 2 else "#555555"
        ax.plot(c["beta"], c["auc mean"], ls=styles[i % 4], marker="o", ms=3, color=color, label=label)
        std = c["auc std"].fillna(0)
        ax.fill_between(c["beta"], c["auc mean"] - std, c["auc mean"] + std, color=color, alpha=0.12)
    ax.axvline(knee, color="grey", ls=":", lw=1)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlabel(xlabel or r"$\beta$ (weight of the base model's term subtracted)")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=7)
    return fig


def plot_sizes(table, methods: Sequence[str] | None = None):
    """Mean AUC ± std against parameter count (log scale), one line per method (column ``method``)."""
    if table.empty:
        return empty_figure(NOTHING)
    fig, ax = figure(6.4, 3.8)
    for m in (methods or list(dict.fromkeys(table["method"]))):
        t = table[table["method"] == m].sort_values("parameters")
        if t.empty:
            continue
        ax.errorbar(t["parameters"], t["auc mean"], yerr=t["auc std"].fillna(0), marker="o", capsize=3,
                    color=_color(m), ls="--" if "README" in m else "-", label=m)
    ax.set_xscale("log")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("parameters of the model (log scale)")
    ax.set_ylabel("AUC")
    ax.legend(fontsize=7)
    return fig


def plot_influence_checkpoints(curve, averaged: float | None = None):
    """AUC of each checkpoint's influence alone (minimal pair per query; README pair per error set
    when present), with the denoised average (β = 0) as a line."""
    if curve.empty:
        return empty_figure(NOTHING)
    fig, ax = figure(6.4, 3.4)
    ax.errorbar(curve["checkpoint"], curve["auc mean"], yerr=curve["auc std"].fillna(0), marker="o", capsize=3,
                color=_color("DDA"), label="minimal pair at one checkpoint (per query)")
    if "README pair set auc mean" in curve:
        ax.plot(curve["checkpoint"], curve["README pair set auc mean"], marker="s", ls="--", color="#555555",
                label="README pair at one checkpoint (per error set)")
    if averaged is not None:
        ax.axhline(averaged, color="black", lw=1, label="minimal pair, average over epochs 1..N (β = 0)")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xticks(curve["checkpoint"])
    ax.set_xlabel("checkpoint (0 = base model before fine-tuning, i = after epoch i)")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_shrinkage(shrink):
    """Median gradient norm of each kind of training document at θ0 and at θN (``mechanism.gradient_shrinkage``)."""
    if shrink.empty:
        return empty_figure(NOTHING)
    fig, ax = figure(6.4, 3.4)
    x = np.arange(len(shrink))
    ax.bar(x - 0.2, shrink["gradient norm at θ0"], 0.4, color="#949494", label="at θ0 (base model)")
    ax.bar(x + 0.2, shrink["gradient norm at θN"], 0.4, color=_color("DDA"), label="at θN (after fine-tuning)")
    ax.set_xticks(x, [f"{k}\n({z})" if shrink["size"].nunique() > 1 else k
                      for k, z in zip(shrink["kind"], shrink["size"])])
    ax.set_ylabel("median gradient norm")
    ax.legend(fontsize=8)
    return fig


__all__ = ["NOTHING", "empty_figure", "plot_methods", "plot_events", "plot_ablation", "plot_beta", "plot_sizes",
           "plot_influence_checkpoints", "plot_shrinkage"]
