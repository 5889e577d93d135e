"""Smoke test of the throughput benchmark on a tiny configuration."""

from __future__ import annotations

import json

import pytest
import torch

from tda import bench

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
                       "--chunk", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert KEYS <= set(result)
    for key in ("train_step_examples_per_s", "features_examples_per_s", "loop_examples_per_s",
                "ratio_vs_train_step", "ratio_vs_loop", "peak_rss_mb"):
        assert result[key] > 0, key
    assert result["features_path"] == "hooks" and result["batch"] == 8 and result["proj_dim"] == 64


def test_table_and_sizes(capsys):
    assert bench.main(["--size", "tiny", "--batch", "4", "--proj-dim", "0", "--repeats", "1", "--no-loop"]) == 0
    assert "features / train step" in capsys.readouterr().out
    rows = bench.throughput_by_size(["tiny"], batch=4, proj_dim=16, repeats=1)
    assert len(rows) == 1 and rows[0]["size"] == "tiny" and rows[0]["ratio_vs_train_step"] > 0
    with pytest.raises(ValueError, match="unknown model size"):
        bench.throughput_by_size(["huge"])
