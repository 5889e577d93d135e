"""The book's figure style in one place (seaborn), and the figures several chapters share."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

PALETTE = "colorblind"
# One colour per method across the whole book, so a reader can follow a method between chapters.
METHOD_COLORS = {
    "BM25": "#0173b2", "TracIn": "#de8f05", "EMBED": "#029e73", "TracIn+EMBED": "#d55e00",
    "TRAK": "#cc78bc", "DDA": "#ca9161", "Random-Target": "#949494", "random": "#bbbbbb",
}


def setup_style() -> None:
    """Apply the book's style (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold",
                         "figure.autolayout": True})


def figure(width: float = 6.4, height: float = 3.8, ncols: int = 1, **kwargs):
    """A new figure in the book's size; returns (fig, axes)."""
    setup_style()
    return plt.subplots(1, ncols, figsize=(width, height), **kwargs)


def loss_curves(histories: dict[str, list[float]], title: str = "", ylabel: str = "mean training loss"):
    """One line per run (e.g. per model size) of loss against epoch."""
    fig, ax = figure()
    for label, losses in histories.items():
        ax.plot(range(1, len(losses) + 1), losses, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(title=None)
    return fig
