"""Training's thread count is fixed (``tda.threads``), so a run's weights do not depend on the caller's."""

import pytest
import torch

import tda.train as train_module
from tda.counterfactual import retrain as retrain_module
from tda.models import make_model
from tda.task import CausalLMTask, Examples
from tda.threads import DEFAULT_THREADS, ENV, fixed_threads, training_threads
from tda.train import TrainConfig, train

CFG = TrainConfig(epochs=2, lr=3e-3, batch_size=8, seed=3)


@pytest.fixture()
def setup(tiny_world, tiny_tokenizer):
    return tiny_tokenizer, CausalLMTask(tiny_tokenizer), Examples.texts(tiny_world.pretraining_corpus()[:24])


@pytest.fixture()
def caller_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_training_threads_reads_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert training_threads() == DEFAULT_THREADS == 2
    monkeypatch.setenv(ENV, " 3 ")
    assert training_threads() == 3
    for bad in ("two", "0", "-1", "1.5"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ValueError, match=ENV):
            training_threads()


def test_fixed_threads_restores_the_callers_count(caller_threads):
    torch.set_num_threads(1)
    with fixed_threads(3) as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match=">= 1"):
        with fixed_threads(0):
            pass


def _recording(monkeypatch, module):
    seen = []
    step = module.train_step

    def wrapped(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return step(*args, **kwargs)

    monkeypatch.setattr(module, "train_step", wrapped)
    return seen


def test_every_training_step_runs_on_the_fixed_count(tmp_path, setup, monkeypatch, caller_threads):
    tok, task, ex = setup
    monkeypatch.setenv(ENV, "3")
    torch.set_num_threads(1)
    seen = _recording(monkeypatch, train_module)
    train(make_model("tiny", tok, seed=0), tok, task, ex, tmp_path / "run", CFG)
    assert seen and set(seen) == {3}
    assert torch.get_num_threads() == 1  # the caller's count is back
    seen_subset = _recording(monkeypatch, retrain_module)
    retrain_module.finetune_subset(make_model("tiny", tok, seed=0), task, ex, list(range(12)), CFG)
    assert seen_subset and set(seen_subset) == {3}
    assert torch.get_num_threads() == 1


def test_weights_do_not_depend_on_the_callers_thread_count(tmp_path, setup, caller_threads):
    # (without the fixed count they do: on this test's run, TDA_THREADS=1 and 3 end 8e-6 apart)
    tok, task, ex = setup
    weights = []
    for caller in (1, 3):
        torch.set_num_threads(caller)
        model = make_model("tiny", tok, seed=0)
        train(model, tok, task, ex, tmp_path / f"caller-{caller}", CFG)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))


def test_the_store_keys_runs_on_another_thread_count_apart(tmp_path, monkeypatch):
    from tda.store import Store, verify_entry

    store, params = Store(tmp_path), {"seed": 0, "epochs": 3}
    monkeypatch.delenv(ENV, raising=False)
    default = store.path("finetune", params)
    monkeypatch.setenv(ENV, "2")
    assert store.path("finetune", params) == default  # the default count keeps every existing key
    monkeypatch.setenv(ENV, "4")
    other = store.path("finetune", params)
    assert other != default and other.parent == default.parent
    built = []
    folder = store.get_or_create("finetune", params, lambda work: built.append((work / "w.txt").write_text("x")))
    assert folder == other and verify_entry(folder).status == "ok"  # the manifest describes the key it is stored under
    assert store.get_or_create("finetune", params, lambda work: built.append(1)) == folder and len(built) == 1
