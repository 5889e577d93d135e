"""EMBED (``tda.methods.embed``): cosines of pooled states, their per-layer parts, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import T5Config, T5ForConditionalGeneration

from tda import methods as M
from tda.task import Examples, Seq2SeqTask


def test_embed_cosine(models, task, queries, candidates):
    model = models[0]
    self_sim = M.embed(model, task, candidates, candidates, layers=[0, 2], pooling="tokens")
    assert np.allclose(np.diag(self_sim), 1.0)
    scores = M.embed(model, task, queries, candidates, layers=[0, 1])
    assert scores.shape == (2, 5) and np.all(np.abs(scores) <= 1)
    single = [M.embed(model, task, queries, candidates, layers=i) for i in (0, 1)]
    assert np.allclose(scores, np.mean(single, axis=0))  # union of layers = mean of cosines
    concat = M.embed(model, task, queries, candidates, layers=[0, 1], combine="concat")
    assert concat.shape == scores.shape and np.all(np.abs(concat) <= 1)
    assert np.allclose(M.embed(model, task, queries, candidates, layers=-1),
                       M.embed(model, task, queries, candidates, layers=2))


def test_embed_seq2seq_runs(tiny_tokenizer):
    config = T5Config(vocab_size=len(tiny_tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                      relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0)
    t5 = T5ForConditionalGeneration(config).eval()
    ex = Examples(["Mara was born in [MASK] .", "The capital of England is [MASK] ."], ["Lusto", "London"])
    task = Seq2SeqTask(tiny_tokenizer)
    both = M.embed(t5, task, ex, ex, layers=1)
    assert both.shape == (2, 2) and np.allclose(np.diag(both), 1.0)
    assert M.pooled_states(t5, task, ex, 0)[0].shape == (2, 64)  # encoder and decoder concatenated
    assert M.pooled_states(t5, task, ex, 0, pooling="target")[0].shape == (2, 32)


def test_embed_bad_inputs_raise(models, task, queries, candidates):
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        M.embed(models[0], task, queries, candidates, layers=5)
    with pytest.raises(ValueError):
        M.embed(models[0], task, queries, candidates, layers=[])
    with pytest.raises(ValueError, match="empty"):
        M.embed(models[0], task, Examples([], []), candidates)
    with pytest.raises(ValueError, match="one model"):
        M.embed(list(models), task, queries, candidates)
    with pytest.raises(ValueError, match="one model"):
        M.embed([], task, queries, candidates)
    with pytest.raises(ValueError):
        M.embed(models[0], task, queries, candidates, combine="max")


def test_embed_parts_hold_each_layers_cosine_per_pair(models, task, queries, candidates):
    parts = M.embed_parts(models[0], task, queries, candidates, poolings=("tokens", "target"))
    assert parts.layers == [0, 1, 2] and parts.cosines["tokens"].shape == (3, len(queries) * len(candidates))
    for layers in ([0], [1, 2]):
        for pooling in ("tokens", "target"):
            want = M.embed(models[0], task, queries, candidates, layers, pooling=pooling)
            assert np.allclose(parts.scores(layers, pooling).reshape(want.shape), want, atol=1e-12)
    pairs = (np.array([1, 0]), np.array([4, 2]))
    some = M.embed_parts(models[0], task, queries, candidates, layers=[2], poolings=["tokens"], pairs=pairs)
    full = M.embed(models[0], task, queries, candidates, 2, pooling="tokens")
    assert np.allclose(some.scores(2, "tokens"), full[pairs])
    with pytest.raises(ValueError, match="do not exist"):
        parts.scores(5)
    with pytest.raises(ValueError, match="pooling"):
        some.scores(2, "target")
