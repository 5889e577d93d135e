"""The book's figure style (``tda.plots``)."""

from tda import plots


def test_loss_curves_draw_one_line_per_run():
    fig = plots.loss_curves({"tiny": [3.0, 2.0, 1.5], "small": [2.5, 1.0]}, title="pre-training")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["tiny", "small"]
    assert list(ax.lines[1].get_xdata()) == [1, 2] and ax.get_title() == "pre-training"
    plots.plt.close(fig)
    assert set(plots.METHOD_COLORS) >= {"BM25", "TracIn", "EMBED", "TracIn+EMBED", "TRAK", "DDA"}
