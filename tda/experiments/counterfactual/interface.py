"""What Part III needs from a run of Part I or Part II: one :class:`Case`.

Part III retrains, patches and measures; it does not care how a run was built. A ``Case`` is the
narrow interface between the two: everything below, and nothing else. The adapters in
``tda.experiments.counterfactual.adapters`` build one from a run of Part I (``from_ftrace_run``)
or Part II (``from_dda_run``); when those parts change, only the adapters follow.

The fine-tuning run, so that it can be retrained on subsets (``tda.counterfactual``):

- ``base``: the checkpoint fine-tuning started from (never retrained);
- ``final``: the run's last checkpoint, with AdamW's state (tail-patch steps from it);
- ``task``: the fine-tuning task (the loss as trained, EOS included);
- ``train``: the training examples in the order the run indexed them (row ``i`` = example ``i``);
- ``config``: the recipe (``tda.train.TrainConfig``); its ``seed`` fixes the batch order;
- ``run_key``: the store parameters that identify the run (retrains are stored under it).

The queries, and what the labels say about them:

- ``queries``: each query's prompt and target (Part I: the cloze query and its answer; Part II:
  the test prompt and the hallucinated output);
- ``counterparts``: None, or per query the output it is contrasted with (Part II: the correct
  output), so that the measured support is ``log p(target) - log p(counterpart)``;
- ``query_ids`` and ``query_slice`` (Part I: "learned" / "known" / "other"; Part II:
  "hallucinated");
- ``positives``: per query, the training rows the labels name (proponents / poisoned documents);
- ``present``: ``present(model, rows) -> bool[len(rows)]``, whether a model shows the traced
  behaviour on the queries ``rows`` (Part I: answers the query right; Part II: the hallucination
  is there). A *flip* is a query whose behaviour the full run shows and a retrained model does not.

And what each method says:

- ``scores``: method name -> ``[n_queries, n_train]`` attribution scores over the training rows,
  higher = more responsible; NaN where a method gives no score (Part I's methods rank each
  query's candidate set only). The label metric of each method is ``label_metric`` ("mrr" over
  the scored rows, as Part I; "auc" over all rows, as Part II).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...seeds import derive_seed
from ...task import CausalLMTask, Examples
from ...train import TrainConfig

LABEL_METRICS = ("mrr", "auc")
# Reference rows beside the methods (module docstring of tda.experiments.counterfactual.pipeline):
PROPONENTS = "proponents"  # k of the rows the labels name
RANDOM = "random k"  # k rows drawn uniformly from the whole training set
REFERENCES = (PROPONENTS, RANDOM)


@dataclass
class Case:
    """One run of Part I or II as Part III sees it (module docstring)."""

    name: str
    seed: int
    run_key: dict
    base: Path
    final: Path
    task: CausalLMTask
    train: Examples
    config: TrainConfig
    queries: Examples
    counterparts: Examples | None
    query_ids: list[str]
    query_slice: list[str]
    positives: list[np.ndarray]
    scores: dict[str, np.ndarray]
    present: Callable[[object, Sequence[int]], np.ndarray]
    label_metric: str = "mrr"
    info: dict = field(default_factory=dict)  # anything a chapter shows (counts, settings); not used here

    def __post_init__(self) -> None:
        n_q, n = len(self.queries), len(self.train)
        if n_q == 0:
            raise ValueError(f"case {self.name!r} has no query")
        if self.label_metric not in LABEL_METRICS:
            raise ValueError(f"label_metric must be one of {LABEL_METRICS}, got {self.label_metric!r}")
        for what, values in (("query_ids", self.query_ids), ("query_slice", self.query_slice),
                             ("positives", self.positives)):
            if len(values) != n_q:
                raise ValueError(f"case {self.name!r}: {len(values)} {what} for {n_q} queries")
        if self.counterparts is not None and len(self.counterparts) != n_q:
            raise ValueError(f"case {self.name!r}: {len(self.counterparts)} counterparts for {n_q} queries")
        self.positives = [np.asarray(p, dtype=np.int64) for p in self.positives]
        for j, p in enumerate(self.positives):
            if p.size and (p.min() < 0 or p.max() >= n):
                raise ValueError(f"case {self.name!r}: positives of query {j} outside the {n} training rows")
        for method, s in self.scores.items():
            s = np.asarray(s, dtype=np.float64)
            if s.shape != (n_q, n):
                raise ValueError(f"case {self.name!r}: scores of {method!r} have shape {s.shape}, expected "
                                 f"{(n_q, n)} (queries x training rows)")
            if method in REFERENCES:
                raise ValueError(f"{method!r} is the name of a reference row; rename the method")
            self.scores[method] = s

    @property
    def methods(self) -> list[str]:
        return list(self.scores)

    def top_k(self, method: str, query: int, k: int) -> np.ndarray:
        """The ``k`` training rows ``method`` scores highest for ``query`` (ties: lower row first),
        among the rows it scores; fewer when it scores fewer."""
        if method not in self.scores:
            raise KeyError(f"case {self.name!r} has no method {method!r}; methods: {self.methods}")
        s = self.scores[method][query]
        rows = np.flatnonzero(np.isfinite(s))
        order = rows[np.lexsort((rows, -s[rows]))]
        return order[:k]

    def reference(self, which: str, query: int, k: int, seed: int | None = None) -> np.ndarray:
        """A reference selection: ``PROPONENTS`` (``k`` of the query's positives, a seeded sample when
        there are more, all of them when fewer) or ``RANDOM`` (``k`` rows of the whole training set)."""
        seed = self.seed if seed is None else seed
        rng = np.random.default_rng(derive_seed(seed, "counterfactual-reference", which, query, k))
        if which == PROPONENTS:
            p = self.positives[query]
            return np.sort(p if p.size <= k else rng.choice(p, size=k, replace=False))
        if which == RANDOM:
            return np.sort(rng.choice(len(self.train), size=min(k, len(self.train)), replace=False))
        raise ValueError(f"unknown reference {which!r}; references: {REFERENCES}")

    def selection(self, label: str, query: int, k: int) -> np.ndarray:
        """A method's top-k, or a reference row's selection."""
        return self.reference(label, query, k) if label in REFERENCES else self.top_k(label, query, k)

    def subset(self, rows: Sequence[int]) -> "Case":
        """The same case restricted to some queries (rows of ``queries``), in that order."""
        rows = [int(r) for r in rows]
        pick = lambda xs: [xs[r] for r in rows]  # noqa: E731
        return Case(name=self.name, seed=self.seed, run_key=self.run_key, base=self.base, final=self.final,
                    task=self.task, train=self.train, config=self.config, queries=self.queries.subset(rows),
                    counterparts=None if self.counterparts is None else self.counterparts.subset(rows),
                    query_ids=pick(self.query_ids), query_slice=pick(self.query_slice), positives=pick(self.positives),
                    scores={m: s[rows] for m, s in self.scores.items()},
                    present=_subset_present(self.present, rows), label_metric=self.label_metric, info=dict(self.info))


def _subset_present(present, rows: list[int]):
    return lambda model, which: present(model, [rows[int(i)] for i in which])


def scatter(per_query: Sequence[np.ndarray], candidates: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """``[n_queries, n]`` scores from per-query scores over candidate rows (NaN elsewhere)."""
    if len(per_query) != len(candidates):
        raise ValueError(f"scores for {len(per_query)} queries, candidate sets for {len(candidates)}")
    out = np.full((len(per_query), n), np.nan)
    for j, (s, c) in enumerate(zip(per_query, candidates)):
        s = np.asarray(s, dtype=np.float64)
        if s.shape != (len(c),):
            raise ValueError(f"query {j}: {s.shape} scores for {len(c)} candidates")
        out[j, np.asarray(c, dtype=np.int64)] = s
    return out


def check_methods(case: Case, methods: Sequence[str] | None) -> list[str]:
    """The methods asked for (None: all of the case's), each known to the case."""
    methods = case.methods if methods is None else list(methods)
    unknown = [m for m in methods if m not in case.scores]
    if unknown:
        raise ValueError(f"case {case.name!r} has no method(s) {unknown}; methods: {case.methods}")
    return methods


__all__ = ["LABEL_METRICS", "PROPONENTS", "RANDOM", "REFERENCES", "Case", "scatter", "check_methods"]
