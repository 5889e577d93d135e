"""The projection benchmark: its candidates are the projections it names, its dense reference has
a dense projection's law, and the command line runs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from tda import gradients as G
from tda import bench_projection as PB
from tda.models import make_model
from tda.task import CausalLMTask, Examples


@pytest.fixture(scope="module", autouse=True)
def _quiet(quiet):
    yield


@pytest.mark.parametrize("name", ["sketch", "sketch-formed", "sjlt", "block-kronecker-4"])
def test_candidate_hooks_features_equal_projected_brute_force(tiny_world, tiny_tokenizer, name):
    model = make_model("tiny", tiny_tokenizer, seed=0)
    task = CausalLMTask(tiny_tokenizer)
    f = tiny_world.facts
    examples = Examples(["", "", ""], [tiny_world.render(f[1]), tiny_world.render(f[2], 3),
                                       tiny_world.pretraining_corpus()[0]])
    proj = PB.make_projection(name, 64, seed=3)
    got = PB.hooks_features(model, task, examples, proj, batch_size=2)
    m = copy.deepcopy(model)
    rows = []
    for i in range(len(examples)):
        m.zero_grad(set_to_none=True)
        task.per_example_loss(m, task.encode(examples.subset([i])))[0].backward()
        rows.append(proj.project({n: p.grad[None] for n, p in m.named_parameters()})[0])
    want = torch.stack(rows).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_dense_reference_has_the_law_of_a_dense_gaussian_projection():
    """Projected inner products: mean the Gram matrix, variance (K_ii K_jj + K_ij^2) / k."""
    gen = np.random.default_rng(0)
    grads = gen.standard_normal((3, 40)) @ gen.standard_normal((40, 40))
    gram, k, n = grads @ grads.T, 16, 4000
    sims = np.array([(lambda f: f @ f.T)(PB.dense_features_in_law(gram, k, seed)) for seed in range(n)])
    want_var = (np.outer(np.diag(gram), np.diag(gram)) + gram ** 2) / k
    assert np.all(np.abs(sims.mean(0) - gram) <= 4 * np.sqrt(want_var / n))
    assert np.allclose(sims.var(0), want_var, rtol=0.15)


def test_unknown_projection_raises():
    with pytest.raises(ValueError, match="unknown projection"):
        PB.make_projection("fourier", 64, 0)
    with pytest.raises(ValueError, match="does not divide"):
        PB.BlockKronecker(100, s=8)


def test_cli_json_smoke(capsys):
    assert PB.main(["--json", "--size", "tiny", "--dim", "64", "--seeds", "1", "--steps", "2", "--queries", "3",
                    "--candidates", "8", "--projections", "kronecker,sketch", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["fidelity"]) == {"kronecker", "sketch", "dense"}
    assert all(-1 <= row["mean"] <= 1 for row in result["fidelity"].values())
    assert set(result["throughput"]["ratio_vs_train_step"]) == {"kronecker", "sketch"}
    assert result["throughput"]["cost_vs_kronecker"]["kronecker"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown projection"):
        PB.main(["--projections", "nope"])


def test_projection_fidelity_keys_for_the_bench():
    out = PB.projection_fidelity("tiny", dim=64, seeds=(0, 1), steps=2, n_queries=3, n_candidates=8)
    assert {"projection_fidelity", "projection_fidelity_dense", "projection_fidelity_kronecker"} <= set(out)
    assert len(out["projection_fidelity_seeds"]["default"]) == 2
    assert out["projection_fidelity"] == pytest.approx(np.mean(out["projection_fidelity_seeds"]["default"]))
    assert out["projection_fidelity_setting"]["default"] == G.as_projector(64).describe()


def test_default_candidate_is_what_a_dimension_makes():
    assert PB.make_projection("default", 64, 2).describe() == G.as_projector(64, seed=2).describe()
    assert PB.make_projection("sketch", 64, 2).describe() == G.as_projector(64, seed=2).describe()
    assert PB.make_projection("kronecker", 64, 2).describe() == G.as_projector(64, seed=2, kind="rademacher").describe()
