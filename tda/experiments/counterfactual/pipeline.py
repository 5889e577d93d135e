"""Part III's experiments on one :class:`~tda.experiments.counterfactual.interface.Case`: what each
method's top examples actually do to the model.

Three measurements, each against the same reference rows (``interface.REFERENCES``: ``k`` of the
query's labelled positives, and ``k`` training rows drawn at random) beside the methods:

- **tail-patch** (:func:`tail_patch_table`): from the final checkpoint, one AdamW step on the
  method's top-k for a query, and the change in the query's support (``tda.counterfactual``'s
  ``TailPatch``; no retraining, so every query and ``k`` is affordable);
- **leave-k-out** (:func:`leave_k_out_table`): retrain from the base checkpoint without the
  method's top-k (same seed, batches and learning rates), and the change of the query's support
  and whether its behaviour flips (Part I: the answer is no longer right; Part II: the
  hallucination is gone). One retrain per (query, selection), so a small sample of queries;
- **LDS** (:func:`lds_measurements`, :func:`lds_table`): retrain on ``lds_subsets`` random
  half-subsets, and per method the Spearman correlation of its summed scores with the measured
  support, per query.

Every retrain is a store artifact keyed by its subset (``tda.counterfactual.stored``), so a
selection two methods share is trained once and a chapter run again trains nothing. The loss
change of leave-k-out is measured against a retrain that keeps everything (trained by the same
code), not against the stored final checkpoint; :func:`reference` checks that the two agree.

Settings (:class:`CounterfactualSettings`): dataclass defaults here, profiles in
``notebooks/params.yml`` (the notebooks' parameters), with the reasons there.
"""

from __future__ import annotations

import resource
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...counterfactual import (TailPatch, lds_per_query, load_retrained, random_subsets, retrain_all,
                               stored_retrain, support)
from ...counterfactual.tail_patch import OPTIMIZERS
from ...progress import Timer, progress
from ...seeds import derive_seed
from ...store import Store
from .interface import REFERENCES, Case, check_methods


@dataclass(frozen=True)
class CounterfactualSettings:
    """What Part III measures on a case (defaults: the default profile's; see params.yml)."""

    methods: tuple[str, ...] | None = None  # attribution methods (None: every method of the case)
    tail_ks: tuple[int, ...] = (1, 5, 10)
    tail_optimizer: str = "adam"  # "adam" (AdamW continuing from the checkpoint's state) or "sgd"
    tail_queries: int | None = None  # queries tail-patched (None: all); a seeded sample otherwise
    loo_ks: tuple[int, ...] = (10,)
    loo_queries: int = 4  # queries retrained without each selection
    loo_methods: tuple[str, ...] | None = None  # None: ``methods``
    loo_slice: str | None = None  # draw leave-k-out queries from this slice only (e.g. "learned")
    lds_subsets: int = 50
    lds_fraction: float = 0.5
    workers: int = 1  # processes that retrain at once (each trains with tda.threads' count)

    def __post_init__(self) -> None:
        for name in ("tail_ks", "loo_ks"):
            ks = tuple(int(k) for k in getattr(self, name))
            if not ks or min(ks) < 1:
                raise ValueError(f"{name} must be positive integers, got {getattr(self, name)}")
            object.__setattr__(self, name, ks)
        for name in ("methods", "loo_methods"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.tail_optimizer not in OPTIMIZERS:
            raise ValueError(f"tail_optimizer must be one of {OPTIMIZERS}, got {self.tail_optimizer!r}")
        if self.loo_queries < 0 or self.lds_subsets < 0 or self.workers < 1:
            raise ValueError(f"loo_queries and lds_subsets must be >= 0 and workers >= 1 (got {self.loo_queries}, "
                             f"{self.lds_subsets}, {self.workers})")


def sample(rows: Sequence[int], n: int | None, seed: int, what: str) -> list[int]:
    """At most ``n`` of ``rows`` (None: all), a seeded sample, in ascending order."""
    rows = sorted(int(r) for r in rows)
    if n is None or n >= len(rows):
        return rows
    rng = np.random.default_rng(derive_seed(seed, "counterfactual", what))
    return sorted(int(r) for r in rng.choice(rows, size=n, replace=False))


def labels(case: Case, methods: Sequence[str] | None) -> list[str]:
    """The rows of a table: the methods, then the reference rows."""
    return check_methods(case, methods) + list(REFERENCES)


# ---------------------------------------------------------------------------------------------
# tail-patch
# ---------------------------------------------------------------------------------------------
def tail_patch_table(case: Case, s: CounterfactualSettings) -> pd.DataFrame:
    """One row per (query, method or reference, k): the tail-patch score (support after one step on
    the selection minus before) and the selection's size."""
    patcher = TailPatch(case.final, case.task, case.train, lr=case.config.lr,
                        max_grad_norm=case.config.max_grad_norm, optimizer=s.tail_optimizer)
    rows = []
    names = labels(case, s.methods)
    for j in progress(sample(range(len(case.queries)), s.tail_queries, case.seed, "tail-patch"),
                      desc=f"tail-patch ({case.name})"):
        picks = [(name, k, case.selection(name, j, k)) for name in names for k in s.tail_ks]
        picks = [p for p in picks if len(p[2])]
        cp = None if case.counterparts is None else case.counterparts.subset([j])
        values = patcher.scores(case.queries.subset([j]), cp, [p[2] for p in picks])
        rows += [{"dataset": case.name, "query": j, "slice": case.query_slice[j], "method": name, "k": k,
                  "selected": len(sel), "tail_patch": float(v)} for (name, k, sel), v in zip(picks, values)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# the reference retrain and leave-k-out
# ---------------------------------------------------------------------------------------------
@dataclass
class Reference:
    """The retrain that keeps every example, and what it says about every query."""

    folder: Path
    support: np.ndarray  # per query
    present: np.ndarray  # per query
    final_support: np.ndarray  # per query, at the run's stored final checkpoint

    @property
    def max_difference(self) -> float:
        """Largest ``|support(retrain keeping everything) - support(final checkpoint)|`` over queries:
        0 when retraining reproduces the run exactly."""
        return float(np.max(np.abs(self.support - self.final_support)))


def reference(case: Case, store: Store) -> Reference:
    """Retrain keeping every example (stored) and measure every query on it and on the final
    checkpoint."""
    folder = stored_retrain(store, case.run_key, case.base, case.task, case.train, case.config,
                            np.ones(len(case.train), dtype=bool), desc=f"retrain {case.name}, everything kept")
    model = load_retrained(folder)
    final = load_retrained(case.final)
    rows = range(len(case.queries))
    return Reference(folder=folder, support=support(model, case.task, case.queries, case.counterparts),
                     present=np.asarray(case.present(model, rows), dtype=bool),
                     final_support=support(final, case.task, case.queries, case.counterparts))


def leave_k_out_queries(case: Case, ref: Reference, s: CounterfactualSettings) -> list[int]:
    """The queries leave-k-out retrains for: a seeded sample of ``loo_queries`` among those whose
    behaviour the full run shows (and of ``loo_slice``, when set and not empty)."""
    shown = [j for j in range(len(case.queries)) if ref.present[j]]
    if s.loo_slice is not None:
        in_slice = [j for j in shown if case.query_slice[j] == s.loo_slice]
        shown = in_slice or shown
    return sample(shown, s.loo_queries, case.seed, "leave-k-out")


def leave_k_out_table(case: Case, store: Store, ref: Reference, query_rows: Sequence[int],
                      s: CounterfactualSettings) -> pd.DataFrame:
    """One row per (query, method or reference, k): the query's support with everything kept and
    without the selection, ``loss_change`` (= the support lost: positive when removing the
    selection made the target less likely), and whether its behaviour ``flipped``."""
    names = labels(case, s.loo_methods if s.loo_methods is not None else s.methods)
    jobs = []
    for j in query_rows:
        for name in names:
            for k in s.loo_ks:
                sel = case.selection(name, j, k)
                if len(sel):
                    jobs.append((j, name, k, sel))
    keeps = []
    for _, _, _, sel in jobs:
        keep = np.ones(len(case.train), dtype=bool)
        keep[sel] = False
        keeps.append(keep)
    folders = retrain_all(store, case.run_key, case.base, case.task, case.train, case.config, keeps,
                          workers=s.workers, desc=f"leave-k-out retrains ({case.name})")
    measured: dict[tuple[Path, int], tuple[float, bool]] = {}
    rows = []
    for (j, name, k, sel), folder in zip(jobs, folders):
        if (folder, j) not in measured:
            model = load_retrained(folder)
            cp = None if case.counterparts is None else case.counterparts.subset([j])
            measured[(folder, j)] = (float(support(model, case.task, case.queries.subset([j]), cp)[0]),
                                     bool(case.present(model, [j])[0]))
        after, shown = measured[(folder, j)]
        rows.append({"dataset": case.name, "query": j, "slice": case.query_slice[j], "method": name, "k": k,
                     "removed": len(sel), "positives removed": int(np.isin(sel, case.positives[j]).sum()),
                     "support_full": float(ref.support[j]), "support_without": after,
                     "loss_change": float(ref.support[j]) - after, "present_full": bool(ref.present[j]),
                     "present_without": shown, "flipped": bool(ref.present[j] and not shown)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# LDS
# ---------------------------------------------------------------------------------------------
@dataclass
class LDSData:
    """The random subsets and every query's measured support after retraining on each."""

    masks: np.ndarray  # [M, n_train] keep masks
    measured: np.ndarray  # [M, n_queries] support


def lds_measurements(case: Case, store: Store, s: CounterfactualSettings) -> LDSData:
    """Retrain on ``lds_subsets`` random subsets (``tda.counterfactual.random_subsets`` with the
    case's seed) and measure every query's support on each retrained model."""
    masks = random_subsets(len(case.train), s.lds_subsets, case.seed, s.lds_fraction)
    folders = retrain_all(store, case.run_key, case.base, case.task, case.train, case.config, list(masks),
                          workers=s.workers, desc=f"LDS retrains ({case.name})")
    measured = np.stack([support(load_retrained(f), case.task, case.queries, case.counterparts)
                         for f in progress(folders, desc=f"LDS measurements ({case.name})")])
    return LDSData(masks=masks, measured=measured)


def lds_table(case: Case, data: LDSData, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (method, query): the query's LDS (NaN where undefined: a method scoring no kept
    example differently, or a support that never changes)."""
    rows = []
    for m in check_methods(case, methods):
        per_query = lds_per_query(case.scores[m], data.masks, data.measured)
        rows += [{"dataset": case.name, "method": m, "query": j, "slice": case.query_slice[j], "lds": float(v)}
                 for j, v in enumerate(per_query)]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# everything on one case
# ---------------------------------------------------------------------------------------------
@dataclass
class CaseResults:
    """The three measurements on one case, and the reference retrain they share."""

    case: Case
    settings: CounterfactualSettings
    tail: pd.DataFrame
    reference: Reference
    loo_queries: list[int]
    loo: pd.DataFrame
    lds_data: LDSData | None
    lds: pd.DataFrame


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def timed(timer: Timer, stage: str, verbose: bool = True):
    """``timer(stage)``, plus the CPU seconds of the worker processes that ended during the stage
    (retrains in a pool), recorded as the stage ``"<stage>, worker processes"`` with no wall time
    of its own, so that the timer's CPU total counts all the work."""
    before = _children_cpu()
    with timer(stage, verbose):
        yield
    workers = _children_cpu() - before
    if workers > 0:
        name = f"{stage}, worker processes"
        timer.wall[name] = timer.wall.get(name, 0.0)
        timer.cpu[name] = timer.cpu.get(name, 0.0) + workers
        if verbose:
            print(f"  [{name}: {workers:.1f} s CPU]", flush=True)


def run_case(case: Case, store: Store, s: CounterfactualSettings, timer: Timer | None = None,
             verbose: bool = True) -> CaseResults:
    """Tail-patch, the reference retrain, leave-k-out and LDS on one case, each stage timed."""
    timer = timer or Timer()
    if verbose:
        print(f"{case.name} (seed {case.seed}): {len(case.queries)} queries, {len(case.train)} training examples, "
              f"methods {check_methods(case, s.methods)}", flush=True)
    with timed(timer, f"tail-patch ({case.name})", verbose):
        tail = tail_patch_table(case, s)
    with timed(timer, f"retrain keeping everything ({case.name})", verbose):
        ref = reference(case, store)
    rows = leave_k_out_queries(case, ref, s)
    with timed(timer, f"leave-k-out retrains ({case.name})", verbose):
        loo = leave_k_out_table(case, store, ref, rows, s) if rows else pd.DataFrame()
    data, lds = None, pd.DataFrame()
    if s.lds_subsets >= 2:
        with timed(timer, f"LDS retrains ({case.name})", verbose):
            data = lds_measurements(case, store, s)
            lds = lds_table(case, data, s.methods)
    if verbose:
        print(f"  retraining with everything kept reproduces the run to {ref.max_difference:.1e} nats; "
              f"{int(ref.present.sum())} of {len(ref.present)} queries shown by the full run; leave-k-out on "
              f"queries {rows}", flush=True)
    return CaseResults(case=case, settings=s, tail=tail, reference=ref, loo_queries=rows, loo=loo, lds_data=data,
                       lds=lds)


__all__ = ["CounterfactualSettings", "sample", "labels", "tail_patch_table", "Reference", "reference",
           "leave_k_out_queries", "leave_k_out_table", "LDSData", "lds_measurements", "lds_table", "CaseResults",
           "timed", "run_case"]
