"""Part III's figures: tail-patch by k, attribution against influence, leave-k-out, and LDS."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ... import plots
from .interface import PROPONENTS, RANDOM

REFERENCE_COLORS = {PROPONENTS: "#000000", RANDOM: "#bbbbbb"}


def _color(method: str):
    return REFERENCE_COLORS.get(method) or plots.METHOD_COLORS.get(method.split(" (")[0])


def empty_figure(message: str, width: float = 6.4, height: float = 2.4):
    """A figure that says why there is nothing to plot."""
    fig, ax = plots.figure(width, height)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


def plot_tail_patch(summary: pd.DataFrame, order: Sequence[str]):
    """Mean tail-patch score (± 1 s.e. over queries) against k, one line per method and reference
    row, one panel per data set."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    fig, axes = plots.figure(width=4.2 * len(datasets), height=3.6, ncols=len(datasets), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        sub = summary[summary["dataset"] == d]
        for m in [m for m in order if m in set(sub["method"])]:
            s = sub[sub["method"] == m].sort_values("k")
            ref = m in REFERENCE_COLORS
            ax.errorbar(s["k"], s["mean"], yerr=s["se"].fillna(0), marker="o", markersize=3, capsize=2,
                        color=_color(m), linestyle="--" if ref else "-", label=m)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ks = sorted(set(sub["k"]))
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (examples in the one step)")
        ax.set_ylabel("tail-patch: support gained (nats)")
        ax.set_title(d)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_label_vs_influence(labels: pd.DataFrame, tail: pd.DataFrame, k: int, metric: str, methods: Sequence[str]):
    """Each method's label metric (x) against its tail-patch score at k (y), one panel per data set:
    attribution against influence. A method high on one axis and low on the other is where the two
    questions part."""
    datasets = list(dict.fromkeys(labels["dataset"]))
    fig, axes = plots.figure(width=4.2 * len(datasets), height=3.6, ncols=len(datasets), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        lab = labels[labels["dataset"] == d].set_index("method")["mean"]
        t = tail[(tail["dataset"] == d) & (tail["k"] == k)].set_index("method")
        for m in [m for m in methods if m in lab.index and m in t.index]:
            ax.errorbar(lab[m], t.loc[m, "mean"], yerr=t.loc[m, "se"] if np.isfinite(t.loc[m, "se"]) else 0,
                        marker="o", color=_color(m), capsize=2, linestyle="none")
            ax.annotate(m, (lab[m], t.loc[m, "mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{metric} (finds the labelled examples)")
        ax.set_ylabel(f"tail-patch @{k} (moves the model)")
        ax.set_title(d)
    return fig


def plot_leave_k_out(summary: pd.DataFrame, k: int, order: Sequence[str], flip_label: str):
    """Per method and reference row at k: the mean support lost when its top-k is removed (bars,
    ± 1 s.e.) and the share of queries whose behaviour flips (dots, right axis)."""
    sub = summary[summary["k"] == k]
    if sub.empty:
        return empty_figure(f"no leave-{k}-out retrains")
    datasets = list(dict.fromkeys(sub["dataset"]))
    fig, axes = plots.figure(width=4.6 * len(datasets), height=3.8, ncols=len(datasets), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        s = sub[sub["dataset"] == d].set_index("method")
        names = [m for m in order if m in s.index]
        x = np.arange(len(names))
        ax.bar(x, s.loc[names, "loss_change"], yerr=s.loc[names, "se"].fillna(0), capsize=2,
               color=[_color(m) for m in names])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
        ax.set_ylabel(f"support lost without the top-{k} (nats)")
        ax.set_title(d)
        twin = ax.twinx()
        twin.plot(x, s.loc[names, "flip_rate"], "kD", markersize=5)
        twin.set_ylim(-0.05, 1.05)
        twin.set_ylabel(flip_label)
        twin.grid(False)
    return fig


def plot_lds(lds: pd.DataFrame, labels: pd.DataFrame, metric: str, methods: Sequence[str]):
    """Each method's mean LDS with its confidence interval (left) beside its label metric (right),
    methods in the label metric's order, one row of panels per data set."""
    datasets = list(dict.fromkeys(lds["dataset"]))
    plots.setup_style()
    fig, axes = plots.plt.subplots(len(datasets), 2, figsize=(8.0, 0.6 + 2.6 * len(datasets)), squeeze=False)
    for row, d in zip(axes, datasets):
        lab = labels[labels["dataset"] == d].set_index("method")["mean"]
        names = sorted([m for m in methods if m in lab.index], key=lambda m: -lab[m])
        s = lds[lds["dataset"] == d].set_index("method").reindex(names)
        y = np.arange(len(names))
        err = np.vstack([s["mean"] - s["low"], s["high"] - s["mean"]]).clip(min=0)
        row[0].barh(y, s["mean"], xerr=np.nan_to_num(err), capsize=2, color=[_color(m) for m in names])
        row[0].axvline(0, color="grey", lw=0.8)
        row[0].set_yticks(y, names, fontsize=8)
        row[0].invert_yaxis()
        row[0].set_xlabel("LDS (Spearman, mean over queries)")
        row[0].set_title(f"{d}: LDS")
        row[1].barh(y, lab[names], color=[_color(m) for m in names])
        row[1].set_yticks(y, [])
        row[1].invert_yaxis()
        row[1].set_xlabel(metric)
        row[1].set_title(f"{d}: {metric}")
    return fig


__all__ = ["REFERENCE_COLORS", "empty_figure", "plot_tail_patch", "plot_label_vs_influence", "plot_leave_k_out",
           "plot_lds"]
