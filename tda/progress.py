"""Progress bars for long work: tqdm in a terminal or notebook, silent when TDA_PROGRESS=0.

The book's build sets TDA_PROGRESS=0 so that rendered pages carry results, not bar redraws;
anyone running a notebook or a script by hand sees the bars.
"""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("TDA_PROGRESS", "1") not in ("0", "false", "no")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs) -> Iterable[T]:
    """Wrap an iterable in a tqdm bar (tqdm.auto picks the notebook widget or the terminal bar)."""
    if not enabled():
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, **kwargs)
