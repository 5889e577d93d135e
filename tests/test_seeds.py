"""Named sub-seeds (``tda.seeds``)."""

import hashlib

from tda.seeds import derive_seed


def test_sub_seeds_are_stable_distinct_and_in_range():
    a = derive_seed(0, "random-target", 3)
    assert a == 3786852841452386446  # the same on every platform and Python version (not ``hash``)
    others = {derive_seed(0, "random-target", 4), derive_seed(1, "random-target", 3), derive_seed(0, "uniform", 3),
              derive_seed(7, "random-target", 3)}
    assert a not in others and len(others) == 4
    assert all(0 <= s < 2 ** 63 for s in others | {a})


def test_it_is_the_projections_seed_function():
    """The random projections were seeded this way before the helper existed; their matrices are unchanged."""
    digest = hashlib.blake2b("5|rademacher|w|(3, 4)|A".encode(), digest_size=8).digest()
    assert derive_seed(5, "rademacher", "w", (3, 4), "A") == int.from_bytes(digest, "little") & ((1 << 63) - 1)
