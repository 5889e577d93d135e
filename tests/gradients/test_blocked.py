"""Blocked scoring over feature files: equal to the dense product, in bounded memory."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tda.gradients import load_features, save_features
from tda.gradients.blocked import blocked_scores, blocked_topk, pair_scores


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _dense(qs, cs, weights=None, normalize=False):
    total = 0.0
    for i, (q, c) in enumerate(zip(qs, cs)):
        q, c = q.astype(np.float64), c.astype(np.float64)
        if normalize:
            q, c = q / np.linalg.norm(q, axis=1, keepdims=True), c / np.linalg.norm(c, axis=1, keepdims=True)
        total = total + (1.0 if weights is None else weights[i]) * (q @ c.T)
    return total


def _sorted_top(dense, k):
    n_q, n_c = dense.shape
    return np.lexsort((np.broadcast_to(np.arange(n_c), dense.shape), -dense), axis=1)[:, :k]


@pytest.mark.parametrize("normalize", [False, True])
def test_top_k_equals_sorting_the_dense_product(tmp_path, normalize):
    """Two terms (two checkpoints), weighted, from feature files, blocks that do not divide the sizes."""
    qs, cs = [_random((37, 8), 1), _random((37, 8), 2)], [_random((101, 8), 3), _random((101, 8), 4)]
    weights = [0.7, 1.9]
    dense = _dense(qs, cs, weights, normalize)
    files_q = [save_features(tmp_path / f"q{i}.f32", q) for i, q in enumerate(qs)]
    files_c = [save_features(tmp_path / f"c{i}.f32", c) for i, c in enumerate(cs)]
    for k in (1, 10, 101, 500):
        top = blocked_topk(files_q, files_c, k, weights=weights, normalize=normalize, query_block=5,
                           candidate_block=7, desc=None)
        want = _sorted_top(dense, min(k, 101))
        assert np.array_equal(top.indices, want)
        np.testing.assert_allclose(top.scores, np.take_along_axis(dense, want, 1), rtol=1e-12, atol=1e-12)
    blocks = np.zeros_like(dense)
    for q_rows, c_rows, block in blocked_scores(qs, cs, weights=weights, normalize=normalize, query_block=6,
                                                candidate_block=11, desc=None):
        blocks[q_rows, c_rows] = block.numpy()
    np.testing.assert_allclose(blocks, dense, rtol=1e-12, atol=1e-12)


def test_ties_go_to_the_lower_candidate_row():
    """Integer features make every dot product exact, so ties are real ties in any block layout."""
    rng = np.random.default_rng(0)
    q, c = rng.integers(-2, 3, (23, 6)).astype(np.float32), rng.integers(-2, 3, (150, 6)).astype(np.float32)
    dense = q.astype(np.float64) @ c.astype(np.float64).T
    for k in (1, 5, 40):
        for blocks in ((4, 9), (23, 150), (1, 1)):
            top = blocked_topk(q, c, k, query_block=blocks[0], candidate_block=blocks[1], desc=None)
            assert np.array_equal(top.indices, _sorted_top(dense, k))


def test_pair_scores_equal_the_dense_entries():
    q, c = _random((20, 5), 5), _random((50, 5), 6)
    rng = np.random.default_rng(1)
    qi, ci = rng.integers(0, 20, 333), rng.integers(0, 50, 333)
    dense = _dense([q], [c])
    np.testing.assert_allclose(pair_scores(q, c, qi, ci, block=16), dense[qi, ci], rtol=1e-12)
    cos = _dense([q, q], [c, c], [0.5, 0.5], normalize=True)
    np.testing.assert_allclose(pair_scores([q, q], [c, c], qi, ci, weights=[0.5, 0.5], normalize=True, block=7),
                               cos[qi, ci], rtol=1e-12)
    with pytest.raises(IndexError, match="candidate row 50 is outside the 50 candidate features"):
        pair_scores(q, c, [0], [50])
    with pytest.raises(ValueError, match="1-D and of one length"):
        pair_scores(q, c, [0, 1], [0])


def test_mismatched_inputs_are_named():
    q, c = _random((4, 5), 1), _random((6, 3), 2)
    with pytest.raises(ValueError, match="query features have 5 columns, candidate features 3"):
        blocked_topk(q, c, 2, desc=None)
    with pytest.raises(ValueError, match="2 query feature matrices but 1 candidate"):
        blocked_topk([q, q], [c], 2, desc=None)
    with pytest.raises(ValueError, match="1 weights for 2 terms"):
        blocked_topk([q, q], [q, q], 2, weights=[1.0], desc=None)
    with pytest.raises(ValueError, match="k must be >= 1"):
        blocked_topk(q, q, 0, desc=None)


MEMORY_PROBE = """
import resource, sys
import numpy as np
from tda.gradients import load_features
from tda.gradients.blocked import blocked_topk
q, c, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
load_features(q), load_features(c)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
top = blocked_topk(q, c, 5, query_block=2000, max_block_bytes=budget, desc=None)
np.save(sys.argv[4], top.indices)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_memory_stays_bounded_by_the_block_budget(tmp_path):
    """2,000 x 20,000 scores take 320 MB in float64; with a 4 MB block budget the process's peak
    resident memory grows by far less (measured in a fresh process), and the top-k is right."""
    import subprocess
    import sys

    q = save_features(tmp_path / "q.f32", _random((2000, 16), 7))
    c = save_features(tmp_path / "c.f32", _random((20000, 16), 8))
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(q), str(c), str(4 << 20), str(tmp_path / "top.npy")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    grown_mb = int(done.stdout.strip().splitlines()[-1])
    assert grown_mb < 60, f"peak resident memory grew by {grown_mb} MB"
    indices = np.load(tmp_path / "top.npy")
    sample = np.arange(0, 2000, 97)
    dense = load_features(q)[sample].astype(np.float64) @ load_features(c).astype(np.float64).T
    assert np.array_equal(indices[sample], _sorted_top(dense, 5))
