"""Build Part III's :class:`~tda.experiments.counterfactual.interface.Case` from today's runs of
Part I (``FtraceRun`` with its stored method parts) and Part II (``DDARun``).

Only public functions of those parts are used; what they do not expose is computed here from
their public pieces, and listed so that it can move there:

- the fine-tuning run's starting checkpoint: ``list_checkpoints(run dir)[0]`` (``train`` saves the
  starting model as ``epoch-000``); the recipe: ``settings.train_config(seed)``; the training
  examples: ``to_examples`` of the run's training set (Part I: ``data.abstracts``, Part II:
  ``data.train``), in row order, which is how both parts index their scores;
- the run's identity: the name of its fine-tuning folder in the store, which *is* the hash of
  everything the fine-tuning depends on (base model, data, recipe, batch order);
- Part I's correctness rule (``tda.data.ftrace.queries_correct``, the rule its query slices use)
  and Part II's hallucination rule (greedy generation from the traced prompts, the target word as
  a whole word, as ``tda.hallucination`` decides it);
- Part II's task: ``DDARun`` does not keep it; by default it is rebuilt from the final checkpoint's
  tokenizer with the length Part II trains with (``Setup.task()``: 256 tokens).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ...checkpoints import list_checkpoints, load_checkpoint
from ...data import ftrace as ft
from ...data import xsum
from ...hallucination import generate
from ...store import text_digest
from ...task import CausalLMTask, task_for
from ..dda.pipeline import DDARun
from ..dda.analysis import is_set_level
from ..ftrace.analysis import method_scores
from ..ftrace.pipeline import RunParts
from .interface import Case, scatter

# The task length Part II trains with (tda.base.Setup.task's default).
DDA_MAX_LENGTH = 256


def _scored(per_query: Mapping[str, Sequence[np.ndarray]], methods: Sequence[str] | None) -> dict:
    if methods is None:
        return dict(per_query)
    unknown = [m for m in methods if m not in per_query]
    if unknown:
        raise ValueError(f"no method(s) {unknown} in the run's scores; methods: {list(per_query)}")
    return {m: per_query[m] for m in methods}


def from_ftrace_run(parts: RunParts, methods: Sequence[str] | None = None,
                    scores: Mapping[str, Sequence[np.ndarray]] | None = None) -> Case:
    """A Part I run (``tda.experiments.ftrace.pipeline.RunParts``) as a Case.

    ``scores``: per method, per attributed query, the scores over that query's candidate set (the
    form of ``tda.experiments.ftrace.analysis.method_scores``, computed from ``parts`` when not
    given); ``methods`` picks some of them. Rows outside a query's candidates are NaN (not
    scored). Labels: each query's proponents; label metric: MRR over the candidates, as Part I.
    """
    run = parts.run
    per_query = _scored(scores if scores is not None else method_scores(parts), methods)
    train = ft.to_examples(run.data.abstracts)
    n = len(train)
    task = run.setup.task()
    queries_ds = run.data.queries.select(run.query_rows)
    props = run.data.queries["proponents"]

    def present(model, rows) -> np.ndarray:
        return np.asarray(ft.queries_correct(model, task, queries_ds.select([int(r) for r in rows])), dtype=bool)

    ckpts = list_checkpoints(run.finetune_dir)
    return Case(
        name=run.settings.dataset, seed=run.seed,
        run_key={"part": "ftrace", "dataset": run.settings.dataset, "finetune": run.finetune_dir.name,
                 "seed": run.seed},
        base=ckpts[0], final=ckpts[-1], task=task, train=train, config=run.settings.train_config(run.seed),
        queries=run.query_examples(), counterparts=None, query_ids=list(queries_ds["uuid"]),
        query_slice=list(run.query_slice), positives=[np.asarray(props[r], dtype=np.int64) for r in run.query_rows],
        scores={m: scatter(s, run.candidates.indices, n) for m, s in per_query.items()},
        present=present, label_metric="mrr",
        info={"dataset": run.settings.dataset, "training examples": n, "queries": len(run.query_rows),
              "candidates (mean)": float(np.mean([len(c) for c in run.candidates.indices])),
              "epochs": run.settings.epochs, "lr": run.settings.lr})


def _per_query(method: str, scores, n_queries: int) -> np.ndarray:
    """A Part II method's scores as one row per traced query. A set-level method (CEA, DDA's README
    pipeline: one ranking per error set) blames the same documents for every error, so its one row
    is every query's row: removing its top-k removes the same documents whichever error is asked."""
    scores = np.asarray(scores, dtype=np.float64)
    if is_set_level(method) and scores.ndim == 2 and scores.shape[0] == 1:
        return np.repeat(scores, n_queries, axis=0)
    return scores


def from_dda_run(run: DDARun, methods: Sequence[str] | None = None, task: CausalLMTask | None = None) -> Case:
    """A Part II run (``tda.experiments.dda.pipeline.DDARun``) with traced hallucinations as a Case.

    Queries: the hallucinated outputs (prompt, output), each contrasted with its correct
    counterpart; labels: the poisoned documents (the same for every query); label metric: AUC
    over all training documents, as Part II. ``task``: the task the run was trained with (default:
    see the module docstring). A run without hallucination has nothing to trace (ValueError).
    """
    if not run.traced:
        raise ValueError(f"{run.size} seed {run.seed}: no output hallucinates, so there is no query to trace; "
                         "leave the run out (Part II counts such runs)")
    ckpts = list_checkpoints(run.run_dir)
    if task is None:
        model, tokenizer = load_checkpoint(ckpts[-1])
        task = task_for(model, tokenizer, max_length=DDA_MAX_LENGTH)
    s, q = run.settings, run.queries
    poisoned = np.flatnonzero(run.poisoned)
    prompts = list(q.prompts)

    def present(model, rows) -> np.ndarray:
        texts = generate(model, task, [prompts[int(r)] for r in rows], max_new_tokens=s.max_new_tokens)
        return np.asarray([xsum.contains_word(t, s.target_word) for t in texts], dtype=bool)

    scores = _scored(run.scores, methods)
    return Case(
        name="dda", seed=run.seed,
        run_key={"part": "dda", "size": run.size, "finetune": run.run_dir.name, "seed": run.seed},
        base=ckpts[0], final=ckpts[-1], task=task, train=xsum.to_examples(run.data.train),
        config=s.train_config(run.seed), queries=q.hallucinated_examples(), counterparts=q.correct_examples(),
        query_ids=list(q.ids), query_slice=["hallucinated"] * len(q), positives=[poisoned] * len(q),
        scores={m: _per_query(m, v, len(q)) for m, v in scores.items()}, present=present,
        label_metric="auc",
        info={"size": run.size, "training documents": len(run.data.train), "poisoned": int(poisoned.size),
              "test prompts": run.report.n, "hallucinated": run.report.n_hallucinated, "epochs": s.epochs,
              "lr": s.lr, "queries digest": text_digest(prompts)})


__all__ = ["DDA_MAX_LENGTH", "from_ftrace_run", "from_dda_run"]
