"""Progress bars and stage timings (``tda.progress``)."""

import time

from tda.progress import Timer, enabled, progress


def test_bars_are_off_when_asked(monkeypatch):
    monkeypatch.setenv("TDA_PROGRESS", "0")
    items = [1, 2, 3]
    assert not enabled() and progress(items, desc="x") is items
    monkeypatch.setenv("TDA_PROGRESS", "1")
    assert enabled() and list(progress(items, desc="x")) == items


def test_timer_accumulates_stages_and_totals():
    timer = Timer()
    for _ in range(2):
        with timer("stage", verbose=False):
            time.sleep(0.01)
    with timer("other", verbose=False):
        pass
    assert timer.wall["stage"] >= 0.02 and set(timer.wall) == {"stage", "other"}
    table = timer.table()
    assert list(table.index) == ["stage", "other", "total"]
    assert table.loc["total", "wall s"] == round(timer.wall["stage"] + timer.wall["other"], 1)
    seconds = timer.seconds()
    assert seconds["wall"]["total"] == sum(timer.wall.values()) and set(seconds) == {"wall", "cpu"}
