"""LoRA adapters (``tda.lora``): the base model at the start, the hand-worked forward, only the adapters
train, per-example gradients over the adapters equal single backwards, checkpoints round-trip."""

import json

import numpy as np
import pytest
import torch

from tda.checkpoints import (CheckpointError, architecture_signature, checkpoint_problem, list_checkpoints,
                             load_checkpoint, load_checkpoint_model, second_moments)
from tda.gradients import gradient_dots, iter_gradients, select_parameters
from tda.lora import (ADAPTER_FILE, CONFIG_FILE, LORA_GROUP, LoRAConfig, LoRAError, adapter_names, apply_lora,
                      is_lora, target_modules)
from tda.models import make_model
from tda.task import CausalLMTask, Examples
from tda.train import TrainConfig, train


@pytest.fixture()
def setup(tiny_world, tiny_tokenizer):
    examples = Examples.texts(tiny_world.pretraining_corpus()[:12])
    return tiny_tokenizer, CausalLMTask(tiny_tokenizer), examples


def _ids(tok, n=6):
    return torch.arange(5, 5 + n).unsqueeze(0) % len(tok)


def _with_random_b(model, seed=3):
    """B is zero at the start; a random B makes the low-rank term visible in a test."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def test_adapted_model_equals_the_base_at_the_start(tiny_tokenizer):
    base = make_model("tiny", tiny_tokenizer, seed=0)
    x = _ids(tiny_tokenizer)
    ref = base(x).logits
    model = apply_lora(make_model("tiny", tiny_tokenizer, seed=0), LoRAConfig(rank=4, seed=1))
    assert torch.equal(model(x).logits, ref)
    # the adapters' names select them (tda.gradients' regular-expression groups) and nothing else trains
    names = adapter_names(model)
    assert names == select_parameters(model, LORA_GROUP)
    assert names[:2] == ["transformer.h.0.attn.c_attn.lora_A", "transformer.h.0.attn.c_attn.lora_B"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == names
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if n.endswith("lora_B"))


def test_forward_equals_the_hand_computed_low_rank_update(tiny_tokenizer):
    model = _with_random_b(apply_lora(make_model("tiny", tiny_tokenizer), LoRAConfig(rank=3, alpha=6.0, seed=2)))
    module = model.transformer.h[1].attn.c_attn
    x = torch.randn(2, 5, module.weight.shape[0], generator=torch.Generator().manual_seed(0))
    w, b, a, bb = module.weight, module.bias, module.lora_A, module.lora_B
    assert a.shape == (3, w.shape[0]) and bb.shape == (w.shape[1], 3)
    expected = x @ w + b + (6.0 / 3) * x @ a.T @ bb.T
    assert torch.allclose(module(x), expected, atol=1e-5)
    assert not torch.allclose(module(x), x @ w + b, atol=1e-3)  # the update is not negligible here


def test_linear_projections_are_adapted_too():
    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = (torch.nn.Linear(4, 6) for _ in range(3))
            self.other = torch.nn.Linear(4, 4)

    holder = torch.nn.Module()
    holder.self_attn = Attention()
    apply_lora(holder, LoRAConfig(rank=2, alpha=2.0))
    _with_random_b(holder)
    q = holder.self_attn.q_proj
    x = torch.randn(3, 4)
    assert torch.allclose(q(x), x @ q.weight.T + q.bias + x @ q.lora_A.T @ q.lora_B.T, atol=1e-6)
    assert not hasattr(holder.self_attn.other, "lora_A")


def test_targets_attention_by_default_and_the_mlp_on_request(tiny_tokenizer):
    model = make_model("tiny", tiny_tokenizer)
    assert target_modules(model) == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj",
                                     "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"]
    with_mlp = target_modules(model, mlp=True)
    assert "transformer.h.0.mlp.c_fc" in with_mlp and "transformer.h.1.mlp.c_proj" in with_mlp
    assert len(with_mlp) == 8


def test_same_seed_same_adapters_other_seed_other(tiny_tokenizer):
    a1 = apply_lora(make_model("tiny", tiny_tokenizer), LoRAConfig(seed=1)).transformer.h[0].attn.c_attn.lora_A
    a2 = apply_lora(make_model("tiny", tiny_tokenizer), LoRAConfig(seed=1)).transformer.h[0].attn.c_attn.lora_A
    a3 = apply_lora(make_model("tiny", tiny_tokenizer), LoRAConfig(seed=2)).transformer.h[0].attn.c_attn.lora_A
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    assert a1.abs().max() <= 1 / np.sqrt(a1.shape[1])


@pytest.mark.parametrize("bad, word", [({"rank": 0}, "rank"), ({"rank": 2.5}, "rank"), ({"rank": True}, "rank"),
                                       ({"alpha": 0}, "alpha"), ({"alpha": float("nan")}, "alpha"),
                                       ({"alpha": "8"}, "alpha"), ({"mlp": 1}, "mlp")])
def test_bad_settings_are_errors_naming_them(bad, word):
    with pytest.raises(LoRAError, match=word):
        LoRAConfig(**bad)


def test_applying_twice_or_to_a_model_without_projections_is_an_error(tiny_tokenizer):
    model = apply_lora(make_model("tiny", tiny_tokenizer), LoRAConfig())
    with pytest.raises(LoRAError, match="already"):
        apply_lora(model, LoRAConfig())
    with pytest.raises(LoRAError, match="no projection"):
        apply_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)), LoRAConfig())


def test_training_moves_only_the_adapters_and_checkpoints_round_trip(tmp_path, setup):
    tok, task, examples = setup
    model = apply_lora(make_model("tiny", tok, seed=0), LoRAConfig(rank=4, seed=7))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = train(model, tok, task, examples, tmp_path / "run", TrainConfig(epochs=2, lr=1e-2, batch_size=4, seed=1))
    assert state["epoch_losses"][-1] < state["epoch_losses"][0]
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert not torch.equal(p, before[name]), f"{name} did not train"
        else:
            assert torch.equal(p, before[name]), f"{name} changed: the base must stay frozen"
    # AdamW's state is over the adapters alone, under their names
    ckpts = list_checkpoints(tmp_path / "run")
    assert sorted(second_moments(ckpts[-1])) == sorted(adapter_names(model))
    # every checkpoint loads as the model that was saved: epoch-000 is the base, the last the trained model
    x = _ids(tok)
    loaded, _ = load_checkpoint(ckpts[-1])
    assert is_lora(loaded) and torch.equal(loaded(x).logits, model(x).logits)
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == adapter_names(model)
    base = make_model("tiny", tok, seed=0)
    assert torch.equal(load_checkpoint_model(ckpts[0])(x).logits, base(x).logits)
    assert architecture_signature(ckpts[-1]) == architecture_signature(model)
    # resuming a LoRA run from its last checkpoint changes nothing
    again = apply_lora(make_model("tiny", tok, seed=0), LoRAConfig(rank=4, seed=7))
    train(again, tok, task, examples, tmp_path / "run", TrainConfig(epochs=2, lr=1e-2, batch_size=4, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), model.parameters()))


def test_a_missing_or_damaged_adapter_file_is_an_error_naming_it(tmp_path, setup):
    tok, task, examples = setup
    model = apply_lora(make_model("tiny", tok), LoRAConfig(rank=2))
    train(model, tok, task, examples, tmp_path / "run", TrainConfig(epochs=1, lr=1e-2, batch_size=4))
    ckpt = list_checkpoints(tmp_path / "run")[-1]
    adapters = ckpt / ADAPTER_FILE
    data = adapters.read_bytes()
    adapters.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=ADAPTER_FILE):
        load_checkpoint(ckpt)
    assert ADAPTER_FILE in checkpoint_problem(ckpt)
    adapters.unlink()
    with pytest.raises(CheckpointError, match=f"{ADAPTER_FILE} is missing"):
        load_checkpoint(ckpt)
    assert f"{ADAPTER_FILE} is missing" in checkpoint_problem(ckpt)
    (ckpt / CONFIG_FILE).write_text(json.dumps({"rank": 0}))
    with pytest.raises(CheckpointError, match=CONFIG_FILE):
        architecture_signature(ckpt)


def test_per_example_gradients_over_the_adapters_equal_single_backwards(setup):
    tok, task, examples = setup
    model = _with_random_b(apply_lora(make_model("tiny", tok, seed=0), LoRAConfig(rank=4, seed=1)))
    names = select_parameters(model, LORA_GROUP)
    for method in ("vmap", "loop"):
        got = {}
        for idx, grads in iter_gradients(model, task, examples, LORA_GROUP, batch_size=5, method=method):
            for row, i in enumerate(idx):
                got[int(i)] = {n: grads[n][row] for n in names}
        assert set(got[0]) == set(names)  # frozen parameters are not in the group
        for i in range(len(examples)):
            model.zero_grad(set_to_none=True)
            task.per_example_loss(model, task.encode(examples.subset([i])))[0].backward()
            params = dict(model.named_parameters())
            for n in names:
                assert torch.allclose(got[i][n], params[n].grad, atol=1e-5, rtol=1e-4), (method, i, n)
            assert all(p.grad is None for n, p in params.items() if n not in names)  # frozen: no gradient
    # and the dot products the methods use are those of the flattened brute-force gradients
    flat = []
    for i in range(4):
        model.zero_grad(set_to_none=True)
        task.per_example_loss(model, task.encode(examples.subset([i])))[0].backward()
        flat.append(torch.cat([dict(model.named_parameters())[n].grad.reshape(-1) for n in names]).double())
    flat = torch.stack(flat)
    dots = gradient_dots(model, task, examples.subset([0, 1]), examples.subset([2, 3]), LORA_GROUP).dots
    np.testing.assert_allclose(dots, (flat[:2] @ flat[2:].T).numpy(), rtol=1e-4, atol=1e-7)
