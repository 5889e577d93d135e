"""Sharded featurisation: N ranks write one feature file equal to the single-process one, bit for bit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tda.gradients import feature_params, gradient_features
from tda.gradients import shard
from tda.gradients.per_example import _chunks
from tda.gradients.shard import Ranks, rank_rows, save_examples, sharded_features
from tda.model_sources import save_model
from tda.models import load_model
from tda.task import Examples, task_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def many(tiny_world):
    """37 examples of mixed lengths (so chunks differ in width and the last chunk is short)."""
    texts = tiny_world.pretraining_corpus()
    prompts = [tiny_world.cloze(f)[0] + " answer :" for f in tiny_world.facts[:12]]
    answers = [tiny_world.cloze(f)[1] for f in tiny_world.facts[:12]]
    return Examples(prompts + [""] * 25, answers + texts[:25])


@pytest.fixture(scope="module")
def saved(tmp_path_factory, gpt2, tiny_tokenizer, many):
    root = tmp_path_factory.mktemp("shard")
    return {"model": save_model(gpt2, tiny_tokenizer, root / "model"),
            "examples": save_examples(many, root / "examples.jsonl"), "root": root}


def _same_file(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes()
    assert feature_params(a) == feature_params(b)


def test_rank_chunks_partition_the_rows(task, many):
    chunks = _chunks(task, many, 4)
    per_rank = [rank_rows(task, many, 4, r, 3) for r in range(3)]
    rows = np.concatenate([np.concatenate(c) for c in per_rank])
    assert sorted(rows.tolist()) == list(range(len(many)))
    assert [len(c) for c in per_rank] == [4, 3, 3]  # 10 chunks dealt round robin
    assert all(np.array_equal(per_rank[i % 3][i // 3], chunks[i]) for i in range(len(chunks)))
    with pytest.raises(ValueError, match="rank must be in"):
        rank_rows(task, many, 4, 3, 3)


@pytest.mark.parametrize("projection", [None, 32])
def test_one_process_equals_gradient_features(tmp_path, gpt2, task, many, projection):
    """Pieces of whole chunks reproduce gradient_features' batches: the same bytes, the same sidecar."""
    t = task.without_eos()
    ref = tmp_path / "ref.f32"
    gradient_features(gpt2, t, many, projection=projection, batch_size=4, out=ref, meta={"run": 1})
    got = sharded_features(gpt2, t, many, tmp_path / "got.f32", projection=projection, batch_size=4,
                           meta={"run": 1}, piece_rows=6)  # pieces of one chunk
    _same_file(got, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got.f32", "got.f32.json", "ref.f32", "ref.f32.json"]


def test_a_complete_file_is_reused_and_a_failure_leaves_nothing(tmp_path, gpt2, task, many, monkeypatch):
    out = tmp_path / "f.f32"
    sharded_features(gpt2, task, many, out, projection=16, batch_size=8)
    before = out.stat().st_mtime_ns
    calls = []
    real = shard.gradient_features
    monkeypatch.setattr(shard, "gradient_features",
                        lambda m, t, ex, *a, **k: calls.append(len(ex)) or real(m, t, ex, *a, **k))
    sharded_features(gpt2, task, many, out, projection=16, batch_size=8)
    assert calls == [1] and out.stat().st_mtime_ns == before  # only the one-example sidecar probe ran
    other = tmp_path / "g.f32"

    def fail_later(m, t, ex, *a, **k):
        if len(ex) > 1 and calls.count("piece"):
            raise RuntimeError("disk full (test)")
        calls.append("piece" if len(ex) > 1 else 1)
        return real(m, t, ex, *a, **k)

    monkeypatch.setattr(shard, "gradient_features", fail_later)
    with pytest.raises(RuntimeError, match="disk full"):
        sharded_features(gpt2, task, many, other, projection=16, batch_size=8, piece_rows=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.f32", "f.f32.json"]


def test_torchrun_two_ranks_equal_one_process(tmp_path, saved, many):
    """The command line under ``torchrun --nproc_per_node 2`` (gloo, one thread per rank) writes the
    file one process writes with one thread."""
    model, tokenizer = load_model(saved["model"])
    ref = tmp_path / "ref.f32"
    gradient_features(model, task_for(model, tokenizer).without_eos(), many, projection=24, seed=3, batch_size=4,
                      out=ref)
    out = tmp_path / "sharded.f32"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tda.gradients.shard",
           "--model", str(saved["model"]), "--examples", str(saved["examples"]), "--projection", "24", "--seed", "3",
           "--batch-size", "4", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TDA_PROGRESS": "0", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ranks"] == 2 and report["rows"] == len(many)
    _same_file(out, ref)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, root: str) -> None:
    """A rank of a 2-process gloo job in which rank 1's featurisation fails."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TDA_PROGRESS="0")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=120))  # a hang fails
    try:
        model, tokenizer = load_model(Path(root) / "model")
        examples = shard._read_examples_jsonl(Path(root) / "examples.jsonl")
        if rank == 1:
            shard.gradient_features = lambda *a, **k: (_ for _ in ()).throw(MemoryError("rank 1 ran out (test)"))
        try:
            sharded_features(model, task_for(model, tokenizer), examples, Path(root) / "out" / "f.f32",
                             projection=8, batch_size=4, ranks=Ranks.current())
            result = "no error"
        except BaseException as err:  # noqa: BLE001 - the test reads what each rank raised
            result = f"{type(err).__name__}: {err}"
        (Path(root) / f"rank{rank}.txt").write_text(result)
    finally:
        dist.destroy_process_group()


def test_a_failing_rank_fails_every_rank_and_leaves_no_file(saved):
    mp.spawn(_worker, args=(_free_port(), str(saved["root"])), nprocs=2, join=True)
    results = {r: (saved["root"] / f"rank{r}.txt").read_text() for r in (0, 1)}
    assert results[1] == "MemoryError: rank 1 ran out (test)"
    assert results[0].startswith("RuntimeError: rank 0: another rank of the 2 failed while computing the features")
    assert not (saved["root"] / "out").exists() or not any((saved["root"] / "out").iterdir())
