"""How much of single-model TRAK is its random projection: agreement of TRAK scores across
projection seeds, per projection size and ridge (issue 18, for Part II's TRAK).

TRAK's score ``phi(q) (Phi^T Phi + lambda I)^{-1} phi(c)^T`` depends on the projection twice: the
features, and the kernel's inverse, which amplifies the projection's noise along the kernel's
small eigenvalues. With ``k`` above the number of training examples and a small ridge the kernel
is rank-deficient and the scores become ``phi(q) Phi^T (Phi Phi^T + lambda)^{-1}``: projected dots
times the inverse of a near-singular projected Gram matrix. ``seed_stability`` measures, on one
model, for each (projection, ``k``, ``lam``):

- ``agreement``: Spearman correlation of one query's scores over the training examples between two
  projection seeds, averaged over queries and seed pairs (1 = the projection does not matter);
- ``ensemble_agreement``: the same between the averages of two disjoint halves of the seeds
  (what an ensemble of that many seeds would reach);
- ``auc`` / ``auc_sd``: when poisoned labels are given, the mean and sd over seeds of the mean AUC
  over queries, and ``auc_ensemble`` of the average over all seeds;
- ``vs_dots``: when exact gradient dot products at the same model are given, the Spearman
  agreement of each seed's scores with them, averaged (near 1: TRAK has become TracIn at that
  checkpoint, which a large ridge does: ``lambda * score`` tends to the projected dot product);
- ``vs_limit`` / ``auc_limit``: when the exact Gram matrix of the training examples is given too,
  agreement with (and AUC of) TRAK's limit as ``k`` grows at the same ridge, ``trak_exact``.

The limit. With candidates = training examples, ``(Phi^T Phi + lambda I)^{-1} Phi^T = Phi^T (Phi
Phi^T + lambda I)^{-1}`` (push-through), so the scores are ``phi(q) Phi^T (Phi Phi^T + lambda I)^{-1}``:
projected dot products only. Those converge to the exact ones as ``k`` grows (``E[P^T P] = I``), so
TRAK tends to ``d_q (K + lambda I)^{-1}`` with ``d_q`` the exact query-training dots and ``K`` the
exact training Gram matrix: no projection at all, and cheap whenever the training set is small
(Part II: 150-225 documents), at the price of one more exact gradient pass for ``K``.

``part2_stability`` builds Part II's runs through ``tda.dda_experiments`` (the final checkpoint,
the hallucinated outputs as queries, the training documents as candidates and kernel, as
``trak_scores`` does) and measures them; ``python -m tda.trak_stability`` prints the table.

Measured (quick world, 150 training documents; tiny runs 0, 2-5 with 25 hallucinated queries,
small runs 0-2 with 20; 6 projection seeds; ``python -m tda.trak_stability --runs
tiny:0,tiny:2,tiny:3,tiny:4,tiny:5,small:0,small:1,small:2 --dims 128,1024,4096
--lams 1e-3,0.1,1,10 --seeds 6``):

- Part II's setting (Kronecker projection, k = 128, lam = 1e-3): agreement 0.05 (tiny) and 0.04
  (small): the scores are the projection's noise; the AUC of one seed, 0.54-0.57, is chance plus a
  little, while the limit without projection reaches 0.69-0.70. k = 128 sits at the interpolation
  threshold (k ~ n = 150), where the kernel's inverse amplifies the noise most.
- k = 1024: 0.44 / 0.39 (Kronecker), 0.56 / 0.46 (sketch); k = 4096 with the sketch: 0.82 / 0.76,
  and 0.90 / 0.87 with the limit; averages of 3 seeds at k = 4096: 0.93 / 0.90.
- A large ridge steadies the scores by turning TRAK into projected TracIn (agreement with exact
  dots rises with ``lam``), not by removing the noise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from . import gradients as G
from .base import world_setup
from .data.xsum import to_examples
from .dda_experiments import run, settings
from .metrics import roc_auc
from .projection_fast import SketchProjector, sketch_features
from .task import CausalLMTask, Examples
from .train import list_checkpoints, load_checkpoint


def trak_from_features(phi_q: np.ndarray, phi_c: np.ndarray, lam: float, relative: bool = True,
                       phi_t: np.ndarray | None = None) -> np.ndarray:
    """``tda.methods.trak``'s formula on given features (one checkpoint): ``[n_q, n_c]`` scores.

    When the kernel's examples are the candidates (``phi_t`` None) and ``k`` exceeds their number
    ``n``, the same scores are computed as ``phi_q Phi^T (Phi Phi^T + lambda I)^{-1}`` (an n x n
    solve instead of k x k; see the module docstring).
    """
    phi_q, phi_c = np.asarray(phi_q, dtype=np.float64), np.asarray(phi_c, dtype=np.float64)
    phi_t = phi_c if phi_t is None else np.asarray(phi_t, dtype=np.float64)
    k = phi_t.shape[1]
    trace = float(np.einsum("ij,ij->", phi_t, phi_t))  # trace of the kernel Phi^T Phi
    ridge = lam * trace / k if relative else lam
    if phi_t is phi_c and k > len(phi_c):
        return trak_exact(phi_q @ phi_c.T, phi_c @ phi_c.T, ridge)
    return phi_q @ np.linalg.solve(phi_t.T @ phi_t + ridge * np.eye(k), phi_c.T)


def trak_exact(dots: np.ndarray, gram: np.ndarray, ridge: float) -> np.ndarray:
    """TRAK without projection, for candidates = the training examples: ``dots (K + ridge I)^{-1}``
    with ``dots`` ``[n_q, n]`` exact query-training gradient dots and ``K`` ``[n, n]`` the exact
    training Gram matrix (the limit of ``trak_from_features`` as the projection grows)."""
    gram = np.asarray(gram, dtype=np.float64)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), np.asarray(dots, dtype=np.float64).T).T


def features(model, task: CausalLMTask, examples: Examples, projection: str, dim: int, seed: int,
             batch_size: int = 64) -> np.ndarray:
    """Projected gradient features: "kronecker" (``tda.gradients.Projector``'s default, what
    ``tda.methods.trak`` uses today) or "sketch" (``tda.projection_fast.SketchProjector``)."""
    if projection == "kronecker":
        return G.gradient_features(model, task, examples, "all", projection=G.Projector(dim, seed=seed),
                                   batch_size=batch_size)
    if projection == "sketch":
        return sketch_features(model, task, examples, "all", projector=SketchProjector(dim, seed=seed),
                               batch_size=batch_size)
    raise ValueError(f"projection must be 'kronecker' or 'sketch', got {projection!r}")


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([spearmanr(x, y).statistic for x, y in zip(a, b)]))


def seed_stability(model, task: CausalLMTask, queries: Examples, train: Examples, *, dims: Sequence[int] = (128, 1024),
                   lams: Sequence[float] = (1e-3, 1e-1, 10.0), seeds: Sequence[int] = range(6),
                   projections: Sequence[str] = ("kronecker", "sketch"), poisoned: np.ndarray | None = None,
                   exact_dots: np.ndarray | None = None, exact_gram: np.ndarray | None = None) -> list[dict]:
    """One row per (projection, dim, lam): see the module docstring. Features are computed once
    per (projection, dim, seed) and reused for every ridge."""
    seeds = list(seeds)
    if len(seeds) < 2:
        raise ValueError(f"stability across seeds needs at least 2 seeds, got {seeds}")
    rows = []
    for projection, dim in itertools.product(projections, dims):
        feats = [(features(model, task, queries, projection, dim, s).astype(np.float64),
                  features(model, task, train, projection, dim, s).astype(np.float64)) for s in seeds]
        for lam in lams:
            scores = [trak_from_features(fq, fc, lam) for fq, fc in feats]
            pairs = list(itertools.combinations(range(len(seeds)), 2))
            half = len(seeds) // 2
            row = {"projection": projection, "dim": dim, "lam": lam, "seeds": len(seeds),
                   "agreement": float(np.mean([_agreement(scores[i], scores[j]) for i, j in pairs])),
                   "ensemble_agreement": _agreement(np.mean(scores[:half], 0), np.mean(scores[half: 2 * half], 0)),
                   "ensemble_size": half}
            if poisoned is not None:
                rel = np.broadcast_to(np.asarray(poisoned, dtype=bool), scores[0].shape)
                aucs = [float(np.mean(roc_auc(s, rel))) for s in scores]
                row.update(auc=float(np.mean(aucs)), auc_sd=float(np.std(aucs, ddof=1)),
                           auc_ensemble=float(np.mean(roc_auc(np.mean(scores, 0), rel))))
            if exact_dots is not None:
                row["vs_dots"] = float(np.mean([_agreement(sc, exact_dots) for sc in scores]))
            if exact_dots is not None and exact_gram is not None:  # the same ridge as trak_from_features
                limit = trak_exact(exact_dots, exact_gram, lam * np.trace(exact_gram) / dim)
                row["vs_limit"] = float(np.mean([_agreement(sc, limit) for sc in scores]))
                if poisoned is not None:
                    row["auc_limit"] = float(np.mean(roc_auc(limit, rel)))
            rows.append(row)
    return rows


def part2_stability(preset: str = "quick", runs: Sequence[tuple[str, int]] = (("tiny", 0),), **kwargs) -> list[dict]:
    """``seed_stability`` on Part II runs (built or read from the store by ``tda.dda_experiments``);
    runs without hallucinations are skipped. Rows gain ``size``, ``run_seed`` and ``queries``."""
    setup = world_setup(preset)
    s = settings(preset)
    out = []
    for size, seed in runs:
        r = run(setup, s, size, seed, verbose=False, methods=())
        if not r.traced:
            continue
        model, _ = load_checkpoint(list_checkpoints(r.run_dir)[-1])
        queries, train = r.queries.hallucinated_examples(), to_examples(r.data.train)
        dots = G.gradient_dots(model, setup.task(), queries, train, "all").dots
        gram = G.gradient_dots(model, setup.task(), train, train, "all").dots
        rows = seed_stability(model, setup.task(), queries, train, poisoned=r.poisoned, exact_dots=dots,
                              exact_gram=gram, **kwargs)
        out += [{"size": size, "run_seed": seed, "queries": len(queries), **row} for row in rows]
    return out


def pooled(rows: Sequence[dict]) -> list[dict]:
    """Rows of several runs pooled per (size, projection, dim, lam): means weighted by queries
    (``auc_sd``: the plain mean of the runs' spreads)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["projection"], r["dim"], r["lam"]), []).append(r)
    out = []
    for (size, projection, dim, lam), rs in sorted(groups.items()):
        weights = np.array([r["queries"] for r in rs], dtype=float)
        row = {"size": size, "projection": projection, "dim": dim, "lam": lam, "runs": len(rs),
               "queries": int(weights.sum())}
        for key in ("agreement", "ensemble_agreement", "vs_limit", "vs_dots", "auc", "auc_ensemble", "auc_limit"):
            if all(key in r for r in rs):
                row[key] = float(np.average([r[key] for r in rs], weights=weights))
        if all("auc_sd" in r for r in rs):
            row["auc_sd"] = float(np.mean([r["auc_sd"] for r in rs]))
        out.append(row)
    return out


def main(argv=None) -> int:
    """``python -m tda.trak_stability [--preset quick] [--runs tiny:0,tiny:2] [--dims 128,1024]
    [--lams 1e-3,0.1,10] [--seeds 6] [--projections kronecker,sketch] [--json]``: the table pools
    the runs of each size (``pooled``); ``--json`` gives every run's rows."""
    parser = argparse.ArgumentParser(prog="python -m tda.trak_stability", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--runs", default="tiny:0", help="size:seed,... of Part II runs")
    parser.add_argument("--dims", default="128,1024")
    parser.add_argument("--lams", default="1e-3,0.1,10")
    parser.add_argument("--seeds", type=int, default=6, help="projection seeds 0..N-1")
    parser.add_argument("--projections", default="kronecker,sketch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = [(r.split(":")[0], int(r.split(":")[1])) for r in args.runs.split(",") if r]
    rows = part2_stability(args.preset, runs, dims=[int(d) for d in args.dims.split(",")],
                           lams=[float(x) for x in args.lams.split(",")], seeds=range(args.seeds),
                           projections=args.projections.split(","))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(table(pooled(rows)))
    return 0


def table(rows: Sequence[dict]) -> str:
    """Pooled rows as text."""
    nan = float("nan")
    lines = [f"{'size':<6} {'runs':>4} {'q':>3} {'projection':<10} {'dim':>5} {'lam':>6} {'agree':>6} {'ens':>6} "
             f"{'vs lim':>6} {'vs dots':>7} {'auc':>6} {'sd':>5} {'auc ens':>7} {'auc lim':>7}"]
    for r in rows:
        lines.append(f"{r['size']:<6} {r['runs']:4d} {r['queries']:3d} {r['projection']:<10} {r['dim']:5d} "
                     f"{r['lam']:6g} "
                     f"{r['agreement']:6.3f} {r['ensemble_agreement']:6.3f} {r.get('vs_limit', nan):6.3f} "
                     f"{r.get('vs_dots', nan):7.3f} {r.get('auc', nan):6.3f} {r.get('auc_sd', nan):5.3f} "
                     f"{r.get('auc_ensemble', nan):7.3f} {r.get('auc_limit', nan):7.3f}")
    lines.append("agree: Spearman of scores between two projection seeds (mean over queries and pairs); ens: the same "
                 "between averages over two disjoint halves of the seeds; vs lim: with TRAK's limit as k grows "
                 "(trak_exact, same ridge); vs dots: with exact gradient dot products; auc: poisoned documents "
                 "as positives (sd over seeds; ens: of the seeds' average; lim: of the limit)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
