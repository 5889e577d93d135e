import shutil

import pytest
import torch

from tda.models import make_model
from tda.task import CausalLMTask, Examples
from tda.train import (CheckpointError, TrainConfig, adam_second_moments, checkpoint_dir, epoch_batches,
                       list_checkpoints, load_checkpoint, read_state, train)


@pytest.fixture()
def setup(tiny_world, tiny_tokenizer):
    examples = Examples.texts(tiny_world.pretraining_corpus()[:40])
    return tiny_tokenizer, CausalLMTask(tiny_tokenizer), examples


CFG = TrainConfig(epochs=3, lr=3e-3, batch_size=8, seed=5)


def _train(tmp, setup, config=CFG):
    tok, task, ex = setup
    model = make_model("tiny", tok, seed=0)
    state = train(model, tok, task, ex, tmp, config)
    return model, state


def test_same_seed_same_losses_and_weights(tmp_path, setup):
    m1, s1 = _train(tmp_path / "a", setup)
    m2, s2 = _train(tmp_path / "b", setup)
    assert s1["epoch_losses"] == s2["epoch_losses"]
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert s1["epoch_losses"][-1] < s1["epoch_losses"][0]


def test_checkpoint_every_epoch_with_optimizer_state(tmp_path, setup):
    _train(tmp_path, setup)
    ckpts = list_checkpoints(tmp_path)
    assert [c.name for c in ckpts] == ["epoch-000", "epoch-001", "epoch-002", "epoch-003"]
    moments = adam_second_moments(ckpts[-1])
    model, _ = load_checkpoint(ckpts[-1])
    names = {n for n, _ in model.named_parameters()}
    assert moments and set(moments) <= names
    assert all((v >= 0).all() for v in moments.values())
    with pytest.raises(CheckpointError, match="no optimizer state"):
        adam_second_moments(ckpts[0])


def test_resume_after_interruption_gives_same_weights(tmp_path, setup):
    full, full_state = _train(tmp_path / "full", setup)
    # interrupt: keep only epochs 0 and 1, plus a half-written temporary folder
    _train(tmp_path / "cut", setup)
    shutil.rmtree(checkpoint_dir(tmp_path / "cut", 3))
    shutil.rmtree(checkpoint_dir(tmp_path / "cut", 2))
    (tmp_path / "cut" / ".epoch-002.tmp").mkdir()
    resumed, state = _train(tmp_path / "cut", setup)
    assert state["epoch_losses"] == full_state["epoch_losses"]
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_resume_refuses_other_settings(tmp_path, setup):
    _train(tmp_path, setup)
    with pytest.raises(CheckpointError, match="different training run"):
        _train(tmp_path, setup, TrainConfig(epochs=4, lr=1e-3, batch_size=8, seed=5))


def test_missing_and_corrupt_checkpoints(tmp_path, setup):
    _train(tmp_path, setup, TrainConfig(epochs=1, lr=1e-3, batch_size=8))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "epoch-009")
    ckpt = checkpoint_dir(tmp_path, 1)
    weights = next(ckpt.glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)
    (ckpt / "state.json").write_text("{half")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_state(ckpt)
    (ckpt / "state.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(ckpt)


def test_epoch_batches_cover_every_example_once():
    lengths = [i % 7 for i in range(103)]
    batches = epoch_batches(lengths, 10, seed=0, epoch=2)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))
    assert batches == epoch_batches(lengths, 10, seed=0, epoch=2)
    assert batches != epoch_batches(lengths, 10, seed=0, epoch=3)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": 0}, {"schedule": "cosine"}])
def test_bad_train_config(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_empty_training_set(tmp_path, setup):
    tok, task, _ = setup
    with pytest.raises(ValueError, match="empty"):
        train(make_model("tiny", tok), tok, task, Examples([], []), tmp_path, CFG)
