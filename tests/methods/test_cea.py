"""CEA and DDA's README pipeline (ground/error model pairs) on small cases with a known answer."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from tda import gradients as G
from tda.data.world import news_article
from tda.data.xsum import prompt, replace_word
from tda.methods.cea import ContrastTraining, cea, contrast_pair, corrected_examples, train_copy
from tda.methods.dda import check_beta
from tda.methods.dda_pairs import PairInfluence, pair_influence
from tda.metrics import set_auc
from tda.models import make_model
from tda.task import Examples, losses
from tda.counterfactual import finetune_subset
from tda.train import TrainConfig


def _news(world, n, country, seed):
    rng = random.Random(seed)
    return [news_article(rng, world, country=country, event="storm")[:2] for _ in range(n)]


@pytest.fixture(scope="module")
def model(tiny_tokenizer, tiny_world, task):
    """A tiny model that has learnt to summarise storm articles (clean England, China and France
    news, 6 epochs): the trained model from which CEA steps towards the errors and their fixes."""
    rows = _news(tiny_world, 8, "England", 7) + _news(tiny_world, 8, "China", 8) + _news(tiny_world, 8, "France", 9)
    m = make_model("tiny", tiny_tokenizer, seed=0)
    finetune_subset(m, task, Examples([prompt(d) for d, _ in rows], [s for _, s in rows]), np.ones(len(rows), bool),
                    TrainConfig(epochs=6, lr=3e-3, batch_size=8, seed=0))
    return m


@pytest.fixture(scope="module")
def case(tiny_world):
    """A poisoning with a known answer: 4 storm articles about England whose summaries say China
    (positives), 4 with their true England summaries, 4 France articles; two error outputs say
    China for England storm articles, corrected to England."""
    poisoned = [(d, replace_word(s, "England", "China")) for d, s in _news(tiny_world, 4, "England", 1)]
    clean = _news(tiny_world, 4, "England", 2) + _news(tiny_world, 4, "France", 3)
    rows = poisoned + clean
    candidates = Examples([prompt(d) for d, _ in rows], [s for _, s in rows])
    labels = np.array([1] * 4 + [0] * 8, dtype=bool)
    tests = _news(tiny_world, 2, "England", 4)
    errors = Examples([prompt(d) for d, _ in tests], [replace_word(s, "England", "China") for _, s in tests])
    corrected = [s for _, s in tests]
    return {"candidates": candidates, "labels": labels, "errors": errors, "corrected": corrected}


def test_cea_finds_the_poison_in_a_known_case(task, model, case):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = cea(model, task, case["errors"], case["corrected"], case["candidates"])
    assert scores.shape == (1, 12)
    assert set_auc(scores[0], case["labels"]) == 1.0
    # positive where the step towards the error made a China summary likelier than the step towards England
    assert (scores[0, :4] > 0).all() and (scores[0, 4:8] < 0).all()
    for k, v in model.state_dict().items():  # the trained model is not changed
        assert torch.equal(v, before[k]), k
    per_query = cea(model, task, case["errors"], case["corrected"], case["candidates"], per_query=True)
    assert per_query.shape == (2, 12)
    # one error alone is a noisier contrast: each still puts a poisoned summary first, and nearly all above the rest
    for row in per_query:
        assert case["labels"][np.argmax(row)] and set_auc(row, case["labels"]) > 0.9


def test_cea_equals_its_definition(task, model, case):
    """loss(c; θ_fix) - loss(c; θ_err), each θ three AdamW steps on the whole error set."""
    training = ContrastTraining(steps=3, lr=1e-3)
    scores = cea(model, task, case["errors"], case["corrected"], case["candidates"], training=training)[0]
    manual = {}
    for name, targets in (("err", case["errors"].targets), ("fix", case["corrected"])):
        m = copy.deepcopy(model)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.0)
        batch = task.encode(Examples(case["errors"].prompts, list(targets)))
        for _ in range(3):
            opt.zero_grad()
            task.per_example_loss(m, batch).mean().backward()
            opt.step()
        m.eval()
        manual[name] = losses(m, task, case["candidates"]).double().numpy()
    assert np.allclose(scores, manual["fix"] - manual["err"], atol=1e-6)


def test_one_sgd_step_is_a_gradient_dot_product(task, model, case):
    """First order: loss(c; θ - η g_fix) - loss(c; θ - η g_err) ≈ η <g_c, g_err - g_fix>."""
    eta = 1e-3
    training = ContrastTraining(steps=1, lr=eta, optimizer="sgd")
    scores = cea(model, task, case["errors"], case["corrected"], case["candidates"], training=training)[0]
    fixed = corrected_examples(case["errors"], case["corrected"])
    d_err = G.gradient_dots(model, task, case["errors"], case["candidates"]).dots.mean(0)
    d_fix = G.gradient_dots(model, task, fixed, case["candidates"]).dots.mean(0)
    expected = eta * (d_err - d_fix)
    assert np.allclose(scores, expected, rtol=0.05, atol=0.02 * np.abs(expected).max())
    # and the pair pipeline's gradient form is exactly that dot product for one SGD step
    pairs = pair_influence([model, model], task, case["errors"], case["corrected"], case["candidates"],
                           training=training, influence="gradient")
    assert np.allclose(pairs.scores[0, 0], expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_pair_influence_loss_form_is_cea_per_checkpoint(task, model, case, tiny_tokenizer):
    other = make_model("tiny", tiny_tokenizer, seed=5)
    training = ContrastTraining(steps=2, lr=1e-3)
    pi = pair_influence([other, model, model], task, case["errors"], case["corrected"], case["candidates"],
                        training=training)
    assert pi.scores.shape == (3, 1, 12) and pi.n_epochs == 2
    assert np.allclose(pi.scores[0, 0], cea(other, task, case["errors"], case["corrected"], case["candidates"],
                                            training=training)[0])
    assert np.allclose(pi.scores[1], pi.scores[2])  # deterministic: same checkpoint, same pair
    per_query = pair_influence([other, model], task, case["errors"], case["corrected"], case["candidates"],
                               training=training, per_query=True)
    assert per_query.scores.shape == (2, 2, 12)


def test_pair_influence_combinations_hand_worked():
    scores = np.array([[[1.0, -1.0, 0.0]],    # θ0
                       [[2.0, 0.0, 1.0]],     # epoch 1
                       [[4.0, 2.0, -1.0]]])   # epoch 2
    pi = PairInfluence(scores)
    assert np.allclose(pi.dda(beta=0), [[3.0, 1.0, 0.0]])
    assert np.allclose(pi.dda(beta=1), [[2.0, 2.0, 0.0]])
    assert np.allclose(pi.dda(beta=0.5, denoise=False), [[3.5, 2.5, -1.0]])
    assert np.allclose(pi.dda(beta=2, debias=False), [[3.0, 1.0, 0.0]])
    signal, bias = pi.term_scales()
    assert np.allclose(signal, [np.sqrt(10)]) and np.allclose(bias, [np.sqrt(2)])
    assert np.allclose(pi.checkpoint(0), scores[0])


def test_pair_influence_round_trip(tmp_path):
    pi = PairInfluence(np.arange(12.0).reshape(2, 2, 3))
    pi.save(tmp_path)
    assert np.array_equal(PairInfluence.load(tmp_path).scores, pi.scores)


@pytest.mark.parametrize("beta, error", [("1", TypeError), (None, TypeError), (True, TypeError),
                                         (float("nan"), ValueError), (float("inf"), ValueError)])
def test_beta_must_be_a_finite_number(beta, error):
    with pytest.raises(error, match="beta"):
        check_beta(beta)
    with pytest.raises(error, match="beta"):
        PairInfluence(np.zeros((2, 1, 3))).dda(beta=beta)


def test_bad_inputs(task, model, case):
    errors = case["errors"]
    with pytest.raises(ValueError, match="equal the errors"):
        cea(model, task, errors, list(errors.targets), case["candidates"])
    with pytest.raises(ValueError, match="2 errors"):
        cea(model, task, errors, case["corrected"][:1], case["candidates"])
    with pytest.raises(ValueError, match="prompts"):
        cea(model, task, errors, Examples(["x", "y"], case["corrected"]), case["candidates"])
    with pytest.raises(TypeError, match="one string"):
        contrast_pair(model, task, errors, "England", ContrastTraining())
    with pytest.raises(ValueError, match="steps"):
        ContrastTraining(steps=0)
    with pytest.raises(ValueError, match="lr"):
        ContrastTraining(lr=float("nan"))
    with pytest.raises(ValueError, match="optimizer"):
        ContrastTraining(optimizer="adam")
    with pytest.raises(ValueError, match="influence"):
        pair_influence([model, model], task, errors, case["corrected"], case["candidates"], influence="tracin")
    with pytest.raises(ValueError, match="θ0 and at least one"):
        pair_influence([model], task, errors, case["corrected"], case["candidates"])
    with pytest.raises(ValueError, match="shape"):
        PairInfluence(np.zeros((1, 1, 3)))
    with pytest.raises(FloatingPointError, match="lower lr"):
        train_copy(model, task, errors, ContrastTraining(steps=3, lr=1e30, optimizer="sgd"))


def test_pair_influence_normalised_beta():
    pi = PairInfluence(np.array([[[10.0, 0.0, -10.0]], [[3.0, 1.0, 0.0]], [[3.0, 1.0, 0.0]]]))
    signal, bias = pi.terms()
    assert np.allclose(signal, [[3.0, 1.0, 0.0]]) and np.allclose(bias, [[10.0, 0.0, -10.0]])
    ratio = np.sqrt(10.0) / np.sqrt(200.0)
    assert np.allclose(pi.dda(beta=1.0, beta_units="normalised"), signal - ratio * bias)
    # the θ0 term's scale no longer matters
    scaled = PairInfluence(pi.scores * np.array([100.0, 1.0, 1.0])[:, None, None])
    assert np.allclose(scaled.dda(0.4, beta_units="normalised"), pi.dda(0.4, beta_units="normalised"))
    assert np.allclose(pi.dda(beta=1.0, beta_units="normalised", debias=False), signal)
    with pytest.raises(ValueError, match="beta units"):
        pi.dda(1.0, beta_units="percent")
