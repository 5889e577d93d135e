"""Named sub-seeds: every random stream of a run derives from the run's seed and a name.

``derive_seed(seed, "random-target", j)`` is a stable 63-bit integer: a BLAKE2b hash of the parts
joined by ``|``. Different names give unrelated streams (``seed + 7`` would collide with the run of
seed 7), the same parts always give the same number on every platform and Python version (unlike
``hash``), and the value suits ``random.Random``, ``numpy.random.default_rng`` and
``torch.Generator.manual_seed`` alike.

The streams named so far: ``"batches", epoch`` (``tda.train``: the batch order of an epoch),
``"ftrace-select"`` (which queries a FTRACE run attributes), ``"random-target", j`` and ``"uniform"``
(FTRACE's random baselines), ``"random"`` (DDA's), and the random projections' draws
(``tda.gradients.sketch``: ``seed, "sketch", tensor name, shape, part``; ``tda.gradients.projection``:
``seed, kind, tensor name, shape, part``). The data builders of
``tda.data`` seed ``random.Random`` with named strings (``f"{seed}-ftrace-trex"``), which is the
same idea.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed, *names) -> int:
    """A sub-seed of ``seed`` for the stream called ``names`` (strings or numbers), in [0, 2**63)."""
    digest = hashlib.blake2b("|".join(map(str, (seed, *names))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


__all__ = ["derive_seed"]
