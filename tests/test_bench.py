"""Smoke test of the throughput benchmark on a tiny configuration."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from tda import bench, bench_bm25, bench_peers
from tda import gradients as G
from tda.models import make_model
from tda.task import CausalLMTask

FIDELITY_KEYS = {"projection_fidelity", "projection_fidelity_dense", "projection_fidelity_kronecker"}
KEYS = {"train_step_examples_per_s", "features_examples_per_s", "loop_examples_per_s", "vmap_examples_per_s",
        "ratio_vs_train_step", "ratio_vs_loop", "peak_rss_mb", "features_path", "goals_met"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cli_json_smoke(capsys):
    assert bench.main(["--json", "--size", "tiny", "--batch", "8", "--proj-dim", "64", "--repeats", "1",
                       "--chunk", "4", "--fidelity-seeds", "2", "--fidelity-steps", "2", "--fidelity-queries", "3",
                       "--fidelity-candidates", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert KEYS <= set(result)
    for key in ("train_step_examples_per_s", "features_examples_per_s", "loop_examples_per_s",
                "ratio_vs_train_step", "ratio_vs_loop", "peak_rss_mb"):
        assert result[key] > 0, key
    assert result["features_path"] == "hooks" and result["batch"] == 8 and result["proj_dim"] == 64
    # the features are the default projection's: the sketch
    assert result["projection"] == G.as_projector(64).describe() and result["projection"]["kind"] == "sketch"
    # the fidelity section (issue 18): each projection's Spearman against exact dot products
    for key in FIDELITY_KEYS:
        assert -1 <= result[key] <= 1, key
    assert len(result["projection_fidelity_seeds"]["default"]) == 2
    assert result["projection_fidelity_setting"]["default"]["kind"] == "sketch"
    assert set(result["goals_met"]) >= {"ratio_vs_train_step", "projection_fidelity", "projection_fidelity_vs_dense"}


def test_kind_and_fidelity_flags(capsys):
    assert bench.main(["--json", "--size", "tiny", "--batch", "4", "--proj-dim", "16", "--repeats", "1",
                       "--no-loop", "--kind", "rademacher", "--no-fidelity"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["projection"]["kind"] == "rademacher" and not FIDELITY_KEYS & set(result)
    assert bench.main(["--json", "--no-features", "--fidelity", "--size", "tiny", "--proj-dim", "16",
                       "--fidelity-seeds", "1", "--fidelity-steps", "1", "--fidelity-queries", "2",
                       "--fidelity-candidates", "6"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert FIDELITY_KEYS <= set(result) and "train_step_examples_per_s" not in result
    for bad in (["--fidelity", "--no-fidelity"], ["--kind", "sjlt"], ["--no-features", "--fidelity", "--proj-dim", "0"]):
        with pytest.raises(SystemExit):
            bench.main(bad)


def test_table_and_sizes(capsys):
    assert bench.main(["--size", "tiny", "--batch", "4", "--proj-dim", "0", "--repeats", "1", "--no-loop"]) == 0  # no fidelity
    assert "features / train step" in capsys.readouterr().out
    rows = bench.throughput_by_size(["tiny"], batch=4, proj_dim=16, repeats=1)
    assert len(rows) == 1 and rows[0]["size"] == "tiny" and rows[0]["ratio_vs_train_step"] > 0
    with pytest.raises(ValueError, match="unknown model size"):
        bench.throughput_by_size(["huge"])


# ---- BM25 section ------------------------------------------------------------------------------
def test_bm25_section_smoke(capsys):
    assert bench.main(["--json", "--no-features", "--bm25", "--bm25-docs", "3000", "--bm25-queries", "20",
                       "--bm25-k", "50", "--bm25-ref-docs", "500", "--bm25-ref-queries", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bm25_corpus_size"] == 3000 and result["bm25_k"] == 50
    assert result["bm25_exact"] is True  # our scores are rank_bm25's bits and our top-k its stable order
    for key in ("bm25_docs_per_s", "bm25_vs_rank_bm25", "bm25_peak_rss_mb", "bm25_index_s"):
        assert result[key] > 0, key
    assert "train_step_examples_per_s" not in result  # --no-features


def test_zipf_corpus_is_seeded_and_skewed():
    a, b = bench_bm25.zipf_texts(200, (12, 40), seed=3), bench_bm25.zipf_texts(200, (12, 40), seed=3)
    assert a == b and a != bench_bm25.zipf_texts(200, (12, 40), seed=4)
    assert all(12 <= len(t.split()) <= 40 for t in a)
    share = sum("w0" in t.split() for t in a) / len(a)
    assert 0.7 < share < 1.0  # the most frequent word is in most documents, as in real text


def test_no_features_alone_is_refused():
    with pytest.raises(SystemExit):
        bench.main(["--no-features"])


# ---- peers section -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def peer_setup():
    world, tokenizer = bench.world_and_tokenizer()
    examples = bench.fact_batch(world, 20)
    return tokenizer, examples.subset(range(16)), examples.subset(range(16, 20))


def test_example_loss_is_the_task_loss(peer_setup):
    tokenizer, train, _ = peer_setup
    task = CausalLMTask(tokenizer)
    model = make_model("tiny", tokenizer, seed=0).eval()
    batch = task.encode(train)
    with torch.no_grad():
        expected = task.per_example_loss(model, batch)
        logits = model(input_ids=batch["input_ids"]).logits
        got = torch.stack([bench_peers.example_loss(lg, lb) for lg, lb in zip(logits, batch["labels"])])
        assert torch.allclose(got, expected, atol=1e-6)
        converted = bench_peers.linear_copy(model)
        assert not any(isinstance(m, Conv1D) for m in converted.modules())
        assert torch.allclose(converted(input_ids=batch["input_ids"]).logits, logits, atol=1e-5)


def test_missing_peers_are_reported_not_raised(peer_setup, monkeypatch):
    tokenizer, train, queries = peer_setup
    monkeypatch.setattr(bench_peers, "available", lambda name: False)
    result = bench_peers.measure_peers(tokenizer, train, queries, steps=1, proj_dim=16, batch_size=8)
    assert result["peers"] == {} and set(result["peers_missing"]) == set(bench_peers.PEERS)
    assert "pip install" in result["peers_missing"]["dattri"]
    with pytest.raises(ValueError, match="unknown peer 'captum'"):
        bench_peers.measure_peers(tokenizer, train, queries, peers=["captum"])


@pytest.mark.parametrize("peer", ["dattri", "traker", "kronfluence"])
def test_peer_agrees_with_ours(peer_setup, peer):
    pytest.importorskip(bench_peers.MODULES[peer], reason=f"{peer} is an optional extra (.[peers])")
    tokenizer, train, queries = peer_setup
    with bench.quiet():
        result = bench_peers.measure_peers(tokenizer, train, queries, steps=2, proj_dim=16, batch_size=8,
                                           peers=[peer])
    entry = result["peers"][peer]
    assert entry["score_corr"] >= 0.99 and entry["examples_per_s"] > 0 and entry["ratio_vs_ours"] > 0
