"""Which random projection of per-example gradients ranks like exact TracIn, and at what cost.

``python -m tda.bench_projection`` prints two tables measured in one run (``--json``: one object).
``python -m tda.bench`` reports this module's ``projection_fidelity`` beside its throughput.

Fidelity (``fidelity``). The "small" GPT-2 trained a few dozen AdamW steps on the quick world's
fact sentences (``trained_model``; trained, because at initialisation every projection looks
good); queries are cloze questions about facts among the candidates. Per projection and seed:
features of queries and candidates, projected dot products, Spearman correlation per query with
the exact dot products (``tda.gradients.gradient_dots``), averaged over queries; reported per
seed and as the mean over seeds (a Kronecker projection's fidelity swings with the seed).

The dense reference is computed exactly in distribution: a dense Gaussian matrix ``P`` (k x D,
entries of variance 1/k) maps the D x n gradients ``M`` to ``P M`` whose k rows are independent
``N(0, M^T M / k)``, so ``C Z / sqrt(k)`` with ``C C^T = M^T M`` (the exact Gram matrix) and ``Z``
standard normal has the same law; this takes seconds where ``Projector(structure="dense")`` takes
25-95 s per seed here (``real_dense=True`` runs it too, as a check).

Candidates (``CANDIDATES``):

- "kronecker": ``tda.gradients.Projector`` with its defaults (the default until issue 18), hooks path;
- "sketch": ``tda.gradients.SketchProjector`` (the default projection), hooks path (FFT from the
  captured factors);
- "sketch-formed": the same sketch from per-example gradients formed per layer in the hooks
  (``einsum('btm,btn->bmn')`` of the captured inputs and output gradients): same features, other cost;
- "sjlt": a count sketch with a fully random bucket per coordinate (dattri's SJLT with one
  nonzero per column), formed per layer like the previous;
- "block-kronecker-s": ``k / s^2`` independent ``s x s`` Kronecker blocks, concatenated and scaled by
  ``sqrt(s^2 / k)`` (1-D tensors by the sketch's injections); its excess variance for a rank-one
  term is about ``4 s / k`` against ``2 / k`` dense, so smaller ``s`` trades cost for fidelity;
- "dense": above.

Cost (``throughput``): side by side, interleaved repeat by repeat, medians, on ``tda.bench``'s batch
(256 fact sentences, chunks of 64, the same model): an ordinary training step and each candidate's
features through the hooks path; examples per second, ratio against the training step and cost
relative to "kronecker". One torch thread by default: on a shared 2-core machine two threads made
every timing several times slower and noisier.

Measured (``python -m tda.projection_bench --real-dense``, 4 seeds, 1 thread; fidelity mean and
range over seeds; ratio to a training step and cost relative to Kronecker, side by side):

    kronecker           0.811 (0.767-0.838)   1.04x train step   1.00
    sketch              0.872 (0.867-0.879)   0.83x              1.26
    sketch-formed       0.872 (same features) 0.69x              1.50
    sjlt                0.873 (0.868-0.878)   0.58x              1.78
    block-kronecker-8   0.837 (0.821-0.856)   0.94x              1.10
    block-kronecker-4   0.864 (0.850-0.877)   0.70x              1.48
    dense (real)        0.879 (0.871-0.892)   68 s for the 576 examples' features (kronecker: 3 s)
    dense (in law)      0.881 (0.874-0.887)

Other runs gave the same fidelities (they are deterministic); over 10 side-by-side timings the
sketch ran at 0.79-0.95x a training step (median 0.84) and 1.24-1.37x the Kronecker cost (median
1.27), lower under heavier machine load; 2 threads on a quiet machine: 0.87x and 1.28x.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from typing import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers.pytorch_utils import Conv1D

from . import gradients as G
from .bench_common import peak_rss_mb, quiet, world_and_tokenizer, fact_batch
from .gradients.hooks import _per_example, _sketch_contribution
from .gradients.sketch import SketchProjector
from .models import make_model
from .seeds import derive_seed
from .task import CausalLMTask, Examples

CANDIDATES = ("kronecker", "sketch", "sketch-formed", "sjlt", "block-kronecker-8", "block-kronecker-4")
GOALS = {"fidelity": 0.84, "ratio_vs_train_step": 0.8, "cost_vs_kronecker": 2.0}


# ---------------------------------------------------------------------------------------------
# Measurement-only projections
# ---------------------------------------------------------------------------------------------
def per_example_gradient(module, attr: str, shape, x, delta, batch: int) -> torch.Tensor:
    """``[B, *shape]``: one parameter's per-example gradient through one hooked call, formed."""
    d = _per_example(delta, batch)
    if attr == "bias":
        return d.sum(1)
    if isinstance(module, torch.nn.LayerNorm):
        xhat = torch.nn.functional.layer_norm(x, module.normalized_shape, None, None, module.eps)
        return (d * _per_example(xhat, batch)).sum(1)
    if isinstance(module, torch.nn.Embedding):
        ids = x if x.dim() >= 2 else x.unsqueeze(0)
        ids = ids.reshape(ids.shape[0], -1).expand(batch, -1)
        if module.padding_idx is not None:
            d = d * (ids != module.padding_idx).unsqueeze(-1)
        full = torch.zeros((batch,) + tuple(shape), dtype=d.dtype)
        return full.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, d.shape[-1]), d)
    xs = _per_example(x, batch)
    if isinstance(module, Conv1D):
        return torch.bmm(xs.transpose(1, 2), d)
    return torch.bmm(d.transpose(1, 2), xs)


class Formed:
    """A projector applied to per-example gradients formed per layer in the hooks."""

    def __init__(self, projector):
        self.projector, self.dim = projector, projector.dim

    def project(self, grads):
        return self.projector.project(grads)

    def hook_contribution(self, module, attr, name, shape, x, delta, batch):
        return self.projector.project_tensor(name, per_example_gradient(module, attr, shape, x, delta, batch))


class RandomSJLT(SketchProjector):
    """Count sketch with an independent uniform bucket and sign per coordinate (SJLT, c = 1)."""

    kind = "sjlt"

    def buckets(self, name, shape):
        key = (name, tuple(int(s) for s in shape))
        if key not in self._buckets:
            numel = int(np.prod(key[1])) if key[1] else 1
            gen = self._generator(name, key[1], "sjlt")
            sign = torch.randint(0, 2, (numel,), generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)
            self._buckets[key] = (torch.randint(0, self.dim, (numel,), generator=gen), sign)
        return self._buckets[key]


class BlockKronecker:
    """``r = dim / s^2`` independent Kronecker blocks ``A_j^T G B_j`` (``s x s``), concatenated and
    divided by ``sqrt(r)`` (so inner products stay unbiased); 1-D tensors by the sketch's injections."""

    def __init__(self, dim: int, seed: int = 0, s: int = 8):
        if dim % (s * s):
            raise ValueError(f"block size {s} x {s} does not divide dim {dim}")
        self.dim, self.seed, self.s, self.r = dim, seed, s, dim // (s * s)
        self._vector = SketchProjector(dim, seed)
        self._factors: dict = {}

    def factors(self, name, shape):
        key = (name, tuple(shape))
        if key not in self._factors:
            m, n = shape[0], int(np.prod(shape[1:]))
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "block-kron", self.s, name, key[1]))
            scale = 1 / math.sqrt(self.s)
            self._factors[key] = (torch.randn(m, self.r * self.s, generator=gen) * scale,
                                  torch.randn(n, self.r * self.s, generator=gen) * scale)
        return self._factors[key]

    def _blocks(self, left, right):  # [B, L, r*s] x [B, L, r*s] -> [B, dim]
        b, L = left.shape[:2]
        y = torch.einsum("blri,blrj->brij", left.reshape(b, L, self.r, self.s), right.reshape(b, L, self.r, self.s))
        return y.reshape(b, self.dim) / math.sqrt(self.r)

    def project_tensor(self, name, g):
        if g.dim() <= 2:
            return self._vector.project_tensor(name, g)
        a, b = self.factors(name, tuple(g.shape[1:]))
        c = g.shape[0]
        left = torch.matmul(a.T, g.reshape(c, a.shape[0], -1))  # [c, r*s, n]
        y = torch.einsum("cin,nj->cij", left, b).reshape(c, self.r, self.s, self.r, self.s)
        return torch.diagonal(y, dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(c, self.dim) / math.sqrt(self.r)

    def project(self, grads):
        return sum(self.project_tensor(n, g) for n, g in grads.items())

    def hook_contribution(self, module, attr, name, shape, x, delta, batch):
        if len(shape) == 1:
            return _sketch_contribution(self._vector, module, attr, name, shape, x, delta, batch)
        a, b = self.factors(name, shape)
        d = _per_example(delta, batch)
        if isinstance(module, torch.nn.Embedding):
            ids = (x if x.dim() >= 2 else x.unsqueeze(0))
            ids = ids.reshape(ids.shape[0], -1).expand(batch, -1)
            return self._blocks(a[ids], d @ b)
        xs = _per_example(x, batch)
        left, right = (xs, d) if isinstance(module, Conv1D) else (d, xs)
        return self._blocks(left @ a, right @ b)


def make_projection(name: str, dim: int, seed: int):
    """A candidate by name (``CANDIDATES``, "dense", or "default": what ``projection=dim`` makes)."""
    if name == "default":
        return G.as_projector(dim, seed=seed)
    if name == "kronecker":
        return G.Projector(dim, seed=seed)
    if name == "dense":
        return G.Projector(dim, seed=seed, structure="dense")
    if name == "sketch":
        return SketchProjector(dim, seed=seed)
    if name == "sketch-formed":
        return Formed(SketchProjector(dim, seed=seed))
    if name == "sjlt":
        return Formed(RandomSJLT(dim, seed=seed))
    if name.startswith("block-kronecker-"):
        return BlockKronecker(dim, seed=seed, s=int(name.rsplit("-", 1)[1]))
    raise ValueError(f"unknown projection {name!r}; known: {', '.join(CANDIDATES + ('dense', 'default'))}")


def hooks_features(model, task, examples: Examples, projection, batch_size: int = 64) -> np.ndarray:
    """Features ``[len(examples), dim]`` of any candidate through the hooks path (a candidate with
    a ``hook_contribution`` method supplies its own per-module rule, see ``tda.gradients.hooks``)."""
    names = G.parameter_names(model)
    rows = G.hook_features(model, task, examples, names, projection, batch_size=batch_size)
    out = np.empty((len(examples), projection.dim), dtype=np.float32)
    for idx, r in rows:
        out[idx] = r.numpy()
    return out


# ---------------------------------------------------------------------------------------------
# The trained model and the measurements
# ---------------------------------------------------------------------------------------------
def trained_model(size: str = "small", steps: int = 60, lr: float = 1e-3, batch: int = 32, n_candidates: int = 512,
                  n_queries: int = 64, seed: int = 0):
    """(model, task, queries, candidates, last training loss).

    Candidates: ``tda.bench.fact_batch`` (cloze sentences of the quick world's facts, every
    paraphrase in turn); the model is trained ``steps`` AdamW steps on random batches of them
    (lr 1e-3: half the small model's pre-training rate, as there is no warm-up; chosen before
    measuring any projection). Queries: cloze questions (template 3, object masked, the entity as
    the target) about every fifth fact among the candidates, so each has proponents there.
    """
    world, tokenizer = world_and_tokenizer()
    task = CausalLMTask(tokenizer)
    candidates = fact_batch(world, n_candidates)
    facts = [world.facts[(5 * i) % min(len(world.facts), n_candidates)] for i in range(n_queries)]
    queries = Examples([world.cloze(f, 3)[0] + " answer :" for f in facts], [world.cloze(f, 3)[1] for f in facts])
    model = make_model(size, tokenizer, seed=seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = rng.choice(len(candidates), size=min(batch, len(candidates)), replace=False).tolist()
        loss = task.per_example_loss(model, task.encode(candidates.subset(idx))).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return model, task, queries, candidates, float(loss.detach())


def dense_features_in_law(gram: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """``[n, dim]`` features with the law of a dense Gaussian projection (entries of variance
    ``1/dim``) of the n gradients whose Gram matrix is ``gram``: ``C Z / sqrt(dim)``, ``C C^T = gram``."""
    evals, evecs = np.linalg.eigh(np.asarray(gram, dtype=np.float64))
    root = evecs * np.sqrt(np.clip(evals, 0, None))  # clip: rounding makes tiny eigenvalues negative
    return root @ (np.random.default_rng([seed, 18]).standard_normal((len(root), dim)) / math.sqrt(dim))


def _spearman_rows(scores: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.array([spearmanr(s, e).statistic for s, e in zip(scores, exact)])


def fidelity(model, task, queries: Examples, candidates: Examples, dim: int = 1024, seeds: Sequence[int] = (0, 1, 2, 3),
             projections: Sequence[str] = CANDIDATES, real_dense: bool = False) -> dict:
    """Per projection: ``{"per_seed": [...], "mean", "min", "max", "seconds"}`` (seconds: median
    time of the features of queries and candidates). "dense" is always there (exact in law, from
    the Gram matrix); with ``real_dense`` "dense-real" runs ``Projector(structure="dense")``."""
    both = Examples(list(queries.prompts) + list(candidates.prompts), list(queries.targets) + list(candidates.targets))
    nq = len(queries)
    with quiet():  # query blocks of 256 MB: peak RSS 1.6 GB instead of 3.8 GB, in about the same time
        gram = G.gradient_dots(model, task, both, both, "all", max_query_bytes=256 << 20).dots
    exact = gram[:nq, nq:]
    out = {}
    runs = list(projections) + (["dense-real"] if real_dense else [])
    for name in runs:
        values, seconds = [], []
        for seed in seeds:
            proj = make_projection("dense" if name == "dense-real" else name, dim, seed)
            start = time.perf_counter()
            with quiet():
                feats = hooks_features(model, task, both, proj).astype(np.float64)
            seconds.append(time.perf_counter() - start)
            values.append(float(_spearman_rows(feats[:nq] @ feats[nq:].T, exact).mean()))
        out[name] = {"per_seed": values, "mean": float(np.mean(values)), "min": float(np.min(values)),
                     "max": float(np.max(values)), "seconds": statistics.median(seconds)}
    dense = []
    for seed in seeds:
        feats = dense_features_in_law(gram, dim, seed)
        dense.append(float(_spearman_rows(feats[:nq] @ feats[nq:].T, exact).mean()))
    out["dense"] = {"per_seed": dense, "mean": float(np.mean(dense)), "min": float(np.min(dense)),
                    "max": float(np.max(dense)), "seconds": None}
    return out


def throughput(model, task, examples: Examples, dim: int = 1024, projections: Sequence[str] = CANDIDATES,
               repeats: int = 5, chunk: int = 64, seed: int = 0) -> dict:
    """Examples per second of a training step and of each projection's hooks features, measured
    interleaved on the same batch; medians of ``repeats`` after a warm-up."""
    trained = copy.deepcopy(model)
    trained.train()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-5)

    def train_step():
        b = task.encode(examples)
        loss = task.per_example_loss(trained, b).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    runs = {"train_step": train_step}
    for name in projections:
        proj = make_projection(name, dim, seed)
        runs[name] = lambda proj=proj: hooks_features(model, task, examples, proj, batch_size=chunk)
    times: dict[str, list[float]] = {k: [] for k in runs}
    with quiet():
        for fn in runs.values():
            fn()
        for _ in range(repeats):
            for key, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    rate = {k: len(examples) / statistics.median(v) for k, v in times.items()}
    out = {"examples_per_s": rate, "ratio_vs_train_step": {k: rate[k] / rate["train_step"] for k in projections}}
    if "kronecker" in rate:
        out["cost_vs_kronecker"] = {k: rate["kronecker"] / rate[k] for k in projections}
    return out


def projection_fidelity(size: str = "small", dim: int = 1024, seeds: Sequence[int] = (0, 1, 2, 3), steps: int = 60,
                        n_queries: int = 64, n_candidates: int = 512) -> dict:
    """The numbers ``python -m tda.bench --fidelity`` reports, each a mean over ``seeds`` of the mean
    Spearman per query against exact dot products on ``trained_model``: ``projection_fidelity``
    (the default projection, ``projection=dim``), ``projection_fidelity_dense`` (dense Gaussian,
    exact in law) and ``projection_fidelity_kronecker`` (``Projector``, the default until issue 18);
    also each seed's value, the default's ``describe()`` and the section's wall time."""
    start = time.perf_counter()
    model, task, queries, candidates, _ = trained_model(size, steps=steps, n_queries=n_queries,
                                                        n_candidates=n_candidates)
    fid = fidelity(model, task, queries, candidates, dim=dim, seeds=seeds, projections=("default", "kronecker"))
    return {"projection_fidelity": fid["default"]["mean"], "projection_fidelity_dense": fid["dense"]["mean"],
            "projection_fidelity_kronecker": fid["kronecker"]["mean"],
            "projection_fidelity_seeds": {k: v["per_seed"] for k, v in fid.items()},
            "projection_fidelity_setting": {"size": size, "dim": dim, "steps": steps, "queries": n_queries,
                                            "candidates": n_candidates,
                                            "default": G.as_projector(dim).describe()},
            "projection_fidelity_s": time.perf_counter() - start}


def measure(size: str = "small", dim: int = 1024, seeds: Sequence[int] = (0, 1, 2, 3), steps: int = 60,
            n_queries: int = 64, n_candidates: int = 512, projections: Sequence[str] = CANDIDATES,
            real_dense: bool = False, repeats: int = 5, batch: int = 256, timing: bool = True) -> dict:
    """Both tables (module docstring) in one run."""
    start = time.perf_counter()
    model, task, queries, candidates, loss = trained_model(size, steps=steps, n_candidates=n_candidates,
                                                           n_queries=n_queries)
    out = {"size": size, "dim": dim, "seeds": list(seeds), "steps": steps, "train_loss": loss,
           "queries": n_queries, "candidates": n_candidates, "threads": torch.get_num_threads(),
           "fidelity": fidelity(model, task, queries, candidates, dim=dim, seeds=seeds, projections=projections,
                                real_dense=real_dense)}
    if timing:
        world, _ = world_and_tokenizer()
        out["throughput"] = throughput(model, task, fact_batch(world, batch), dim=dim, projections=projections,
                                       repeats=repeats)
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _cell(value, fmt: str) -> str:
    width = int(fmt.split(".")[0])
    return " " * width if value is None else format(value, fmt)


def _table(result: dict) -> str:
    fid, thr = result["fidelity"], result.get("throughput")
    lines = [f"{result['size']} GPT-2 trained {result['steps']} AdamW steps (loss {result['train_loss']:.2f}); "
             f"{result['queries']} queries x {result['candidates']} candidates, {result['dim']} dims, all parameters, "
             f"seeds {result['seeds']}, {result['threads']} thread(s)",
             f"{'projection':<20} {'fidelity mean':>13} {'min-max':>13} {'time s *':>10} {'ex/s':>8} "
             f"{'/train step':>11} {'cost/kron':>9}"]
    for name, row in fid.items():
        rate = thr["examples_per_s"].get(name) if thr else None
        ratio = thr["ratio_vs_train_step"].get(name) if thr else None
        cost = thr.get("cost_vs_kronecker", {}).get(name) if thr else None
        cells = [_cell(row["seconds"], "10.2f"), _cell(rate, "8.1f"), _cell(ratio, "11.2f"), _cell(cost, "9.2f")]
        lines.append(f"{name:<20} {row['mean']:13.3f} {row['min']:6.3f}-{row['max']:.3f} " + " ".join(cells))
    if thr:
        lines.append(f"train step: {thr['examples_per_s']['train_step']:.1f} examples/s (batch of 256, chunks of 64)")
    lines.append(f"{result['seconds']:.0f} s in all, peak RSS {result.get('peak_rss_mb', float('nan')):.0f} MB")
    lines.append("fidelity: mean over seeds of the mean Spearman per query against exact dot products; "
                 "dense: Gaussian, exact in law from the Gram matrix")
    lines.append("* features of queries and candidates, median over seeds, not interleaved (first calls build "
                 "matrices); ex/s, /train step and cost/kron are the side-by-side comparison")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m tda.bench_projection [--size S] [--dim K] [--seeds N] [--steps N] [--projections a,b]
    [--real-dense] [--no-timing] [--repeats R] [--threads T] [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m tda.bench_projection", description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--seeds", type=int, default=4, help="projection seeds 0..N-1")
    parser.add_argument("--steps", type=int, default=60, help="AdamW steps of the model")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=512)
    parser.add_argument("--projections", default=",".join(CANDIDATES), help="comma-separated candidates")
    parser.add_argument("--real-dense", action="store_true", help="also run Projector(structure='dense') (slow)")
    parser.add_argument("--no-timing", action="store_true", help="skip the throughput table")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.seeds, args.dim, args.repeats, args.threads, args.queries, args.candidates) < 1 or args.steps < 0:
        parser.error("--seeds, --dim, --repeats, --threads, --queries and --candidates must be >= 1, --steps >= 0")
    projections = tuple(p for p in args.projections.split(",") if p)
    for p in projections:
        make_projection(p, args.dim, 0)  # unknown names fail before any work
    torch.set_num_threads(args.threads)
    result = measure(args.size, dim=args.dim, seeds=range(args.seeds), steps=args.steps, n_queries=args.queries,
                     n_candidates=args.candidates, projections=projections, real_dense=args.real_dense,
                     repeats=args.repeats, timing=not args.no_timing)
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
