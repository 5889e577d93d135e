"""Checkpointed training (``tda.train``): deterministic, resumable, refusing what does not fit."""

import shutil

import pytest
import torch

from tda.models import make_model
from tda.task import CausalLMTask, Examples
from tda.checkpoints import OPTIMIZER, CheckpointError, checkpoint_dir, checkpoint_problem, list_checkpoints
from tda.seeds import derive_seed
from tda.train import TrainConfig, epoch_batches, learning_rate, train


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


def test_resume_past_a_truncated_last_checkpoint(tmp_path, setup):
    """A checkpoint cut short (a full disk, a crash before the data reached the disk) used to stop the
    resume with a load error; now the damaged tail is removed, with a warning naming each folder and
    its fault, and training resumes from the last sound checkpoint to the same weights."""
    full, full_state = _train(tmp_path / "full", setup)
    cut = tmp_path / "cut"
    _train(cut, setup)
    weights = checkpoint_dir(cut, 3) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    optimizer = checkpoint_dir(cut, 2) / OPTIMIZER
    optimizer.write_bytes(optimizer.read_bytes()[:300])
    with pytest.warns(UserWarning) as caught:
        resumed, state = _train(cut, setup)
    messages = [str(w.message) for w in caught]
    assert any(str(checkpoint_dir(cut, 3)) in m and "model.safetensors" in m and "truncated" in m for m in messages)
    assert any(str(checkpoint_dir(cut, 2)) in m and OPTIMIZER in m for m in messages)
    assert state["epoch_losses"] == full_state["epoch_losses"]
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert [c.name for c in list_checkpoints(cut)] == ["epoch-000", "epoch-001", "epoch-002", "epoch-003"]
    assert not checkpoint_problem(checkpoint_dir(cut, 3)) and not checkpoint_problem(checkpoint_dir(cut, 2))
    assert not [p for p in cut.iterdir() if p.name.startswith(".")]  # nothing left aside


def test_resume_refuses_other_settings(tmp_path, setup):
    _train(tmp_path, setup)
    with pytest.raises(CheckpointError, match="different training run"):
        _train(tmp_path, setup, TrainConfig(epochs=4, lr=1e-3, batch_size=8, seed=5))


def test_epoch_batches_cover_every_example_once():
    lengths = [i % 7 for i in range(103)]
    batches = epoch_batches(lengths, 10, seed=0, epoch=2)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(103))
    assert batches == epoch_batches(lengths, 10, seed=0, epoch=2)
    assert batches != epoch_batches(lengths, 10, seed=0, epoch=3)


def test_batch_order_is_a_named_sub_seed_of_the_run_seed():
    """One pool of one batch of equal lengths keeps the shuffle's order: it is the permutation drawn
    from ``derive_seed(seed, "batches", epoch)``."""
    gen = torch.Generator().manual_seed(derive_seed(5, "batches", 2))
    assert epoch_batches([0] * 20, 20, seed=5, epoch=2, pool_batches=1) == [torch.randperm(20, generator=gen).tolist()]


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"lr": 0}, {"schedule": "cosine"}])
def test_bad_train_config(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_empty_training_set(tmp_path, setup):
    tok, task, _ = setup
    with pytest.raises(ValueError, match="empty"):
        train(make_model("tiny", tok), tok, task, Examples([], []), tmp_path, CFG)


def test_learning_rate_warms_up_then_decays_linearly():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, schedule="linear")
    assert [learning_rate(cfg, s, 8) for s in range(4)] == [0.25, 0.5 * 7 / 8, 0.75 * 6 / 8, 1.0 * 5 / 8]
    assert learning_rate(cfg, 8, 8) == 0.0
    assert learning_rate(TrainConfig(lr=0.3), 100, 8) == 0.3  # constant
