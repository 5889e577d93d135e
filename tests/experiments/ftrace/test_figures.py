"""Part I's figures (``tda.experiments.ftrace.figures``) drawn from hand-made tables: one panel per data
set, one mark per variant, read from the variant columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tda import plots
from tda.experiments.ftrace import figures as F
from tda.experiments.ftrace.analysis import CHECKPOINT_VARIANTS


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots.plt.close("all")


def _summary(rows):
    return pd.DataFrame([{"mrr_std": 0.05, **r} for r in rows])


def test_method_colours_follow_the_method_a_label_starts_with():
    assert F.method_color("TracIn (all parameters)") == plots.METHOD_COLORS["TracIn"]
    assert F.method_color("TracIn+EMBED") == plots.METHOD_COLORS["TracIn+EMBED"]
    assert F.method_color("something else") == "#555555"


def test_method_bars_with_the_papers_diamonds():
    summary = _summary([{"dataset": d, "method": m, "mrr": v} for d in ("trex", "synth")
                        for m, v in (("BM25", 0.9), ("TracIn", 0.5), ("random", 0.1))])
    fig = F.plot_method_bars(summary, ["BM25", "TracIn", "random"])
    trex, synth = fig.axes
    assert [round(p.get_width(), 3) for p in trex.patches] == [0.9, 0.5, 0.1]
    assert sum(line.get_marker() == "D" for line in trex.lines) == 2  # the paper's BM25 and TracIn
    assert trex.get_title() == "TREx analogue"


def test_layers_read_units_and_layers_from_columns():
    rows = []
    for d in ("trex", "synth"):
        rows += [{"dataset": d, "method": f"TracIn | {u}", "units": u, "layer": np.nan, "mrr": v}
                 for u, v in (("embedding", 0.8), ("block.0", 0.5), ("head", 0.4), ("other", 0.3), ("all", 0.7))]
        rows += [{"dataset": d, "method": f"EMBED | layer {i}", "units": np.nan, "layer": i, "mrr": 0.6 - 0.1 * i}
                 for i in range(2)]
        rows += [{"dataset": d, "method": "EMBED | all layers", "units": np.nan, "layer": "all", "mrr": 0.55},
                 {"dataset": d, "method": "BM25", "units": np.nan, "layer": np.nan, "mrr": 0.9}]
    fig = F.plot_layers(_summary(rows))
    ax = fig.axes[0]
    tracin_line = ax.lines[0]
    assert list(tracin_line.get_ydata()) == [0.8, 0.5, 0.4]  # embedding, block 0, head; not "other"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["embedding", "block 0", "head (final norm)"]
    assert {line.get_label() for line in ax.get_lines()} >= {"TracIn, all parameters", "EMBED, all layers", "BM25"}


def test_tracin_checkpoints_and_slices():
    rows = []
    for d in ("trex", "synth"):
        for which, ckpts in (("ft", ["100%", "12.5%"]), ("pt", ["1.5%", "0.5%"])):
            for c in ckpts + ["average"]:
                rows.append({"dataset": d, "method": f"{which} | embedding | {c} | cosine | corrected", "which": which,
                             "units": "embedding", "checkpoint": c, "similarity": "cosine", "correction": "corrected",
                             "mrr": 0.5})
    summary = _summary(rows)
    assert set(CHECKPOINT_VARIANTS) <= set(summary.columns)
    fig = F.plot_tracin_checkpoints(summary)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["FT\n12.5%", "FT\n100%", "PT\n0.5%", "PT\n1.5%"]  # by how far into the run, not as text
    per_query = pd.DataFrame([{"dataset": r["dataset"], "which": r["which"], "checkpoint": r["checkpoint"],
                               "slice": s, "mrr": 0.4, "method": r["method"]} for r in rows for s in ("known", "learned")])
    fig = F.plot_slice_checkpoints(per_query)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["PT\n0.5%", "PT\n1.5%", "FT\n12.5%", "FT\n100%"]


def test_data_set_figures():
    summaries = {d: {"query_relations": {"P19": 3, "P27": 1}, "abstract_relations": {"P19": 6, "P27": 2},
                     "proponents_per_query": [6, 6, 7]} for d in ("trex", "synth")}
    fig = F.plot_relation_counts(summaries)
    assert len(fig.axes) == 2 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["P19", "P27"]
    fig = F.plot_proponent_histograms(summaries)
    assert "median 7" in " ".join(fig.axes[0].get_legend_handles_labels()[1])  # the real data's median
