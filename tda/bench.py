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
sentences (~15 tokens), all parameters, the default projection (``projection=1024``: the count
sketch, ``tda.gradients.SketchProjector``; ``--kind rademacher`` for the Kronecker ``Projector``).
Goals: features at least 0.8x as fast as a training step (issue 18; 0.5 before), at least 4x the
loop, peak RSS under 3 GB.

Fidelity (part of the default run; ``--no-fidelity`` skips it, ``--fidelity`` runs it even with
``--no-features``): how well each projection ranks like exact dot products on a trained model
(``tda.bench_projection.projection_fidelity``: the ``--size`` model trained 60 AdamW steps, 64
queries x 512 candidates, ``--proj-dim`` dims, 4 projection seeds), as ``projection_fidelity``
(the default projection), ``projection_fidelity_dense`` (a dense Gaussian projection) and
``projection_fidelity_kronecker`` (the default until issue 18). Goals: the default's at least
0.84 (issue 18's number, the dense projection's on the quick world of the time) and within 0.02 of
the dense projection's. About 75 s on the small model (``projection_fidelity_s``), mostly the
exact Gram matrix of the 576 examples. Measured 2026-11-30 on an idle machine, one thread, two runs:
default 0.883, dense 0.885, Kronecker 0.804; features at 0.84x and 0.87x a training step. The
absolute fidelity follows the benchmark's model (trained on the quick world's sentences): on the
world of the day before (400 pre-training news articles instead of 1,200) it was 0.789 against a
dense 0.776; the gap to the dense projection is what stays.

Two optional sections (slow, so not in the default run nor in ``make test``):

- ``--bm25``: BM25 at FTRACE's scale, the sparse index against rank_bm25 on a generated corpus of
  ``--bm25-docs`` abstracts (default 1.5M), in a process of its own (``tda.bench_bm25``);
- ``--peers``: our TracIn / TRAK / dot products beside dattri, traker and kronfluence on the same
  tiny GPT-2 and examples (``tda.bench_peers``; the peers are an optional extra; kronfluence's
  ratio is ``peers.kronfluence.ratio_vs_ours``: plain dot products over the blocks' linear
  layers, the parameters it supports).

``--no-features`` skips the default section. ``--json`` prints one object with every section's keys.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch

from . import bench_bm25, bench_peers, bench_projection
from .bench_common import fact_batch, peak_rss_mb, quiet, world_and_tokenizer
from .gradients import DEFAULT_KIND, as_projector, gradient_features, hooks_supported, select_parameters
from .gradients.projection import KINDS
from .models import make_model, parameter_count, size_of
from .task import CausalLMTask

# ratio_vs_train_step: 0.5 until issue 18, which asks the default projection for 0.8 at a dense
# projection's fidelity (0.84 on the trained small model, the dense projection's value when the
# issue was filed; "_vs_dense": the least fidelity relative to the dense projection's, same run).
GOALS = {"ratio_vs_train_step": 0.8, "ratio_vs_loop": 4.0, "peak_rss_mb": 3072.0, "projection_fidelity": 0.84,
         "projection_fidelity_vs_dense": -0.02}


def measure(size: str = "small", batch: int = 256, proj_dim: int = 1024, repeats: int = 3, group="all",
            chunk: int = 64, loop: bool = True, seed: int = 0, kind: str = DEFAULT_KIND, _setup=None) -> dict:
    """One benchmark: examples per second of a train step, the features and (optionally) the loop.

    ``proj_dim=0`` measures unprojected features; otherwise the features are projected by
    ``as_projector(proj_dim, seed, kind)`` (the default projection unless ``kind`` says otherwise;
    ``"projection"`` in the result is its ``describe()``). Returns a flat dict (see the module
    docstring).
    """
    if batch < 1 or repeats < 1 or chunk < 1:
        raise ValueError(f"batch, repeats and chunk must be >= 1 (got {batch}, {repeats}, {chunk})")
    world, tokenizer = _setup or world_and_tokenizer()
    model = make_model(size, tokenizer, seed=seed)
    task = CausalLMTask(tokenizer)
    examples = fact_batch(world, batch)
    names = select_parameters(model, group)
    projector = as_projector(proj_dim, seed=seed, kind=kind) if proj_dim else None

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
    with quiet():
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
        "size": size, "batch": batch, "proj_dim": proj_dim, "projection": projector.describe() if projector else None,
        "group": group if isinstance(group, str) else list(group),
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
        "peak_rss_mb": peak_rss_mb(),
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
    for s in sizes:
        size_of(s)
    setup = world_and_tokenizer()
    return [measure(s, batch=batch, proj_dim=proj_dim, repeats=repeats, group=group, chunk=chunk, loop=loop,
                    _setup=setup) for s in sizes]


def _num(value, fmt: str, suffix: str) -> str:
    return "  skipped" if value is None else f"{value:9{fmt}}{suffix}"


def _table(result: dict) -> str:
    rows = [
        ("model", f"{result['size']} ({result['parameters']:,} parameters, group {result['group']!s})"),
        ("batch", f"{result['batch']} examples of ~{result['tokens_per_example']:.1f} tokens, chunks of "
                  f"{result['chunk']}, {result['threads']} threads"),
        ("projection", f"{result['proj_dim']} dims ({result['projection']['kind']})" if result["proj_dim"]
                       else "none"),
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


def _fidelity_table(section: dict) -> str:
    st = section["projection_fidelity_setting"]
    seeds = section["projection_fidelity_seeds"]
    rows = [("fidelity", f"{st['size']} model trained {st['steps']} AdamW steps, {st['queries']} queries x "
                         f"{st['candidates']} candidates, {st['dim']} dims, {len(seeds['default'])} seeds; "
                         "mean Spearman per query vs exact dot products"),
            ("  default projection", f"{section['projection_fidelity']:9.3f}   ({st['default']['kind']}; goals >= "
                                     f"{GOALS['projection_fidelity']} and >= dense {GOALS['projection_fidelity_vs_dense']:+})"),
            ("  dense Gaussian", f"{section['projection_fidelity_dense']:9.3f}   (exact in law)"),
            ("  Kronecker", f"{section['projection_fidelity_kronecker']:9.3f}   (Projector, the default until issue 18)"),
            ("  section time", f"{section['projection_fidelity_s']:9.0f} s")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv=None) -> int:
    """Command line: ``python -m tda.bench [--size S] [--batch N] [--proj-dim K] [--repeats R] [--json]``
    (also ``--kind``, ``--chunk``, ``--group``, ``--no-loop``, ``--threads``; the fidelity section's
    ``--fidelity-*`` sizes and ``--no-fidelity`` / ``--fidelity``; the optional sections ``--bm25``
    and ``--peers`` with their sizes, and ``--no-features``)."""
    parser = argparse.ArgumentParser(prog="python -m tda.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="tiny, small or medium (default small)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--proj-dim", type=int, default=1024, help="0 = no projection")
    parser.add_argument("--kind", default=DEFAULT_KIND, choices=KINDS,
                        help=f"projection of the features section (default {DEFAULT_KIND})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=64, help="examples per vmap call")
    parser.add_argument("--group", default="all", help="parameter group (all, embedding, block.i, head, regex)")
    parser.add_argument("--no-loop", action="store_true", help="skip the (slow) loop measurement")
    parser.add_argument("--no-features", action="store_true", help="skip the default features section")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    fid = parser.add_argument_group("projection fidelity section (tda.bench_projection)")
    fid.add_argument("--fidelity", action="store_true", help="run the fidelity section even with --no-features")
    fid.add_argument("--no-fidelity", action="store_true", help="skip the fidelity section (~75 s on the small model)")
    fid.add_argument("--fidelity-seeds", type=int, default=4, help="projection seeds 0..N-1")
    fid.add_argument("--fidelity-steps", type=int, default=60, help="AdamW steps of the model")
    fid.add_argument("--fidelity-queries", type=int, default=64)
    fid.add_argument("--fidelity-candidates", type=int, default=512)
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
    if args.fidelity and args.no_fidelity:
        parser.error("--fidelity and --no-fidelity contradict each other")
    if args.no_features and not (args.bm25 or args.peers or args.fidelity):
        parser.error("--no-features leaves nothing to measure: add --fidelity, --bm25 or --peers")
    fidelity = args.fidelity or (not args.no_features and not args.no_fidelity and args.proj_dim > 0)
    if fidelity and (args.proj_dim < 1 or min(args.fidelity_seeds, args.fidelity_queries,
                                              args.fidelity_candidates) < 1 or args.fidelity_steps < 0):
        parser.error("the fidelity section needs --proj-dim >= 1, --fidelity-seeds/-queries/-candidates >= 1 and "
                     "--fidelity-steps >= 0")
    result: dict = {}
    tables = []
    if not args.no_features:
        result.update(measure(args.size, batch=args.batch, proj_dim=args.proj_dim, repeats=args.repeats,
                              group=args.group, chunk=args.chunk, loop=not args.no_loop, kind=args.kind))
        tables.append(_table(result))
    if fidelity:
        with quiet():
            section = bench_projection.projection_fidelity(
                args.size, dim=args.proj_dim, seeds=range(args.fidelity_seeds), steps=args.fidelity_steps,
                n_queries=args.fidelity_queries, n_candidates=args.fidelity_candidates)
        gap = section["projection_fidelity"] - section["projection_fidelity_dense"]
        goals = {**result.get("goals_met", {}),
                 "projection_fidelity": section["projection_fidelity"] >= GOALS["projection_fidelity"],
                 "projection_fidelity_vs_dense": gap >= GOALS["projection_fidelity_vs_dense"]}
        result.update(section, goals_met=goals)
        tables.append(_fidelity_table(section))
    if args.bm25:
        section = bench_bm25.measure_bm25_apart(
            n_docs=args.bm25_docs, n_queries=args.bm25_queries, k=args.bm25_k, ref_docs=args.bm25_ref_docs,
            ref_queries=args.bm25_ref_queries)
        result.update(section)
        tables.append(bench_bm25.table(section))
    if args.peers:
        world, tokenizer = world_and_tokenizer()
        examples = fact_batch(world, args.peers_train + args.peers_queries)
        train = examples.subset(range(args.peers_train))
        queries = examples.subset(range(args.peers_train, len(examples)))
        with quiet():
            section = bench_peers.measure_peers(tokenizer, train, queries, size=args.peers_size,
                                                proj_dim=args.peers_proj_dim, peers=args.peers_only.split(","))
        result.update(section)
        tables.append(bench_peers.table(section))
    print(json.dumps(result) if args.json else "\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
