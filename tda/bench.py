"""Throughput of per-example gradient features against an ordinary training step and a loop.

``python -m tda.bench`` prints a table; ``--json`` one JSON object. All three are measured in one
run, interleaved repeat by repeat, on the same batch and weights, and reported as medians
(timings on a shared machine are noisy; the ratios are the point):

- ``train_step``: encode + forward + backward + AdamW step on the whole batch (a copy of the model);
- ``features``: ``tda.gradients.gradient_features`` with ``method="auto"``: for projected
  features the hooks path (one batched backward per chunk, see ``tda.gradients.hook_features``),
  otherwise vmap per-example gradients in chunks;
- ``vmap``: the same features through ``torch.func.vmap`` per-example gradients, then the projection;
- ``loop``: the same features through the loop of single-example backwards (``method="loop"``).

Default: the "small" tiny GPT-2, a tokenizer trained on the quick world, a batch of 256 fact
sentences (~15 tokens), all parameters, projection to 1,024 dims. Goals: features at least half
as fast as a training step, at least 4x the loop, peak RSS under 3 GB.

Two optional sections (slow, so not in the default run nor in ``make test``):

- ``--bm25``: BM25 at FTRACE's scale, the sparse index against rank_bm25 on a generated corpus of
  ``--bm25-docs`` abstracts (default 1.5M), in a process of its own (``tda.bench_bm25``);
- ``--peers``: our TracIn / TRAK / dot products beside dattri, traker and kronfluence on the same
  tiny GPT-2 and examples (``tda.bench_peers``; the peers are an optional extra).

``--no-features`` skips the default section. ``--json`` prints one object with every section's keys.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import resource
import statistics
import sys
import time
from contextlib import contextmanager

import torch

from . import bench_bm25, bench_peers

GOALS = {"ratio_vs_train_step": 0.5, "ratio_vs_loop": 4.0, "peak_rss_mb": 3072.0}


@contextmanager
def _quiet():
    """No progress bars: ours (TDA_PROGRESS) nor the peers' own tqdm bars (TQDM_DISABLE)."""
    names = ("TDA_PROGRESS", "TQDM_DISABLE")
    old = {name: os.environ.get(name) for name in names}
    os.environ.update({"TDA_PROGRESS": "0", "TQDM_DISABLE": "1"})
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@functools.lru_cache(maxsize=1)
def _world_and_tokenizer():
    """The quick world and its tokenizer (built once per process)."""
    from .base import world_config
    from .data.world import build_world
    from .models import train_tokenizer

    world = build_world(world_config("quick"))
    return world, train_tokenizer(world.pretraining_corpus() + world.vocabulary_text())


def fact_batch(world, n: int):
    """``n`` fact sentences as cloze training texts (``<sentence with [MASK]> answer : <entity>``,
    every paraphrase in turn, ~15 tokens), repeated if the world has fewer facts."""
    from .data.world import cloze_text
    from .task import Examples

    texts = [cloze_text(*world.cloze(f, i % 4, ("object", "subject")[(i // 4) % 2]))
             for i, f in enumerate(world.facts)]
    if not texts:
        raise ValueError("the world has no facts to benchmark on")
    return Examples.texts([texts[i % len(texts)] for i in range(n)])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def measure(size: str = "small", batch: int = 256, proj_dim: int = 1024, repeats: int = 3, group="all",
            chunk: int = 64, loop: bool = True, seed: int = 0, _setup=None) -> dict:
    """One benchmark: examples per second of a train step, the features and (optionally) the loop.

    ``proj_dim=0`` measures unprojected features. Returns a flat dict (see the module docstring).
    """
    from .gradients import Projector, gradient_features, hooks_supported, select_parameters
    from .models import make_model, parameter_count
    from .task import CausalLMTask

    if batch < 1 or repeats < 1 or chunk < 1:
        raise ValueError(f"batch, repeats and chunk must be >= 1 (got {batch}, {repeats}, {chunk})")
    world, tokenizer = _setup or _world_and_tokenizer()
    model = make_model(size, tokenizer, seed=seed)
    task = CausalLMTask(tokenizer)
    examples = fact_batch(world, batch)
    names = select_parameters(model, group)
    projector = Projector(proj_dim, seed=seed) if proj_dim else None

    trained = copy.deepcopy(model)
    trained.train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-5)

    def train_step():
        b = task.encode(examples)
        loss = task.per_example_loss(trained, b).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def features(method):
        return lambda: gradient_features(model, task, examples, names, projection=projector, batch_size=chunk,
                                         method=method)

    runs = {"train_step": train_step, "features": features("auto")}
    path = "hooks" if projector is not None and hooks_supported(model, names) else "vmap"
    if path != "vmap":
        runs["vmap"] = features("vmap")
    if loop:
        runs["loop"] = features("loop")
    times: dict[str, list[float]] = {k: [] for k in runs}
    with _quiet():
        for fn in runs.values():  # warm-up: vmap tracing, projection matrices, allocator
            fn()
        for _ in range(repeats):
            for key, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    rate = {k: batch / statistics.median(v) for k, v in times.items()}
    lengths = task.lengths(examples)
    params = dict(model.named_parameters())
    out = {
        "size": size, "batch": batch, "proj_dim": proj_dim, "group": group if isinstance(group, str) else list(group),
        "chunk": chunk, "repeats": repeats, "threads": torch.get_num_threads(),
        "parameters": parameter_count(model), "group_parameters": sum(params[n].numel() for n in names),
        "tokens_per_example": sum(lengths) / len(lengths) + 2,  # + BOS and EOS
        "train_step_examples_per_s": rate["train_step"],
        "features_path": path,
        "features_examples_per_s": rate["features"],
        "vmap_examples_per_s": rate.get("vmap", rate["features"]),
        "loop_examples_per_s": rate.get("loop"),  # None when the loop was skipped
        "ratio_vs_train_step": rate["features"] / rate["train_step"],
        "ratio_vs_loop": rate["features"] / rate["loop"] if "loop" in rate else None,
        "peak_rss_mb": _peak_rss_mb(),
    }
    out["goals_met"] = {
        "ratio_vs_train_step": out["ratio_vs_train_step"] >= GOALS["ratio_vs_train_step"],
        "ratio_vs_loop": None if out["ratio_vs_loop"] is None else out["ratio_vs_loop"] >= GOALS["ratio_vs_loop"],
        "peak_rss_mb": out["peak_rss_mb"] < GOALS["peak_rss_mb"],
    }
    return out


def throughput_by_size(sizes=("tiny", "small", "medium"), batch: int = 256, proj_dim: int = 1024,
                       repeats: int = 3, loop: bool = False, group="all", chunk: int = 64) -> list[dict]:
    """One ``measure`` row per model size (for the figure of throughput against model size).

    The world and tokenizer are built once; the loop is skipped by default (it is slow and the
    figure compares features with the training step).
    """
    from .models import size_of

    for s in sizes:
        size_of(s)
    setup = _world_and_tokenizer()
    return [measure(s, batch=batch, proj_dim=proj_dim, repeats=repeats, group=group, chunk=chunk, loop=loop,
                    _setup=setup) for s in sizes]


def _num(value, fmt: str, suffix: str) -> str:
    return "  skipped" if value is None else f"{value:9{fmt}}{suffix}"


def _table(result: dict) -> str:
    rows = [
        ("model", f"{result['size']} ({result['parameters']:,} parameters, group {result['group']!s})"),
        ("batch", f"{result['batch']} examples of ~{result['tokens_per_example']:.1f} tokens, chunks of "
                  f"{result['chunk']}, {result['threads']} threads"),
        ("projection", f"{result['proj_dim']} dims" if result["proj_dim"] else "none"),
        ("train step", f"{result['train_step_examples_per_s']:9.1f} examples/s"),
        ("features", f"{result['features_examples_per_s']:9.1f} examples/s ({result['features_path']} path)"),
        ("features, vmap path", f"{result['vmap_examples_per_s']:9.1f} examples/s"),
        ("loop of backwards", _num(result["loop_examples_per_s"], ".1f", " examples/s")),
        ("features / train step", f"{result['ratio_vs_train_step']:9.2f}   (goal >= {GOALS['ratio_vs_train_step']})"),
        ("features / loop", _num(result["ratio_vs_loop"], ".2f", f"   (goal >= {GOALS['ratio_vs_loop']})")),
        ("peak RSS", f"{result['peak_rss_mb']:9.0f} MB (goal < {GOALS['peak_rss_mb']:.0f})"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows) + f"\n(medians of {result['repeats']} repeats)"


def main(argv=None) -> int:
    """Command line: ``python -m tda.bench [--size S] [--batch N] [--proj-dim K] [--repeats R] [--json]``
    (also ``--chunk``, ``--group``, ``--no-loop``, ``--threads``; the optional sections ``--bm25`` and
    ``--peers`` with their sizes, and ``--no-features``)."""
    parser = argparse.ArgumentParser(prog="python -m tda.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="tiny, small or medium (default small)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--proj-dim", type=int, default=1024, help="0 = no projection")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=64, help="examples per vmap call")
    parser.add_argument("--group", default="all", help="parameter group (all, embedding, block.i, head, regex)")
    parser.add_argument("--no-loop", action="store_true", help="skip the (slow) loop measurement")
    parser.add_argument("--no-features", action="store_true", help="skip the default features section")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    bm25 = parser.add_argument_group("BM25 section (tda.bench_bm25)")
    bm25.add_argument("--bm25", action="store_true", help="run the BM25 section")
    bm25.add_argument("--bm25-docs", type=int, default=1_500_000, help="generated abstracts (default 1.5M)")
    bm25.add_argument("--bm25-queries", type=int, default=500, help="queries ranked over the whole corpus")
    bm25.add_argument("--bm25-k", type=int, default=250, help="top k per query (FTRACE: 250)")
    bm25.add_argument("--bm25-ref-docs", type=int, default=20_000, help="rank_bm25's subsample of documents")
    bm25.add_argument("--bm25-ref-queries", type=int, default=10, help="rank_bm25's queries")
    peers = parser.add_argument_group("peers section (tda.bench_peers)")
    peers.add_argument("--peers", action="store_true", help="run the peers section")
    peers.add_argument("--peers-size", default="tiny", help="model size (default tiny)")
    peers.add_argument("--peers-train", type=int, default=256, help="training examples")
    peers.add_argument("--peers-queries", type=int, default=32, help="queries")
    peers.add_argument("--peers-proj-dim", type=int, default=256, help="TRAK's projection")
    peers.add_argument("--peers-only", default=",".join(bench_peers.PEERS), help="comma-separated peers to run")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.no_features and not (args.bm25 or args.peers):
        parser.error("--no-features leaves nothing to measure: add --bm25 or --peers")
    result: dict = {}
    tables = []
    if not args.no_features:
        result.update(measure(args.size, batch=args.batch, proj_dim=args.proj_dim, repeats=args.repeats,
                              group=args.group, chunk=args.chunk, loop=not args.no_loop))
        tables.append(_table(result))
    if args.bm25:
        section = bench_bm25.measure_bm25_apart(
            n_docs=args.bm25_docs, n_queries=args.bm25_queries, k=args.bm25_k, ref_docs=args.bm25_ref_docs,
            ref_queries=args.bm25_ref_queries)
        result.update(section)
        tables.append(bench_bm25.table(section))
    if args.peers:
        world, tokenizer = _world_and_tokenizer()
        examples = fact_batch(world, args.peers_train + args.peers_queries)
        train = examples.subset(range(args.peers_train))
        queries = examples.subset(range(args.peers_train, len(examples)))
        with _quiet():
            section = bench_peers.measure_peers(tokenizer, train, queries, size=args.peers_size,
                                                proj_dim=args.peers_proj_dim, peers=args.peers_only.split(","))
        result.update(section)
        tables.append(bench_peers.table(section))
    print(json.dumps(result) if args.json else "\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
