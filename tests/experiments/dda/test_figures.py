"""Part II's figures (``tda.experiments.dda.figures``) from hand-made tables; an empty table draws a
figure that says why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tda import plots
from tda.experiments.dda import figures as F


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plots.plt.close("all")


def _texts(fig) -> str:
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_empty_tables_draw_a_reason():
    empty = pd.DataFrame()
    for fig in (F.plot_methods(empty), F.plot_ablation(empty), F.plot_beta({"raw": empty}), F.plot_sizes(empty),
                F.plot_influence_checkpoints(empty), F.plot_shrinkage(empty)):
        assert "no hallucinated output to trace" in _texts(fig)
    assert "no runs" in _texts(F.plot_events(empty))


def test_methods_bars_are_set_aucs_with_hard_negatives_beside_and_per_query_diamonds():
    table = pd.DataFrame({"method": ["DDA", "CEA"], "set auc mean": [0.8, 0.9], "set auc low": [0.7, 0.85],
                          "set auc high": [0.9, 0.95], "set hard_auc mean": [0.6, 0.7], "auc mean": [0.75, np.nan]})
    ax = F.plot_methods(table).axes[0]
    assert [round(p.get_height(), 3) for p in ax.patches] == [0.8, 0.9, 0.6, 0.7]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["DDA", "CEA"]
    assert len(ax.collections[-1].get_offsets()) == 1  # CEA has no per-query AUC
    assert [round(p.get_height(), 3) for p in F.plot_methods(table, ["CEA"]).axes[0].patches] == [0.9, 0.7]


def test_ablation_beta_sizes_checkpoints_and_shrinkage():
    table = pd.DataFrame({"variant": ["DDA (full)", "without debias"], "auc mean": [0.9, 0.6], "auc std": [0.01, None]})
    fig = F.plot_ablation(table, {"DDA (full)": 0.935})
    assert [round(p.get_width(), 3) for p in fig.axes[0].patches] == [0.9, 0.6]
    assert len(fig.axes[0].collections[-1].get_offsets()) == 1  # the paper's one diamond
    curve = pd.DataFrame({"size": "small", "beta": [0.0, 0.4, 1.0], "auc mean": [0.6, 0.8, 0.8], "auc std": 0.0,
                          "seeds": 1})
    fig = F.plot_beta({"raw": curve, "normalised": curve.assign(**{"auc mean": [0.6, 0.5, 0.4]})}, knee=0.4)
    ys = [list(line.get_ydata()) for line in fig.axes[0].lines if len(line.get_ydata()) == 3]
    assert ys == [[0.6, 0.8, 0.8], [0.6, 0.5, 0.4]]
    assert fig.axes[0].get_legend_handles_labels()[1] == ["raw", "normalised"]
    sizes = pd.DataFrame({"size": ["tiny", "small"], "method": "DDA", "parameters": [1e5, 4e5],
                          "auc mean": [0.9, 0.85], "auc std": [0.0, 0.0]})
    fig = F.plot_sizes(sizes)
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_legend_handles_labels()[1] == ["DDA"]
    ckpts = pd.DataFrame({"checkpoint": [0, 1, 2], "auc mean": [0.3, 0.7, 0.8], "auc std": [0.0, 0.1, 0.1]})
    fig = F.plot_influence_checkpoints(ckpts, averaged=0.75)
    assert 0.75 in [line.get_ydata()[0] for line in fig.axes[0].lines]
    shrink = pd.DataFrame({"size": "small", "kind": ["poisoned", "other"], "gradient norm at θ0": [6.0, 9.0],
                           "gradient norm at θN": [3.0, 2.0]})
    assert [round(p.get_height(), 3) for p in F.plot_shrinkage(shrink).axes[0].patches] == [6.0, 9.0, 3.0, 2.0]
