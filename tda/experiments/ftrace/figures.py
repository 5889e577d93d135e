"""Part I's figures, in the book's style (``tda.plots``), from the tables of ``analysis``."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ... import plots
from ...gradients import unit_order
from ..variants import select
from .analysis import DATASET_LABELS, MAIN_TRACIN, WHICH_LABELS, unit_label
from .claims import PAPER_PROPONENTS, PAPER_TABLES
from .pipeline import DATASETS, SLICES, label_fraction


def method_color(name: str) -> str:
    """The book's colour of a method, or of the method a variant's label starts with."""
    for key in sorted(plots.METHOD_COLORS, key=len, reverse=True):
        if name == key or name.startswith(key + " "):
            return plots.METHOD_COLORS[key]
    return "#555555"


def plot_method_bars(summary, methods: Sequence[str], metric: str = "mrr", paper: Mapping | None = PAPER_TABLES,
                     datasets: Sequence[str] = DATASETS):
    """Horizontal bars of a metric per method (mean ± std over seeds), one panel per data set,
    with the paper's value as a black diamond where it reported one."""
    fig, axes = plots.figure(width=10, height=0.45 * len(methods) + 1.6, ncols=len(datasets), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, dataset in zip(axes, datasets):
        sub = summary[summary["dataset"] == dataset].set_index("method")
        y = np.arange(len(methods))[::-1]
        vals = [float(sub.loc[m, metric]) if m in sub.index else np.nan for m in methods]
        errs = [float(sub.loc[m, f"{metric}_std"]) if m in sub.index else 0.0 for m in methods]
        ax.barh(y, vals, xerr=errs, color=[method_color(m) for m in methods], alpha=0.9, capsize=3)
        if paper:
            for yi, m in zip(y, methods):
                p = paper.get(dataset, {}).get(m, {}).get(metric)
                if p is not None:
                    ax.plot(p[0] / 100, yi, marker="D", color="black", markersize=6,
                            label="paper" if yi == max(y[[i for i, mm in enumerate(methods)
                                                         if paper.get(dataset, {}).get(mm, {}).get(metric)]]) else None)
        ax.set_yticks(y, methods)
        ax.set_xlim(0, 1.05)
        ax.set_xlabel(metric.upper() if metric == "mrr" else metric)
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_layers(summary: pd.DataFrame, datasets: Sequence[str] = DATASETS, metric: str = "mrr"):
    """MRR by layer: TracIn per parameter unit and EMBED per hidden layer, one panel per data set.

    ``summary``: a ``seed_summary`` of ``layer_scores`` with its variant columns ``units`` and
    ``layer`` (``with_variants``). The x axis runs from the embedding to the top of the model:
    TracIn's ``embedding``, each block, the head; EMBED's layer 0 (embedding output) and the output
    of each block. Dashed lines: TracIn over all parameters and EMBED over all layers; dotted: BM25.
    """
    fig, axes = plots.figure(width=10, height=3.8, ncols=len(datasets), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, dataset in zip(axes, datasets):
        sub = summary[summary["dataset"] == dataset]
        single = sub[sub["units"].notna() & (sub["units"] != "all")]
        units = [u for u in unit_order(single["units"].unique()) if u != "other"]
        x = np.arange(len(units))
        rows = [select(single, units=u).iloc[0] for u in units]
        ax.errorbar(x, [float(r[metric]) for r in rows], yerr=[float(r[f"{metric}_std"]) for r in rows], marker="o",
                    capsize=3, color=method_color("TracIn"), label="TracIn, one unit")
        embed = sub[sub["layer"].notna() & (sub["layer"] != "all")]
        layers = sorted(int(i) for i in embed["layer"])
        rows = [select(embed, layer=i).iloc[0] for i in layers]
        ax.errorbar(np.arange(len(layers)), [float(r[metric]) for r in rows],
                    yerr=[float(r[f"{metric}_std"]) for r in rows], marker="s", capsize=3, color=method_color("EMBED"),
                    label="EMBED, one layer")
        for rows_, color, label in ((select(sub, units="all"), method_color("TracIn"), "TracIn, all parameters"),
                                    (select(sub, layer="all"), method_color("EMBED"), "EMBED, all layers"),
                                    (sub[sub["method"] == "BM25"], method_color("BM25"), "BM25")):
            if len(rows_):
                ax.axhline(float(rows_[metric].iloc[0]), color=color, linestyle=":" if label == "BM25" else "--",
                           linewidth=1.2, label=label)
        ticks = max(len(units), len(layers))
        names = [unit_label(units[i]) if i < len(units) else "" for i in range(ticks)]
        ax.set_xticks(np.arange(ticks), names, rotation=30, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(metric.upper() if metric == "mrr" else metric)
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
    axes[-1].legend(fontsize=7, loc="lower right")
    return fig


def plot_tracin_checkpoints(summary: pd.DataFrame, datasets: Sequence[str] = DATASETS, units: str | None = None,
                            metric: str = "mrr"):
    """MRR of TracIn at each single checkpoint (markers) and averaged (horizontal lines), for
    fine-tuning and pre-training checkpoints, one panel per data set (cosine, corrected).

    ``summary``: a ``seed_summary`` of ``checkpoint_scores`` by its variant columns."""
    units = units or MAIN_TRACIN["units"]
    fig, axes = plots.figure(width=10, height=3.6, ncols=len(datasets), sharey=True)
    axes = np.atleast_1d(axes)
    colors = {"ft": method_color("TracIn"), "pt": "#56b4e9"}
    for ax, dataset in zip(axes, datasets):
        sub = select(summary, dataset=dataset, units=units, similarity="cosine", correction="corrected")
        for which in ("ft", "pt"):
            s = sub[sub["which"] == which]
            single = s[s["checkpoint"] != "average"]
            single = single.iloc[np.argsort([label_fraction(c) for c in single["checkpoint"]], kind="stable")]
            epochs = list(single["checkpoint"])
            pos = np.arange(len(epochs)) + (0 if which == "ft" else len(sub[sub["which"] == "ft"]) + 1)
            ax.errorbar(pos, single[metric], yerr=single[f"{metric}_std"], marker="o", linestyle="", capsize=3,
                        color=colors[which], label=f"{WHICH_LABELS[which]}, one checkpoint")
            avg = s[s["checkpoint"] == "average"]
            if len(avg):
                ax.hlines(float(avg[metric].iloc[0]), pos[0] - 0.4, pos[-1] + 0.4, color=colors[which], linewidth=2,
                          label=f"{WHICH_LABELS[which]}, average")
            for p_, ep in zip(pos, epochs):
                ax.annotate(f"{which.upper()}\n{ep}", (p_, 0.02), ha="center", fontsize=7)
        ax.set_xticks([])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(metric.upper() if metric == "mrr" else metric)
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.18)
    fig.set_layout_engine(None)
    return fig


def plot_slice_checkpoints(per_query: pd.DataFrame, datasets: Sequence[str] = DATASETS, metric: str = "mrr"):
    """TracIn's MRR at each single checkpoint, one line per query slice (known, learned, other), one
    panel per data set: pre-training checkpoints on the left, fine-tuning ones on the right.

    ``per_query``: the long table of ``slice_checkpoint_scores`` (variant columns ``which``, ``checkpoint``)."""
    fig, axes = plots.figure(width=10, height=3.8, ncols=len(datasets), sharey=True)
    axes = np.atleast_1d(axes)
    colors = {"known": "#0173b2", "learned": "#de8f05", "other": "#949494"}
    for ax, dataset in zip(axes, datasets):
        df = per_query[(per_query["dataset"] == dataset) & (per_query["checkpoint"] != "average")]
        points = sorted(set(zip(df["which"], df["checkpoint"])), key=lambda p: (p[0] != "pt", label_fraction(p[1])))
        x = {p: i for i, p in enumerate(points)}
        labels = [f"{which.upper()}\n{ck}" for which, ck in points]
        for sl in SLICES:
            s = df[df["slice"] == sl]
            if not len(s):
                continue
            g = s.groupby(["which", "checkpoint"])[metric].agg(["mean", "count", "std"]).reindex(points)
            ax.errorbar([x[p] for p in points], g["mean"], yerr=g["std"] / np.sqrt(g["count"].clip(lower=1)),
                        marker="o", capsize=3, color=colors[sl], label=f"{sl} ({int(g['count'].max())} queries)")
        n_pt = sum(which == "pt" for which, _ in points)
        if 0 < n_pt < len(points):
            ax.axvline(n_pt - 0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set_xticks(range(len(points)), labels, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("checkpoint (PT / FT: how far into pre-training / fine-tuning)")
        ax.set_ylabel("TracIn MRR")
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
        ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_saturation(binned, norms, methods: Sequence[str], datasets: Sequence[str] = DATASETS):
    """Top row: MRR per bin of the query's starting loss, per method. Bottom row: the query's gradient
    norm (``gradient_norm_table``) at the fine-tuning checkpoints against that loss."""
    plots.setup_style()
    fig, axes = plots.plt.subplots(2, len(datasets), figsize=(10, 7), squeeze=False)
    for j, dataset in enumerate(datasets):
        ax = axes[0, j]
        sub = binned[binned["dataset"] == dataset]
        cats = [c for c in binned["loss bin"].cat.categories if c in set(sub["loss bin"].astype(str))]
        x = {c: i for i, c in enumerate(cats)}
        for m in methods:
            s = sub[sub["method"] == m]
            if not len(s):
                continue
            ax.errorbar([x[str(c)] for c in s["loss bin"].astype(str)], s["mean"], yerr=s["se"], marker="o", capsize=3,
                        color=method_color(m), label=m, linestyle="-" if not m.endswith("ckpts)") else "--")
        counts = sub.groupby("loss bin", observed=True)["count"].max()
        ax.set_xticks(range(len(cats)), [f"{c}\n(n={int(counts.get(c, 0))})" for c in cats], fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("query loss at the start of fine-tuning (nats)")
        ax.set_ylabel("MRR")
        ax.set_title(DATASET_LABELS.get(dataset, dataset))
        ax = axes[1, j]
        n = norms[norms["dataset"] == dataset]
        for ck in sorted(n["checkpoint"].unique(), key=label_fraction):
            s = n[n["checkpoint"] == ck]
            ax.scatter(s["loss_before"].clip(lower=1e-3), s["grad_norm"], s=10, alpha=0.6, label=f"FT {ck}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("query loss at the start of fine-tuning (nats)")
        ax.set_ylabel("query gradient norm (all parameters)")
    axes[0, -1].legend(fontsize=7)
    axes[1, -1].legend(fontsize=7, title="checkpoint", title_fontsize=7)
    fig.tight_layout()
    return fig


def plot_relation_counts(summaries: Mapping[str, dict]):
    """Bars of queries and abstracts per relation, one panel per data set (``ft.summarize`` dicts)."""
    fig, axes = plots.figure(width=9.5, height=3.8, ncols=len(summaries))
    axes = np.atleast_1d(axes)
    for ax, (name, s) in zip(axes, summaries.items()):
        rels = sorted(set(s["query_relations"]) | set(s["abstract_relations"]), key=lambda r: int(r[1:]))
        x = np.arange(len(rels))
        qa = np.array([s["query_relations"].get(r, 0) for r in rels], dtype=float)
        aa = np.array([s["abstract_relations"].get(r, 0) for r in rels], dtype=float)
        ax.bar(x - 0.2, qa / max(qa.sum(), 1), 0.4, label=f"queries ({int(qa.sum())})")
        ax.bar(x + 0.2, aa / max(aa.sum(), 1), 0.4, label=f"abstract facts ({int(aa.sum())})")
        ax.set_xticks(x, rels, rotation=90, fontsize=8)
        ax.set_ylabel("share")
        ax.set_title(DATASET_LABELS.get(name, name))
        ax.legend(fontsize=8)
    return fig


def plot_proponent_histograms(summaries: Mapping[str, dict]):
    """Histogram of proponents per query, one panel per data set (``ft.summarize`` dicts), with the
    real data set's median and mean as vertical lines."""
    fig, axes = plots.figure(width=9.5, height=3.4, ncols=len(summaries))
    axes = np.atleast_1d(axes)
    for ax, (name, s) in zip(axes, summaries.items()):
        counts = np.asarray(s["proponents_per_query"])
        paper = PAPER_PROPONENTS.get(name, {})
        hi = int(max(counts.max(), paper.get("mean", 0))) + 5
        ax.hist(counts, bins=np.arange(-0.5, hi + 1.5, max(1, hi // 60)), color=plots.METHOD_COLORS["BM25"],
                label=f"ours ({len(counts)} queries)")
        for stat, style in (("median", "--"), ("mean", ":")):
            if stat in paper and not (stat == "mean" and paper["mean"] == paper["median"]):
                ax.axvline(paper[stat], color="black", linestyle=style, linewidth=1.2, label=f"real data: {stat} {paper[stat]}")
        ax.set_xlim(0, hi)
        ax.set_xlabel("proponents of a query")
        ax.set_ylabel("queries")
        ax.set_title(f"{DATASET_LABELS.get(name, name)} (ours: median {np.median(counts):.0f})")
        ax.legend(fontsize=8)
    return fig


def plot_bm25_sweep(rows: Sequence[Mapping], defaults: Mapping[str, float], guard: float = 0.95):
    """Whole-set BM25 MRR of the TREx analogue against each world setting (``fidelity.bm25_sweep``
    rows), one panel per setting: mean over seeds (line) and each seed (dots), the world's own
    value marked, and the guard above which A1 is not testable."""
    df = pd.DataFrame(list(rows))
    settings = list(dict.fromkeys(df["setting"]))
    ncols = min(4, len(settings))
    nrows = int(np.ceil(len(settings) / ncols))
    plots.setup_style()
    fig, axes = plots.plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.3 * nrows), sharey=True, squeeze=False)
    for ax, setting in zip(axes.flat, settings):
        d = df[df["setting"] == setting]
        mean = d.groupby("value")["mrr"].mean()
        ax.plot(mean.index, mean.values, color=plots.METHOD_COLORS["BM25"], marker="o", markersize=3)
        ax.scatter(d["value"], d["mrr"], s=8, color=plots.METHOD_COLORS["BM25"], alpha=0.4)
        if setting in defaults:
            ax.axvline(defaults[setting], color="black", linestyle=":", linewidth=1)
        ax.axhline(guard, color="#d55e00", linestyle="--", linewidth=1)
        ax.set_title(setting.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(settings):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("whole-set BM25 MRR", fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["method_color", "plot_method_bars", "plot_layers", "plot_tracin_checkpoints", "plot_slice_checkpoints",
           "plot_saturation", "plot_relation_counts", "plot_proponent_histograms", "plot_bm25_sweep"]
