"""What the benchmarks share (``tda.bench``, ``tda.bench_projection``): the quick world and its
tokenizer, a batch of fact sentences, quiet progress bars, and peak memory.

Its own module so that ``tda.bench`` can run ``tda.bench_projection``'s fidelity section without
the two importing each other.
"""

from __future__ import annotations

import functools
import os
import resource
from contextlib import contextmanager

from .base import world_config
from .data.world import build_world, cloze_text
from .models import train_tokenizer
from .task import Examples


@contextmanager
def quiet():
    """No progress bars: ours (TDA_PROGRESS) nor the peers' own tqdm bars (TQDM_DISABLE)."""
    names = ("TDA_PROGRESS", "TQDM_DISABLE")
    old = {name: os.environ.get(name) for name in names}
    os.environ.update({"TDA_PROGRESS": "0", "TQDM_DISABLE": "1"})
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.lru_cache(maxsize=1)
def world_and_tokenizer():
    """The quick world and its tokenizer (built once per process)."""
    world = build_world(world_config("quick"))
    return world, train_tokenizer(world.pretraining_corpus() + world.vocabulary_text())


def fact_batch(world, n: int) -> Examples:
    """``n`` fact sentences as cloze training texts (``<sentence with [MASK]> answer : <entity>``,
    every paraphrase in turn, ~15 tokens), repeated if the world has fewer facts."""
    texts = [cloze_text(*world.cloze(f, i % 4, ("object", "subject")[(i // 4) % 2]))
             for i, f in enumerate(world.facts)]
    if not texts:
        raise ValueError("the world has no facts to benchmark on")
    return Examples.texts([texts[i % len(texts)] for i in range(n)])


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


__all__ = ["quiet", "world_and_tokenizer", "fact_batch", "peak_rss_mb"]
