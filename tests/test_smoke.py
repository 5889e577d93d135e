"""The smallest real case end to end (issue 14): real-format files and a saved Hugging Face-format model
through both papers' pipelines, and the GPU script that runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tda.data import ftrace as ft
from tda.smoke import SmokeSettings, ftrace_case, sample_inputs, xsum_case

REPO = Path(__file__).resolve().parents[1]
SMALL = SmokeSettings(n_queries=6, n_abstracts=60, epochs=2, k=5, projection=16, n_docs=40, max_new_tokens=8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one thread is as fast, and two threads on a busy 2-core machine were 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    os.environ.setdefault("TDA_PROGRESS", "0")
    work = tmp_path_factory.mktemp("smoke")
    return work, sample_inputs(work)


def test_sample_model_is_a_hugging_face_folder_with_its_tokenizer(inputs):
    _, paths = inputs
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in paths["model"].iterdir()}


def test_ftrace_files_to_scores_with_a_tiny_model_and_a_trained_tokenizer(inputs):
    """FTRACE-format files -> tokenizer trained on them -> tiny model fine-tuned -> BM25, TracIn,
    EMBED and the sharded features' blocked top-k, via tda.methods and tda.gradients."""
    work, paths = inputs
    got = ftrace_case(str(paths["ftrace"]), "tiny", work, SMALL, torch.device("cpu"))
    assert got["n_queries"] == 6 and got["n_abstracts"] == 60
    assert got["model"]["kind"] == "tiny" and got["source"]["kind"] == "local"
    assert got["train_losses"][1] < got["train_losses"][0]  # it learned
    assert set(got["mrr"]) == {"bm25_top_k", "tracin_cosine", "embed", "projected_features_top_k"}
    assert all(0.0 <= v <= 1.0 for v in got["mrr"].values())
    assert got["blocked_top_k_equals_dense"] is True
    assert got["feature_shape"] == [[6, 16], [60, 16]]
    # the trained tokenizer covers the data: no [UNK] in any abstract
    data = ft.load_ftrace(paths["ftrace"])
    assert got["vocabulary"] < 400 and len(data.abstracts) == 240


def test_xsum_file_to_poisoned_generations_with_a_saved_model(inputs):
    """XSum-format file -> load_xsum -> poison -> fine-tune the saved model (its own tokenizer) -> generation."""
    work, paths = inputs
    got = xsum_case(str(paths["xsum"]), str(paths["model"]), work, SMALL, torch.device("cpu"))
    assert got["model"]["kind"] == "pretrained" and got["source"]["limit"] == 40
    assert got["n_train"] + got["n_test"] == 40 and got["n_poisoned"] > 0
    assert got["train_losses"][1] < got["train_losses"][0]
    assert got["prompted"] > 0 and got["hallucinated"] + got["correct"] <= got["prompted"]
    assert isinstance(got["example"], str)
    runs = sorted((work / "runs" / "xsum").glob("epoch-*"))
    assert [p.name for p in runs] == ["epoch-000", "epoch-001", "epoch-002"]


def test_the_script_runs_the_smoke_module(tmp_path):
    """scripts/gpu_smoke.sh without installing: reaches tda.smoke with the options passed through."""
    env = {**os.environ, "SKIP_INSTALL": "1", "TDA_PROGRESS": "0"}
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_smoke.sh")]).returncode == 0
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh"), "--help"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CUDA available:" in done.stdout and "--nproc" in done.stdout and "--model" in done.stdout


@pytest.mark.slow
def test_the_script_end_to_end_with_two_ranks(tmp_path):
    """The user's first command, as on a GPU machine (here on the CPU): both parts, features on 2 ranks."""
    env = {**os.environ, "SKIP_INSTALL": "1", "TDA_PROGRESS": "0", "SMOKE_WORK": str(tmp_path / "work")}
    out = tmp_path / "smoke.json"
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh"), "--epochs", "2", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["settings"]["nproc"] == 2 and summary["ftrace"]["blocked_top_k_equals_dense"] is True
    assert summary["environment"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert summary["xsum"]["n_poisoned"] > 0
