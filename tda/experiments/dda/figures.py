"""Part II's figures, in the book's style (``tda.plots``), from the tables of ``analysis``."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ...plots import METHOD_COLORS, figure
from .analysis import run_means
from .pipeline import EXTRA_METHODS, METHODS


def _color(method: str):
    return METHOD_COLORS.get(method, "#555555")


def empty_figure(message: str, width: float = 6.4, height: float = 2.4):
    """A figure that says why there is nothing to show (e.g. no hallucinated output to trace)."""
    fig, ax = figure(width, height)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=11)
    return fig


def plot_methods(per_query, metric: str = "auc", methods: Sequence[str] = METHODS + EXTRA_METHODS):
    """Mean over seeds (bars, ± std) of each method's per-run average; dots are single seeds."""
    if per_query.empty:
        return empty_figure("no hallucinated output to trace")
    means = run_means(per_query, ("method",))
    methods = [m for m in methods if m in set(means["method"])]
    fig, ax = figure(max(6.4, 1.1 * len(methods)), 3.6)
    for i, m in enumerate(methods):
        v = means.loc[means["method"] == m, metric].to_numpy()
        ax.bar(i, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else None, color=_color(m), alpha=0.85, capsize=4)
        ax.scatter(np.full(len(v), i) + np.linspace(-0.15, 0.15, len(v)), v, color="black", s=12, zorder=3)
    ax.set_xticks(range(len(methods)), methods)
    if metric == "auc":
        ax.axhline(0.5, color="grey", ls="--", lw=1)
        ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"{metric.upper() if metric == 'auc' else metric} (mean over queries)")
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
        return empty_figure("no hallucinated output to trace")
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
    ax.set_xlabel("AUC (mean over queries, mean ± std over seeds)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_beta(curve, per_seed=None, knee: float = 0.4):
    """DDA's AUC against β: mean over seeds with a ± std band, single seeds as thin lines."""
    if curve.empty:
        return empty_figure("no hallucinated output to trace")
    fig, ax = figure(6.4, 3.6)
    if per_seed is not None and not per_seed.empty:
        for _, g in per_seed.groupby("seed"):
            ax.plot(g["beta"], g["auc"], color=_color("DDA"), lw=0.8, alpha=0.4)
    ax.plot(curve["beta"], curve["auc mean"], color=_color("DDA"), marker="o", ms=4, label="DDA, mean over seeds")
    std = curve["auc std"].fillna(0)
    ax.fill_between(curve["beta"], curve["auc mean"] - std, curve["auc mean"] + std, color=_color("DDA"), alpha=0.2)
    ax.axvline(knee, color="grey", ls=":", lw=1)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlabel(r"$\beta$ (weight of the base model's influence subtracted)")
    ax.set_ylabel("AUC")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_sizes(table, methods: Sequence[str] = METHODS):
    """Mean AUC ± std against parameter count (log scale), one line per method."""
    if table.empty:
        return empty_figure("no hallucinated output to trace")
    fig, ax = figure(6.4, 3.8)
    for m in methods:
        t = table[table["method"] == m].sort_values("parameters")
        if t.empty:
            continue
        ax.errorbar(t["parameters"], t["auc mean"], yerr=t["auc std"].fillna(0), marker="o", capsize=3,
                    color=_color(m), label=m)
    ax.set_xscale("log")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("parameters of the model (log scale)")
    ax.set_ylabel("AUC")
    ax.legend(fontsize=8, ncol=2)
    return fig


def plot_influence_checkpoints(curve, averaged: float | None = None):
    """AUC of each checkpoint's contrastive influence, with the denoised average as a line."""
    if curve.empty:
        return empty_figure("no hallucinated output to trace")
    fig, ax = figure(6.4, 3.4)
    ax.errorbar(curve["checkpoint"], curve["auc mean"], yerr=curve["auc std"].fillna(0), marker="o", capsize=3,
                color=_color("DDA"), label="one checkpoint, C[IS_θi]")
    if averaged is not None:
        ax.axhline(averaged, color="black", lw=1, label="average over epochs 1..N (β = 0)")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xticks(curve["checkpoint"])
    ax.set_xlabel("checkpoint (0 = base model before fine-tuning, i = after epoch i)")
    ax.set_ylabel("AUC")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    return fig


__all__ = ["empty_figure", "plot_methods", "plot_events", "plot_ablation", "plot_beta", "plot_sizes",
           "plot_influence_checkpoints"]
