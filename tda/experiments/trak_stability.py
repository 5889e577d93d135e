"""How much of single-model TRAK is its random projection: agreement of TRAK's scores across
projection seeds, per projection, size and ridge, on Part II's runs (issue 18).

TRAK's score ``phi(q) (Phi^T Phi + lambda I)^{-1} phi(c)^T`` depends on the projection twice: the
features, and the kernel's inverse, which amplifies the projection's noise along the kernel's small
eigenvalues (most at ``k`` near the number of training examples ``n``). ``seed_stability``
measures, on one model, for each (projection, ``k``, ``lam``), with the training examples as the
candidates (as Part II's ``trak_scores`` does):

- ``agreement`` / ``agreement_min``: Spearman correlation of a query's scores over the training
  examples between two projection seeds, averaged over queries and all pairs of seeds (lowest pair)
  (``tda.methods.trak.seed_agreement``; 1 = the projection does not matter);
- ``ensemble_agreement``: the same between the averages of two disjoint halves of the seeds (what
  an ensemble of ``ensemble_size`` seeds reaches);
- ``vs_limit`` / ``ensemble_vs_limit``: agreement of one seed's scores (of the average over all
  seeds) with TRAK's limit as ``k`` grows at the same absolute ridge (``trak_from_dots``: exact
  dots, no projection);
- ``vs_dots``: agreement with the exact gradient dot products (TracIn at that checkpoint; a large
  ridge makes TRAK tend to them: ``lambda * score`` tends to the projected dot product);
- ``seconds``: features of the queries and the training examples, per seed (median).

Projection "none" is ``tda.methods.trak(projection=None)``: the limit, from one exact pass,
deterministic (agreement 1 by construction), at its own relative ridge ``lam * trace(K) / n``.

Nothing here reads which documents are poisoned: the measures are agreements between score
matrices, so a configuration can be chosen from them without looking at any method's AUC.

``part2_stability`` builds (or reads from the store) Part II's runs through
``tda.experiments.dda.pipeline`` (the final checkpoint, the hallucinated outputs as queries, the
training documents as candidates and kernel) and measures them; ``python -m
tda.experiments.trak_stability`` prints the table (numbers: see the report of issue 18's work).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Sequence

import numpy as np
import torch

from .. import gradients as G
from ..base import world_setup
from ..checkpoints import list_checkpoints, load_checkpoint
from ..data.xsum import to_examples
from ..methods.trak import rank_agreement, seed_agreement, trak_from_dots, trak_from_features
from ..task import CausalLMTask, Examples
from .dda.pipeline import DDASettings, run

# Projection names of the table -> ``tda.gradients.as_projector`` kinds.
PROJECTIONS = {"sketch": "sketch", "kronecker": "rademacher"}


def features(model, task: CausalLMTask, examples: Examples, projection: str, dim: int, seed: int,
             batch_size: int = 64) -> np.ndarray:
    """Projected gradient features over all parameters: "sketch" (the default projection) or
    "kronecker" (``tda.gradients.Projector``, the default until issue 18)."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    return G.gradient_features(model, task, examples, "all", projection=dim, seed=seed, kind=PROJECTIONS[projection],
                               batch_size=batch_size)


def _concat(a: Examples, b: Examples) -> Examples:
    spans = None if a.cut_spans is None and b.cut_spans is None else (
        [a.span(i) for i in range(len(a))] + [b.span(i) for i in range(len(b))])
    return Examples(list(a.prompts) + list(b.prompts), list(a.targets) + list(b.targets), spans)


def _limit_rows(exact_dots, exact_gram, lams) -> list[dict]:
    rows = []
    for lam in lams:
        scores = trak_from_dots(exact_dots, exact_gram, lam)
        rows.append({"projection": "none", "dim": None, "lam": lam, "seeds": 1, "agreement": 1.0,
                     "agreement_min": 1.0, "ensemble_agreement": None, "ensemble_size": None,
                     "vs_dots": rank_agreement(scores, exact_dots)})
    return rows


def seed_stability(model, task: CausalLMTask, queries: Examples, train: Examples, *,
                   dims: Sequence[int] = (128, 1024), lams: Sequence[float] = (1e-3, 1e-1),
                   seeds: Sequence[int] = range(6), projections: Sequence[str] = ("kronecker", "sketch"),
                   exact_dots: np.ndarray | None = None, exact_gram: np.ndarray | None = None) -> list[dict]:
    """One row per (projection, dim, lam), see the module docstring; features are computed once per
    (projection, dim, seed) and reused for every ridge. With ``exact_dots`` (queries x train) and
    ``exact_gram`` (train x train) the rows gain ``vs_limit`` and ``vs_dots``, and projection
    "none" (TRAK without projection) gets rows of its own."""
    seeds = list(seeds)
    if len(seeds) < 2:
        raise ValueError(f"stability across seeds needs at least 2 seeds, got {seeds}")
    rows = []
    for projection in projections:
        for dim in dims:
            feats, seconds = [], []
            for s in seeds:
                start = time.perf_counter()
                feats.append((features(model, task, queries, projection, dim, s),
                              features(model, task, train, projection, dim, s)))
                seconds.append(time.perf_counter() - start)
            for lam in lams:
                per_seed = np.stack([trak_from_features(fq, fc, lam) for fq, fc in feats])
                row = {"projection": projection, "dim": dim, "lam": lam, **seed_agreement(per_seed),
                       "seconds": statistics.median(seconds)}
                if exact_dots is not None:
                    row["vs_dots"] = float(np.mean([rank_agreement(sc, exact_dots) for sc in per_seed]))
                if exact_dots is not None and exact_gram is not None:  # the same absolute ridge
                    ridge = lam * float(np.trace(exact_gram)) / dim
                    limit = trak_from_dots(exact_dots, exact_gram, ridge, relative=False)
                    row["vs_limit"] = float(np.mean([rank_agreement(sc, limit) for sc in per_seed]))
                    row["ensemble_vs_limit"] = rank_agreement(per_seed.mean(0), limit)
                rows.append(row)
    if exact_dots is not None and exact_gram is not None:
        rows += _limit_rows(exact_dots, exact_gram, lams)
    return rows


def part2_stability(world: str = "quick", runs: Sequence[tuple[str, int]] = (("tiny", 0),), **kwargs) -> list[dict]:
    """``seed_stability`` on Part II runs of ``world`` (built or read from the store by
    ``tda.experiments.dda.pipeline.run``); runs without hallucinations are skipped. Rows gain
    ``size``, ``run_seed``, ``queries`` and ``exact_seconds`` (the one exact pass that TRAK without
    projection costs: dots of queries and training examples with the training examples)."""
    setup = world_setup(world)
    s = DDASettings.for_world(world)
    out = []
    for size, seed in runs:
        r = run(setup, s, size, seed, verbose=False, methods=())
        if not r.traced:
            continue
        model, _ = load_checkpoint(list_checkpoints(r.run_dir)[-1])
        queries, train = r.queries.hallucinated_examples(), to_examples(r.data.train)
        held = _concat(queries, train)
        start = time.perf_counter()
        dots = G.gradient_dots(model, setup.task(), held, train, "all", batch_size=s.grad_batch_size).dots
        exact_seconds = time.perf_counter() - start
        nq = len(queries)
        rows = seed_stability(model, setup.task(), queries, train, exact_dots=dots[:nq], exact_gram=dots[nq:],
                              **kwargs)
        out += [{"size": size, "run_seed": seed, "queries": nq, "exact_seconds": exact_seconds, **row}
                for row in rows]
    return out


_POOLED = ("agreement", "agreement_min", "ensemble_agreement", "vs_limit", "ensemble_vs_limit", "vs_dots",
           "seconds", "exact_seconds")


def pooled(rows: Sequence[dict]) -> list[dict]:
    """Rows of several runs pooled per (size, projection, dim, lam): means weighted by queries (runs
    with more hallucinated queries count more), except ``seconds`` / ``exact_seconds`` (plain means)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["projection"], r["dim"] or 0, r["lam"]), []).append(r)
    out = []
    for (size, projection, dim, lam), rs in sorted(groups.items()):
        weights = np.array([r["queries"] for r in rs], dtype=float)
        row = {"size": size, "projection": projection, "dim": dim or None, "lam": lam, "runs": len(rs),
               "queries": int(weights.sum()), "seeds": rs[0].get("seeds"), "ensemble_size": rs[0].get("ensemble_size")}
        for key in _POOLED:
            if all(r.get(key) is not None for r in rs):
                values = [r[key] for r in rs]
                row[key] = float(np.mean(values) if key.endswith("seconds") else np.average(values, weights=weights))
        out.append(row)
    return out


def table(rows: Sequence[dict]) -> str:
    """Pooled rows as text."""
    def cell(r, key, fmt="6.3f"):
        v = r.get(key)
        return format(v, fmt) if v is not None else " " * int(fmt.split(".")[0])

    lines = [f"{'size':<6} {'runs':>4} {'q':>3} {'projection':<10} {'dim':>5} {'lam':>6} {'agree':>6} {'min':>6} "
             f"{'ens':>6} {'vs lim':>6} {'ens lim':>7} {'vs dots':>7} {'feat s':>6}"]
    for r in rows:
        lines.append(f"{r['size']:<6} {r['runs']:4d} {r['queries']:3d} {r['projection']:<10} "
                     f"{(r['dim'] or 0):5d} {r['lam']:6g} {cell(r, 'agreement')} {cell(r, 'agreement_min')} "
                     f"{cell(r, 'ensemble_agreement')} {cell(r, 'vs_limit')} {cell(r, 'ensemble_vs_limit', '7.3f')} "
                     f"{cell(r, 'vs_dots', '7.3f')} {cell(r, 'seconds', '6.1f')}")
    exact = [r for r in rows if r["projection"] == "none" and r.get("exact_seconds") is not None]
    for size in dict.fromkeys(r["size"] for r in exact):
        secs = [r["exact_seconds"] for r in exact if r["size"] == size]
        lines.append(f"{size}: the exact pass of TRAK without projection took {np.mean(secs):.1f} s per run")
    lines.append("agree: Spearman of a query's scores between two projection seeds (mean over queries and pairs; min: "
                 "the lowest pair); ens: the same between averages of two disjoint halves of the seeds; vs lim: one "
                 "seed with TRAK's limit as k grows (no projection, same ridge); ens lim: the average of all seeds "
                 "with it; vs dots: with exact gradient dot products; feat s: features of queries and training "
                 "examples per seed. projection none: TRAK without projection (ridge relative to trace(K)/n)")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m tda.experiments.trak_stability [--world quick] [--runs tiny:0,tiny:2] [--dims 128,1024]
    [--lams 1e-3,0.1] [--seeds 6] [--projections kronecker,sketch] [--threads 1] [--json]``: the
    table pools the runs of each size (``pooled``); ``--json`` gives every run's rows."""
    parser = argparse.ArgumentParser(prog="python -m tda.experiments.trak_stability",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="quick", help="a world of notebooks/params.yml")
    parser.add_argument("--runs", default="tiny:0", help="size:seed,... of Part II runs")
    parser.add_argument("--dims", default="128,1024")
    parser.add_argument("--lams", default="1e-3,0.1")
    parser.add_argument("--seeds", type=int, default=6, help="projection seeds 0..N-1")
    parser.add_argument("--projections", default="kronecker,sketch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    projections = [p for p in args.projections.split(",") if p]
    unknown = [p for p in projections if p not in PROJECTIONS]
    if unknown:
        parser.error(f"unknown projection {unknown[0]!r}; known: {', '.join(PROJECTIONS)}")
    try:
        runs = [(r.split(":")[0], int(r.split(":")[1])) for r in args.runs.split(",") if r]
    except (IndexError, ValueError):
        parser.error(f"--runs takes size:seed,... (e.g. tiny:0,small:1), got {args.runs!r}")
    torch.set_num_threads(args.threads)
    rows = part2_stability(args.world, runs, dims=[int(d) for d in args.dims.split(",")],
                           lams=[float(x) for x in args.lams.split(",")], seeds=range(args.seeds),
                           projections=projections)
    print(json.dumps(rows) if args.json else table(pooled(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
