"""The hooks path (``tda.gradients.hooks``) against vmap and the brute force."""

from __future__ import annotations

import pytest
import torch

from tda import gradients as G
from tda.task import Seq2SeqTask

from .support import assert_close, brute_force


@pytest.mark.parametrize("group", ["embedding", "block.0", "all"])
def test_hooks_path_equals_vmap_path(gpt2, task, examples, group):
    proj = G.Projector(256, seed=2, structure="kronecker")
    a = G.gradient_features(gpt2, task, examples, group, projection=proj, method="hooks", batch_size=3)
    b = G.gradient_features(gpt2, task, examples, group, projection=proj, method="vmap", batch_size=3)
    assert_close(a, b, rtol=1e-5)
    dense = G.Projector(64, seed=2, structure="dense")
    a = G.gradient_features(gpt2, task, examples, group, projection=dense, method="hooks", batch_size=2)
    assert_close(a, brute_force(gpt2, task, examples, G.select_parameters(gpt2, group))
                 @ torch.cat([dense.matrix(n, p.shape) for n, p in gpt2.named_parameters()
                              if n in G.select_parameters(gpt2, group)]).numpy(), rtol=1e-4)


def test_hooks_path_is_refused_where_it_does_not_apply(t5, tiny_tokenizer, gpt2, task, examples):
    assert G.hooks_supported(gpt2, "all")
    assert not G.hooks_supported(t5, "all")  # T5LayerNorm has no rule
    with pytest.raises(G.HooksUnsupported):
        G.gradient_features(t5, Seq2SeqTask(tiny_tokenizer), examples, "all", projection=16, method="hooks")
    with pytest.raises(ValueError, match="correction"):
        params = dict(gpt2.named_parameters())
        G.gradient_features(gpt2, task, examples, "head", projection=16, method="hooks",
                            correction={n: torch.ones_like(params[n]) for n in G.select_parameters(gpt2, "head")})
