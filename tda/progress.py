"""Progress on long work: tqdm bars (silent when TDA_PROGRESS=0) and per-stage timings.

The book's build sets TDA_PROGRESS=0 so that rendered pages carry results, not bar redraws;
anyone running a notebook or a script by hand sees the bars. ``Timer`` records the wall-clock and
CPU seconds of each named stage, which every experiment chapter prints and writes to its results.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterable, TypeVar

import pandas as pd
from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("TDA_PROGRESS", "1") not in ("0", "false", "no")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs) -> Iterable[T]:
    """Wrap an iterable in a tqdm bar (tqdm.auto picks the notebook widget or the terminal bar)."""
    if not enabled():
        return iterable
    return tqdm(iterable, desc=desc, total=total, **kwargs)


class Timer:
    """Wall-clock and CPU seconds per named stage, accumulated (``with timer("fine-tune"): ...``).

    CPU seconds are this process's (all its threads), so on 2 cores they can reach twice the wall
    time; a CPU time well below the wall time means other work shared the machine.
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str, verbose: bool = True):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            self.wall[stage] = self.wall.get(stage, 0.0) + wall
            self.cpu[stage] = self.cpu.get(stage, 0.0) + cpu
            if verbose:
                print(f"  [{stage}: {wall:.1f} s wall, {cpu:.1f} s CPU]", flush=True)

    def table(self):
        """A DataFrame of wall and CPU seconds per stage, with a total row."""
        df = pd.DataFrame({"wall s": pd.Series(self.wall, dtype=float), "CPU s": pd.Series(self.cpu, dtype=float)})
        df.loc["total"] = df.sum()
        return df.round(1)

    def seconds(self) -> dict:
        """``{"wall": {stage: s, ..., "total": s}, "cpu": {...}}`` for a results file."""
        return {"wall": {**self.wall, "total": sum(self.wall.values())},
                "cpu": {**self.cpu, "total": sum(self.cpu.values())}}
