"""A query's support (tda.counterfactual.measure): the target's log-probability, EOS excluded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tda.counterfactual import support, target_logprob
from tda.models import make_model
from tda.task import CausalLMTask, Examples


def test_target_logprob_by_hand(tiny_tokenizer):
    model = make_model("tiny", tiny_tokenizer, seed=3).eval()
    task = CausalLMTask(tiny_tokenizer)
    ex = Examples(["Lolthen Giso was born in", ""], ["Shaindzirnea", "Lolthen Giso was born in Nealbo ."])
    got = target_logprob(model, task, ex)
    for i in range(len(ex)):
        p = task.bos + task.ids(ex.prompts[i])
        t = task.ids(ex.targets[i])  # EOS (which follows) is not part of the sum
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + t])).logits[0], -1)
        want = sum(float(logp[len(p) - 1 + j, tok]) for j, tok in enumerate(t))
        assert got[i] == pytest.approx(want, abs=1e-4)
    other = Examples(ex.prompts, ["Nealbo", "Tugroul ."])
    assert support(model, task, ex, other) == pytest.approx(got - target_logprob(model, task, other))
    with pytest.raises(ValueError, match="counterparts for"):
        support(model, task, ex, other.subset([0]))
    assert target_logprob(model, task, Examples([], [])).shape == (0,)
    assert np.all(got < 0)
