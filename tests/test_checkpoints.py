"""The one checkpoint format (``tda.checkpoints``): saved by training, read back by everything else."""

from __future__ import annotations

import copy
import json
import re
import shutil

import pytest
import torch
from transformers import GPT2LMHeadModel

from tda.checkpoints import (OPTIMIZER, CheckpointError, architecture_signature, as_checkpoint_list,
                             check_same_architecture, checkpoint_dir, checkpoint_epoch, checkpoint_problem,
                             list_checkpoints, load_checkpoint, load_checkpoint_model, load_optimizer_state,
                             read_state, run_problems, second_moments)
from tda.models import make_model
from tda.store import Store
from tda.task import CausalLMTask, Examples
from tda.train import TrainConfig, train


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


def test_checkpoint_every_epoch_with_optimizer_state(tmp_path, setup):
    _train(tmp_path, setup)
    ckpts = list_checkpoints(tmp_path)
    assert [c.name for c in ckpts] == ["epoch-000", "epoch-001", "epoch-002", "epoch-003"]
    moments = second_moments(ckpts[-1])
    model, _ = load_checkpoint(ckpts[-1])
    names = {n for n, _ in model.named_parameters()}
    assert moments and set(moments) <= names
    assert all((v >= 0).all() for v in moments.values())
    with pytest.raises(CheckpointError, match="no optimizer state"):
        second_moments(ckpts[0])


    assert set(load_optimizer_state(ckpts[-1])) == {"state", "param_groups"}
    with pytest.raises(ValueError, match="bare models"):
        second_moments(model)


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


def _stored_run(tmp_path, setup, epochs=1):
    tok, task, ex = setup
    config = TrainConfig(epochs=epochs, lr=1e-3, batch_size=8)
    return Store(tmp_path / "store").get_or_create(
        "base", {"t": 1}, lambda work: train(make_model("tiny", tok, seed=0), tok, task, ex, work, config),
        resumable=True)


def test_a_corrupt_checkpoint_in_a_store_entry_names_the_entry_and_the_command(tmp_path, setup):
    """The error used to name the checkpoint only: not which store folder to delete, nor a command."""
    folder = _stored_run(tmp_path, setup)
    ckpt = checkpoint_dir(folder, 1)
    advice = rf"store entry {re.escape(str(folder))}: remove it \(rm -rf .*python -m tda.store verify --fix"
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"garbage!"  # same size (so the store's cheap check passes it), header unreadable
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"checkpoint {re.escape(str(ckpt))} is corrupt.*{advice}"):
        load_checkpoint(ckpt)
    (ckpt / OPTIMIZER).write_bytes(b"x" * (ckpt / OPTIMIZER).stat().st_size)
    with pytest.raises(CheckpointError, match=rf"{OPTIMIZER} is corrupt.*{advice}"):
        load_optimizer_state(ckpt)
    (ckpt / "state.json").write_text("{half")
    with pytest.raises(CheckpointError, match=rf"state.json is corrupt.*{advice}"):
        read_state(ckpt)
    # outside the store there is no entry to name
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(checkpoint_dir(tmp_path / "nowhere", 1))
    assert "store entry" not in str(err.value)


def test_checkpoint_problem_and_run_problems(tmp_path, setup):
    """What the resume and the store's reuse check look at: a checkpoint's files, a run's epochs."""
    _train(tmp_path, setup, TrainConfig(epochs=2, lr=1e-3, batch_size=8))
    assert run_problems(tmp_path) == [] and all(checkpoint_problem(c) is None for c in list_checkpoints(tmp_path))
    last = checkpoint_dir(tmp_path, 2)
    (last / "config.json").unlink()
    assert checkpoint_problem(last) == "config.json is missing"
    shutil.copytree(checkpoint_dir(tmp_path, 1), tmp_path / "kept")
    shutil.rmtree(last)
    assert run_problems(tmp_path) == [f"{last} is missing (the run trains 2 epochs: epoch-000 to epoch-002)"]
    shutil.rmtree(checkpoint_dir(tmp_path, 0))
    assert len(run_problems(tmp_path)) == 2
    shutil.rmtree(checkpoint_dir(tmp_path, 1))
    assert run_problems(tmp_path) == [f"{tmp_path} holds no complete checkpoint"]
    assert run_problems(tmp_path / "absent") == [f"no checkpoint folder at {tmp_path / 'absent'}"]
    shutil.copytree(tmp_path / "kept", checkpoint_dir(tmp_path, 1))
    state = json.loads((checkpoint_dir(tmp_path, 1) / "state.json").read_text())
    del state["train_config"]
    (checkpoint_dir(tmp_path, 1) / "state.json").write_text(json.dumps(state))
    assert "names no training settings" in run_problems(tmp_path)[0]


def test_checkpoint_names_and_epochs(tmp_path):
    assert checkpoint_dir(tmp_path, 7) == tmp_path / "epoch-007"
    assert checkpoint_epoch(checkpoint_dir(tmp_path, 12)) == 12 and checkpoint_epoch("epoch-003") == 3
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        checkpoint_epoch("model-0")
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        list_checkpoints(tmp_path / "nowhere")


def test_paths_and_models_as_checkpoints(tmp_path, setup, tiny_tokenizer):
    model, _ = _train(tmp_path, setup, TrainConfig(epochs=1, lr=1e-3, batch_size=8))
    last = list_checkpoints(tmp_path)[-1]
    assert as_checkpoint_list(last) == [last] and as_checkpoint_list([model]) == [model]
    with pytest.raises(ValueError, match="empty"):
        as_checkpoint_list([])
    with pytest.raises(TypeError, match="path or a torch module"):
        as_checkpoint_list([3])
    loaded = load_checkpoint_model(last)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters()))
    assert load_checkpoint_model(model) is model
    # the signature of a path is read without loading weights, and equals the model's
    assert architecture_signature(last) == architecture_signature(model)
    check_same_architecture([last, model])
    config = copy.deepcopy(model.config)
    config.n_layer = 1
    with pytest.raises(ValueError, match="mix architectures"):
        check_same_architecture([last, GPT2LMHeadModel(config)])
    with pytest.raises(FileNotFoundError, match="config.json"):
        architecture_signature(tmp_path / "nowhere")
