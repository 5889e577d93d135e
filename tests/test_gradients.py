"""Per-example gradient features against brute-force single-example backwards."""

from __future__ import annotations

import copy
import json
import re
import warnings

import numpy as np
import pytest
import torch

from tda import gradients as G
from tda.models import make_model
from tda.task import CausalLMTask, Examples, Seq2SeqTask

GROUPS = ["embedding", "block.0", "head", "all"]


@pytest.fixture(scope="module", autouse=True)
def _quiet(monkeypatch_module):
    monkeypatch_module.setenv("TDA_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast and shares a busy machine better
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def gpt2(tiny_tokenizer):
    return make_model("tiny", tiny_tokenizer, seed=0)


@pytest.fixture(scope="module")
def task(tiny_tokenizer):
    return CausalLMTask(tiny_tokenizer)


@pytest.fixture(scope="module")
def examples(tiny_world):
    """Mixed lengths and layouts: plain facts, a cloze with a prompt, a news text."""
    f = tiny_world.facts
    prompt, answer = tiny_world.cloze(f[0])
    return Examples(["", "", prompt + " answer :", ""],
                    [tiny_world.render(f[1]), tiny_world.render(f[2], 3), answer, tiny_world.pretraining_corpus()[0]])


@pytest.fixture(scope="module")
def t5(tiny_tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=len(tiny_tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                      decoder_start_token_id=tiny_tokenizer.pad_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
                      eos_token_id=tiny_tokenizer.eos_token_id)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config).eval()


_BRUTE: dict = {}


def brute_force(model, task, examples, names) -> np.ndarray:
    """One ordinary ``loss.backward()`` per example on a copy of the model (cached per model and
    examples, so that each group's test slices the same reference gradients)."""
    key = (id(model), tuple(examples.prompts), tuple(examples.targets))
    if key not in _BRUTE:
        m = copy.deepcopy(model)
        per_name = {n: [] for n, _ in m.named_parameters()}
        for i in range(len(examples)):
            m.zero_grad(set_to_none=True)
            task.per_example_loss(m, task.encode(examples.subset([i])))[0].backward()
            for n, p in m.named_parameters():
                per_name[n].append(torch.zeros_like(p) if p.grad is None else p.grad.clone())
        _BRUTE[key] = {n: torch.stack(v) for n, v in per_name.items()}
    grads = _BRUTE[key]
    return torch.cat([grads[n].reshape(len(examples), -1) for n in names], dim=1).numpy()


def assert_close(a, b, rtol=1e-4):
    scale = max(np.abs(b).max(), 1e-12)
    assert np.abs(np.asarray(a) - b).max() <= rtol * scale


# ---- groups -------------------------------------------------------------------------------
def test_groups_gpt2(gpt2):
    assert G.select_parameters(gpt2, "embedding") == ["transformer.wte.weight"]
    assert G.select_parameters(gpt2, "head") == ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    block0 = G.select_parameters(gpt2, "block.0")
    assert block0 and all(n.startswith("transformer.h.0.") for n in block0)
    assert G.select_parameters(gpt2, "all") == G.parameter_names(gpt2)
    union = G.select_parameters(gpt2, ["head", "embedding"])
    assert union == ["transformer.wte.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"]
    assert G.select_parameters(gpt2, re.compile(r"c_fc\.weight")) == ["transformer.h.0.mlp.c_fc.weight",
                                                                        "transformer.h.1.mlp.c_fc.weight"]
    assert G.select_parameters(gpt2, "transformer.wpe.weight") == ["transformer.wpe.weight"]
    untied_config = copy.deepcopy(gpt2.config)
    untied_config.tie_word_embeddings = False
    untied = type(gpt2)(untied_config)
    assert G.select_parameters(untied, "head") == ["transformer.ln_f.weight", "transformer.ln_f.bias",
                                                   "lm_head.weight"]


@pytest.mark.parametrize("group", ["block.7", "no_such_param", ["embedding", "nothing_here"], []])
def test_group_matching_nothing_raises(gpt2, group):
    with pytest.raises(ValueError) as err:
        G.select_parameters(gpt2, group)
    if group:
        assert "transformer.wte.weight" in str(err.value)  # lists the available names


def test_groups_t5(t5):
    assert G.select_parameters(t5, "embedding") == ["shared.weight"]
    assert G.select_parameters(t5, "head") == ["decoder.final_layer_norm.weight"]  # lm_head is tied
    both = G.select_parameters(t5, "block.0")
    assert any(n.startswith("encoder.") for n in both) and any(n.startswith("decoder.") for n in both)
    assert all(n.startswith("encoder.block.0.") for n in G.select_parameters(t5, "encoder.block.0"))


# ---- exactness ----------------------------------------------------------------------------
@pytest.mark.parametrize("group", GROUPS)
def test_features_equal_brute_force_gpt2(gpt2, task, examples, group):
    names = G.select_parameters(gpt2, group)
    feats = G.gradient_features(gpt2, task, examples, group, batch_size=3, method="vmap")
    assert feats.shape == (len(examples), G.feature_dim(gpt2, group))
    assert_close(feats, brute_force(gpt2, task, examples, names))


@pytest.mark.parametrize("group", GROUPS)
def test_features_equal_brute_force_t5(t5, tiny_tokenizer, examples, group):
    task = Seq2SeqTask(tiny_tokenizer)
    ex = Examples([p or "Summary :" for p in examples.prompts], examples.targets)
    names = G.select_parameters(t5, group)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # T5 has no vmap path: the loop takes over
        feats = G.gradient_features(t5, task, ex, group, batch_size=2)
    assert_close(feats, brute_force(t5, task, ex, names))


def test_vmap_falls_back_to_loop_with_a_warning(t5, tiny_tokenizer, examples):
    task = Seq2SeqTask(tiny_tokenizer)
    ex = Examples(["a"] * 2, examples.targets[:2])
    with pytest.warns(RuntimeWarning, match="loop"):
        G.gradient_features(t5, task, ex, "head")
    with pytest.raises(RuntimeError):
        G.gradient_features(t5, task, ex, "head", method="vmap")


def test_vmap_path_equals_loop_path(gpt2, task, examples):
    a = G.gradient_features(gpt2, task, examples, "all", batch_size=4, method="vmap")
    b = G.gradient_features(gpt2, task, examples, "all", method="loop")
    assert_close(a, b, rtol=1e-5)


def test_model_state_is_left_alone(gpt2, task, examples):
    before = {k: v.clone() for k, v in gpt2.state_dict().items()}
    gpt2.train()
    G.gradient_features(gpt2, task, examples, "head", batch_size=2)
    assert gpt2.training  # restored
    gpt2.eval()
    assert all(torch.equal(before[k], v) for k, v in gpt2.state_dict().items())
    assert all(p.grad is None for p in gpt2.parameters())
    assert torch.is_grad_enabled()


def test_optimizer_correction_is_elementwise_division(gpt2, task, examples):
    names = G.select_parameters(gpt2, ["embedding", "block.1"])
    params = dict(gpt2.named_parameters())
    gen = torch.Generator().manual_seed(3)
    moments = {n: torch.rand(params[n].shape, generator=gen) * 1e-4 for n in names}
    got = G.gradient_features(gpt2, task, examples, names, correction=moments, eps=1e-7)
    denom = torch.cat([(moments[n].sqrt() + 1e-7).reshape(-1) for n in names]).numpy()
    assert_close(got, brute_force(gpt2, task, examples, names) / denom)
    with pytest.raises(ValueError, match="missing"):
        G.gradient_features(gpt2, task, examples, "all", correction=moments)


def test_nonfinite_gradient_raises(tiny_tokenizer, task, examples):
    broken = make_model("tiny", tiny_tokenizer, seed=1)
    with torch.no_grad():
        broken.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(G.NonFiniteGradientError, match="NaN or infinite"):
        G.gradient_features(broken, task, examples, "all")
    with pytest.raises(G.NonFiniteGradientError):
        G.gradient_dots(broken, task, examples, examples, "block.1")
    with torch.no_grad():
        broken.transformer.h[0].mlp.c_fc.weight[0, 0] = float("inf")
    with pytest.raises(G.NonFiniteGradientError):
        G.gradient_features(broken, task, examples, "all", projection=64)


def test_empty_examples_raise(gpt2, task):
    with pytest.raises(ValueError, match="empty"):
        G.gradient_features(gpt2, task, Examples([], []), "all")
    with pytest.raises(TypeError):
        G.gradient_features(gpt2, task, ["a text"], "all")


# ---- projection ---------------------------------------------------------------------------
SHAPES = {"w": (96, 80), "b": (80,), "e": (120, 40), "small": (8, 6)}


def _random_grads(seed, correlated_with=None, noise=1.0):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in SHAPES.items():
        t = torch.randn(shape, generator=gen)
        if correlated_with is not None:
            t = correlated_with[name] + noise * t
        out[name] = t
    return out


def _dot(g, h):
    return float(sum((g[n].double() * h[n].double()).sum() for n in g))


@pytest.mark.parametrize("structure,kind", [("auto", "rademacher"), ("kronecker", "gaussian"), ("dense", "rademacher")])
def test_projection_preserves_inner_products_within_bound(structure, kind):
    g = _random_grads(0)
    h = _random_grads(1, correlated_with=g, noise=0.7)
    exact = _dot(g, h)
    errors, bounds = [], []
    for seed in range(8):
        proj = G.Projector(256, seed=seed, kind=kind, structure=structure, dense_max_entries=1 << 16)
        pg = proj.project({n: t[None] for n, t in g.items()})[0]
        ph = proj.project({n: t[None] for n, t in h.items()})[0]
        err = float(pg.double() @ ph.double()) - exact
        bound = proj.variance_bound(g, h)
        assert abs(err) <= 4 * bound ** 0.5, (seed, err, bound ** 0.5)
        errors.append(err)
        bounds.append(bound)
    # The bound is a variance: the mean squared error over seeds should not exceed it by much.
    assert np.mean(np.square(errors)) <= 2 * np.mean(bounds)
    # Dense blocks reach the Johnson-Lindenstrauss variance (<= 2/k |g|^2 |h|^2); Kronecker
    # blocks pay at most (2/k1 + 2/k2 + 3/k) |g_t|^2 |h_t|^2 more.
    if structure == "dense":
        assert max(bounds) <= 2 / 256 * _dot(g, g) * _dot(h, h)


def test_projection_is_seeded_and_matches_explicit_matrix():
    g = _random_grads(5)
    a = G.Projector(64, seed=7)
    b = G.Projector(64, seed=7)
    c = G.Projector(64, seed=8)
    for name, shape in SHAPES.items():
        assert torch.equal(a.matrix(name, shape), b.matrix(name, shape))
        assert not torch.equal(a.matrix(name, shape), c.matrix(name, shape))
    batch = {n: torch.stack([t, 2 * t]) for n, t in g.items()}
    explicit = sum(batch[n].reshape(2, -1) @ a.matrix(n, SHAPES[n]) for n in SHAPES)
    assert torch.allclose(a.project(batch), explicit, atol=1e-4)
    # Kronecker blocks never hold more than (m + n) * sqrt(k) numbers.
    assert a.plan("w", SHAPES["w"]).kind == "dense" and G.Projector(1024).plan("w", (512, 512)).kind == "kron"


def test_projection_dense_blocks_do_not_depend_on_the_cache():
    shape = (9000,)
    big = G.Projector(32, seed=1)
    small = G.Projector(32, seed=1, cache_bytes=0)
    assert torch.equal(big.matrix("v", shape), small.matrix("v", shape))


def test_projection_bad_settings_raise():
    with pytest.raises(ValueError):
        G.Projector(0)
    with pytest.raises(ValueError):
        G.Projector(16, kind="sparse")
    with pytest.raises(ValueError, match="factor"):
        G.Projector(1021, structure="kronecker").plan("w", (64, 64))


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


# ---- storage ------------------------------------------------------------------------------
def test_features_on_disk_roundtrip(gpt2, task, examples, tmp_path):
    path = tmp_path / "feats" / "block0.f32"
    mem = G.gradient_features(gpt2, task, examples, "block.0", projection=32)
    disk = G.gradient_features(gpt2, task, examples, "block.0", projection=32, out=path, meta={"seed": 0})
    assert isinstance(disk, np.memmap) and np.array_equal(np.asarray(disk), mem)
    side = json.loads((tmp_path / "feats" / "block0.f32.json").read_text())
    assert side["shape"] == [len(examples), 32] and side["params"]["projection"]["dim"] == 32
    assert not list((tmp_path / "feats").glob("*.partial"))
    again = G.load_features(path, shape=(len(examples), 32))
    assert np.array_equal(np.asarray(again), mem)
    with pytest.raises(ValueError, match="shape"):
        G.load_features(path, shape=(len(examples), 64))
    with open(path, "r+b") as f:  # a truncated file is refused, not misread
        f.truncate(10)
    with pytest.raises(ValueError, match="incomplete or corrupt"):
        G.load_features(path)
    with pytest.raises(FileNotFoundError):
        G.load_features(tmp_path / "missing.f32")


def test_save_features_roundtrip(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    G.save_features(tmp_path / "x.f32", x, {"note": "test"})
    assert np.array_equal(G.load_features(tmp_path / "x.f32"), x)
    assert G.feature_params(tmp_path / "x.f32")["params"] == {"note": "test"}


# ---- dot products -------------------------------------------------------------------------
def test_gradient_dots_equal_explicit_dot_products(gpt2, task, examples):
    q, c = examples.subset([0, 2]), examples
    names = G.parameter_names(gpt2)
    gq, gc = brute_force(gpt2, task, q, names), brute_force(gpt2, task, c, names)
    dots = G.gradient_dots(gpt2, task, q, c, "all", batch_size=2)
    assert_close(dots.dots, gq.astype(np.float64) @ gc.T.astype(np.float64), rtol=1e-4)
    assert np.allclose(dots.query_sq_norms, (gq.astype(np.float64) ** 2).sum(1), rtol=1e-4)
    cos = dots.cosine()
    assert np.all(cos <= 1 + 1e-9) and np.all(cos >= -1 - 1e-9)
    assert np.allclose(cos[0, 0], 1.0, atol=1e-5)  # query 0 is candidate 0
    # Query blocks (when query gradients exceed the memory budget) give the same numbers.
    blocked = G.gradient_dots(gpt2, task, q, c, "all", max_query_bytes=1)
    assert np.allclose(blocked.dots, dots.dots, rtol=1e-5) and np.allclose(blocked.candidate_sq_norms,
                                                                           dots.candidate_sq_norms)
