"""Soak test: training through the store, killed (SIGKILL) at random moments, ends as if never killed.

The test runs this file as a script in a fresh process (a fork server): it imports torch, builds
the tiny world and its tokenizer without running a torch op (so forking is safe: no thread pool
exists yet), then forks one child per attempt. A child pre-trains the tiny model through the store
(``get_or_create(..., resumable=True)``, as ``tda.base`` does) and then computes a results JSON
through ``Store.get_json``. The server first runs one child to completion in a reference store,
timing it; then, in a second store, kills children with SIGKILL after seeded random delays within
that time (so kills land in training, in checkpoint writes, in the store's completion and in the
results step) until one finishes by itself, or a cap of kills is reached and a last child runs
undisturbed. It prints one JSON line: the reference and interrupted results, whether the final
checkpoints' weights and optimizer state are identical, what verify found, and the kill times.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file

from tda import store as st
from tda.data.world import build_world
from tda.models import make_model, train_tokenizer
from tda.task import CausalLMTask, Examples
from tda.train import TrainConfig, list_checkpoints, load_checkpoint, read_state, train

if __name__ == "__main__":  # run as the fork server: the repository root holds tests.conftest
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import TINY_WORLD  # noqa: E402

EPOCHS = 6
KILLS = 5  # during training, plus one while the run finishes


def _child(root: Path, world, tokenizer) -> None:
    """One attempt: pre-train (resumable, through the store), then a results JSON (get_json)."""
    torch.set_num_threads(1)
    store = st.Store(root)
    config = TrainConfig(epochs=EPOCHS, lr=5e-3, batch_size=8, warmup_steps=5, schedule="linear")
    task = CausalLMTask(tokenizer, max_length=256)
    texts = world.pretraining_corpus()
    params = {"soak": 1, "epochs": EPOCHS}

    def build(work: Path) -> None:
        model = make_model("tiny", tokenizer, seed=0)
        train(model, tokenizer, task, Examples.texts(texts), work, config, desc="soak")

    folder = store.get_or_create("soak-train", params, build, resumable=True)
    last = list_checkpoints(folder)[-1]

    def results() -> dict:
        model, _ = load_checkpoint(last)
        with torch.no_grad():
            losses = task.per_example_loss(model, task.encode(Examples.texts(texts[:16])))
        return {"checkpoint": last.name, "epoch_losses": read_state(last)["epoch_losses"],
                "eval_losses": [float(x) for x in losses]}

    out = store.get_json("soak-results", params, results)
    (root / "done.json").write_text(json.dumps(out))


def _checkpoints(root: Path) -> int:
    """Complete checkpoints of the training so far (in its partial or complete entry)."""
    return len(list(root.glob("soak-train/*/epoch-*")))


def _attempt(root: Path, world, tokenizer, kill: tuple[int, float] | None) -> bool:
    """Fork a child; with ``kill = (n, delay)`` kill it ``delay`` seconds after the training holds
    ``n`` complete checkpoints (at once if it holds them already). True if it finished by itself."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _child(root, world, tokenizer)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    armed = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if kill is not None:
            if armed is None and _checkpoints(root) >= kill[0]:
                armed = time.monotonic()
            if armed is not None and time.monotonic() - armed >= kill[1]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return False
        time.sleep(0.005)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"a soak child failed (status {status}) in {root}")
    return True


def _state(root: Path) -> str:
    """What a killed attempt left: checkpoints in the partial or complete training entry, results."""
    train = sorted(root.glob("soak-train/*"))
    partial = [p for p in train if p.name.endswith(".partial")]
    folder = partial[0] if partial else next((p for p in train if p.is_dir()), None)
    epochs = len(list(folder.glob("epoch-*"))) if folder else 0
    tmp = " + a checkpoint being written" if folder and list(folder.glob(".epoch-*.tmp")) else ""
    where = "partial" if partial else ("complete" if folder else "none")
    results = "results" if list(root.glob("soak-results/*[0-9a-f]")) else "no results"
    return f"training {where} (checkpoints: {epochs}{tmp}); {results}"


def _serve(workdir: Path, seed: int) -> dict:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # no tokenizer threads in the process that forks
    os.environ["TDA_PROGRESS"] = "0"
    torch.set_num_threads(1)  # before any torch op: no thread pool exists when the children fork
    world = build_world(TINY_WORLD)
    tokenizer = train_tokenizer(world.pretraining_corpus() + world.vocabulary_text())

    reference, interrupted = workdir / "reference", workdir / "interrupted"
    start = time.monotonic()
    _attempt(reference, world, tokenizer, None)
    seconds = time.monotonic() - start
    # Kills at random moments within an epoch, after a random number of complete checkpoints
    # (increasing, so that every attempt makes progress), then one while the run finishes.
    rng = random.Random(seed)
    epoch = seconds / (EPOCHS + 1)
    plan = sorted((rng.randint(0, EPOCHS), rng.uniform(0.0, epoch)) for _ in range(KILLS))
    plan.append((EPOCHS + 1, rng.uniform(0.0, 0.2)))  # all checkpoints written: hashing, rename, results
    kills: list[list] = []
    states: list[str] = []  # where each kill left the store
    for kill in plan + [None]:
        if _attempt(interrupted, world, tokenizer, kill):
            break
        kills.append([kill[0], round(kill[1], 3)])
        states.append(_state(interrupted))

    def final(root: Path) -> Path:
        return next(root.glob("soak-train/*[0-9a-f]")) / f"epoch-{EPOCHS:03d}"

    a, b = load_file(final(reference) / "model.safetensors"), load_file(final(interrupted) / "model.safetensors")
    oa = torch.load(final(reference) / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    ob = torch.load(final(interrupted) / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    reports = [st.verify_entry(f) for f in st.Store(interrupted).entries()]
    return {
        "reference_seconds": round(seconds, 2), "kills": kills, "states": states,
        "reference": json.loads((reference / "done.json").read_text()),
        "interrupted": json.loads((interrupted / "done.json").read_text()),
        "same_weights": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
        "same_optimizer": oa.keys() == ob.keys() and all(
            torch.equal(oa[i][name], ob[i][name]) for i in oa for name in oa[i]),
        "verify": sorted((r.folder.parent.name, r.status) for r in reports),
        "partials": sorted(p.name for p in interrupted.glob("*/*.partial")),
    }


def test_training_killed_at_random_moments_ends_like_an_uninterrupted_run(tmp_path):
    started = time.monotonic()
    run = subprocess.run([sys.executable, __file__, str(tmp_path), "7"], capture_output=True, text=True,
                         timeout=170, cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(out["kills"]) >= 4, out  # it was really interrupted, several times
    assert len(set(out["states"])) >= 3, out  # ... at different stages of the work
    assert out["interrupted"] == out["reference"], out
    assert out["same_weights"] and out["same_optimizer"], out
    assert out["verify"] == [["soak-results", "ok"], ["soak-train", "ok"]] and out["partials"] == [], out
    print(f"soak: {len(out['kills'])} kills at (checkpoints, seconds) {out['kills']}, leaving {out['states']}; "
          f"reference run {out['reference_seconds']} s; total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    print(json.dumps(_serve(Path(sys.argv[1]), int(sys.argv[2]))))
