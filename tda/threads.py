"""The number of CPU threads torch trains with, fixed so that a run's numbers do not depend on the machine.

A matrix product summed over 2 threads adds its parts in another order than over 4, so the same seed
and settings trained on machines with different core counts end with different weights: measured on
the quick world, Part II's runs hallucinated on 10, 21 and 2 of 60 prompts with 1 thread and on 1, 3
and 6 with 2 (the same runs, the same seeds). :func:`fixed_threads` sets the count for the length of
a training run (``tda.train.train``, ``tda.counterfactual.retrain.finetune_subset``) and restores
the caller's afterwards.

The count is ``TDA_THREADS`` from the environment, else :data:`DEFAULT_THREADS` = 2: the machine the
book is written for (and CI) has 2 cores, so its published numbers are the 2-thread ones. A larger
machine gets the book's numbers; set ``TDA_THREADS`` to use more cores (and accept other numbers).
Exactness across machines also needs the same CPU instruction set and torch build. With another
count, ``tda.store.keyed`` adds it to every entry's key and manifest, so runs trained on other
counts never mix in one store.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

DEFAULT_THREADS = 2
ENV = "TDA_THREADS"


def training_threads() -> int:
    """The thread count training uses: ``TDA_THREADS`` if set (a positive integer), else 2."""
    raw = os.environ.get(ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_THREADS
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r} is not a whole number of threads") from None
    if n < 1:
        raise ValueError(f"{ENV}={raw!r}: the number of threads must be >= 1")
    return n


@contextmanager
def fixed_threads(n: int | None = None):
    """Run the block with ``n`` torch threads (default :func:`training_threads`), then restore."""
    import torch  # here, so that reading the count (tda.store) does not import torch

    n = training_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"the number of threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


__all__ = ["DEFAULT_THREADS", "ENV", "training_threads", "fixed_threads"]
