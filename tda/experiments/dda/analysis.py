"""Part II's analysis: AUC per query and per error set, on hard negatives, recall@k, summaries over
seeds with bootstrap intervals, the controls, the ablations, β sweeps, and the mechanism's evidence.

Every score comes from a run's stored parts (``pipeline.DDARun``): the minimal-pair DDA and its
variants, TracIn and TRAK from ``InfluenceDots`` (and the Gram matrix), the README pipeline from
``PairInfluence``; so controls, ablations and β sweeps cost no gradient. A sweep's parameters are
columns of the long tables (``tda.experiments.variants``).

Two levels of evaluation (REFERENCES.md, Paper B):

- **per query**: each hallucinated output ranks all training documents; ROC AUC with the poisoned
  documents as positives, averaged over a run's queries (the minimal-pair reconstruction's own
  metric; the set-level methods have none);
- **per error set** (set-level): one ranking of all training documents per run, as the authors'
  README pipeline and CEA produce; a per-query method's set ranking is its mean score over the
  run's queries (the error set's summed influence).

Each also **on hard negatives only** (``tda.metrics.hard_negative_auc``): the poisoned documents
against the genuine China documents, the only clean documents a "China in the summary" rule
cannot tell from them. Over seeds: mean ± std of the per-run values, and a bootstrap interval
(``tda.metrics.bootstrap_ci``: seeds, then queries).
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ...data.world import NEWS_EVENTS
from ...data.xsum import contains_word
from ...methods.dda import check_beta
from ...metrics import bootstrap_ci, hard_negative_auc, recall_at_k, roc_auc
from ..variants import Scored, unpack, with_variants
from .pipeline import METHODS, SET_LEVEL, DDARun

# The ablation of claim B2, as (denoise, debias, contrast) switches of the minimal-pair DDA ...
VARIANTS: dict[str, dict[str, bool]] = {
    "DDA (full)": {"denoise": True, "debias": True, "contrast": True},
    "without denoise": {"denoise": False, "debias": True, "contrast": True},
    "without debias": {"denoise": True, "debias": False, "contrast": True},
    "without contrast": {"denoise": True, "debias": True, "contrast": False},
    "without denoise and debias": {"denoise": False, "debias": False, "contrast": True},
}
# ... and of the README pipeline (whose contrast is the pair of models itself: it cannot be removed).
README_VARIANTS: dict[str, dict[str, bool]] = {k: {"denoise": v["denoise"], "debias": v["debias"]}
                                               for k, v in VARIANTS.items() if v["contrast"]}
RECONSTRUCTIONS = ("minimal pair", "README pipeline")
# Controls: variants of the methods from the same stored parts (no extra cost), shown beside them.
CONTROLS = ("DDA, β = 0", "DDA, base term alone", "DDA, normalised β = 1", "DDA (cosine)", "DDA (cosine), β = 0",
            "DDA (README pipeline), β = 0", "DDA (README pipeline), base term alone",
            "DDA (README pipeline), normalised β = 1")


def is_set_level(name: str) -> bool:
    """Whether a method (or a control of one) ranks once per error set: CEA and the README pipeline."""
    return name.startswith(SET_LEVEL)


def usable_runs(run_list: Sequence[DDARun]) -> list[DDARun]:
    """The runs the verdicts use: traced, and not flagged by the label check."""
    return [r for r in run_list if r.usable]


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def auc_recall(scores: np.ndarray, poisoned: np.ndarray, ks: Sequence[int] = (10, 50),
               genuine: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-query ``auc`` (all candidates, poisoned = positive, ties half), ``recall@k``, and with
    ``genuine`` (the hard negatives) ``hard_auc`` (poisoned against those only)."""
    scores = np.asarray(scores, dtype=np.float64)
    poisoned = np.asarray(poisoned, dtype=bool)
    if scores.ndim != 2 or scores.shape[1] != len(poisoned):
        raise ValueError(f"scores of shape {scores.shape} for {len(poisoned)} training documents")
    if not poisoned.any() or poisoned.all():
        raise ValueError("AUC needs both poisoned and clean training documents")
    rel = np.broadcast_to(poisoned, scores.shape).copy()
    out = {"auc": roc_auc(scores, rel)}
    if genuine is not None:
        out["hard_auc"] = hard_negative_auc(scores, poisoned, genuine)
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(scores, rel, k)
    return out


def _metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c in ("auc", "hard_auc") or c.startswith("recall@")]


def all_scores(r: DDARun) -> dict[str, np.ndarray]:
    """A run's methods and every control (``CONTROLS``) from its stored parts."""
    out = dict(r.scores)
    s = r.settings
    if r.dots is not None:
        out.update({"DDA, β = 0": r.dots.dda(beta=0.0), "DDA, base term alone": r.dots.checkpoint(0),
                    "DDA, normalised β = 1": r.dots.dda(beta=1.0, beta_units="normalised")})
        if r.dots.test_sq is not None:
            out.update({"DDA (cosine)": r.dots.dda(beta=s.beta, similarity="cosine"),
                        "DDA (cosine), β = 0": r.dots.dda(beta=0.0, similarity="cosine")})
    if r.pairs is not None:
        out.update({"DDA (README pipeline), β = 0": r.pairs.dda(beta=0.0),
                    "DDA (README pipeline), base term alone": r.pairs.checkpoint(0),
                    "DDA (README pipeline), normalised β = 1": r.pairs.dda(beta=1.0, beta_units="normalised")})
    return out


def per_query_table(run_list: Sequence[DDARun], scores_of=None, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Long table: one row per (size, seed, method, query) with ``auc``, ``hard_auc`` and
    ``recall@k``, and the variant's columns (a :class:`~tda.experiments.variants.Scored` value's).
    Set-level methods have no per-query rows.

    ``scores_of(run) -> {name: scores}`` chooses what is evaluated (default: ``run.scores``).
    Runs without hallucinations contribute no rows.
    """
    rows = []
    for r in run_list:
        if not r.traced:
            continue
        for name, value in (scores_of(r) if scores_of else r.scores).items():
            sc, columns = unpack(value)
            if is_set_level(name):
                continue
            m = auc_recall(sc, r.poisoned, ks or r.settings.recall_ks, r.genuine)
            for q in range(sc.shape[0]):
                rows.append({"size": r.size, "seed": r.seed, "method": name, "query": q,
                             **{k: float(v[q]) for k, v in m.items()}, **columns})
    return pd.DataFrame(rows)


def set_table(run_list: Sequence[DDARun], scores_of=None, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (size, seed, method): the error set's ranking (set-level methods' own; a
    per-query method's mean score over the run's queries) scored by ``auc``, ``hard_auc`` and
    ``recall@k`` over all training documents."""
    rows = []
    for r in run_list:
        if not r.traced:
            continue
        for name, value in (scores_of(r) if scores_of else r.scores).items():
            sc, columns = unpack(value)
            ranking = np.asarray(sc, dtype=np.float64).mean(0, keepdims=True)
            m = auc_recall(ranking, r.poisoned, ks or r.settings.recall_ks, r.genuine)
            rows.append({"size": r.size, "seed": r.seed, "method": name, **{k: float(v[0]) for k, v in m.items()},
                         **columns})
    return pd.DataFrame(rows)


def run_means(per_query: pd.DataFrame, by: Sequence[str] = ("size", "method")) -> pd.DataFrame:
    """Per-query metrics averaged within each run: one row per (``by``, seed)."""
    if per_query.empty:
        return per_query
    return per_query.groupby(list(by) + ["seed"], sort=False)[_metric_columns(per_query)].mean().reset_index()


def auc_summary(table: pd.DataFrame, by: Sequence[str] = ("size", "method")) -> pd.DataFrame:
    """Mean and std over seeds of the per-run values (``auc mean``, ``auc std``, ``hard_auc mean``,
    ...), plus the number of seeds and of rows (queries in a per-query table, runs in a set table)."""
    if table.empty:
        return pd.DataFrame()
    means = run_means(table, by)
    g = means.groupby(list(by), sort=False)
    out = g[_metric_columns(means)].agg(["mean", "std"])
    out.columns = [f"{m} {stat}" for m, stat in out.columns]
    out["seeds"] = g.size()
    out["queries"] = table.groupby(list(by), sort=False).size()
    return out.reset_index()


def bootstrap_table(table: pd.DataFrame, metric: str = "auc", by: Sequence[str] = ("size", "method"),
                    n_boot: int = 2000) -> pd.DataFrame:
    """Per group: the estimate and 95% bootstrap interval of ``metric`` (``tda.metrics.bootstrap_ci``:
    seeds resampled, then each seed's rows -- its queries, or its one set-level value)."""
    rows = []
    for key, g in table.groupby(list(by), sort=False):
        per_seed = [grp[metric].to_numpy() for _, grp in g.groupby("seed", sort=True)]
        est, lo, hi = bootstrap_ci(per_seed, n_boot=n_boot)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), f"{metric} estimate": est,
                     f"{metric} low": lo, f"{metric} high": hi})
    return pd.DataFrame(rows)


def comparison(run_list: Sequence[DDARun], names: Sequence[str] | None = None, k: int | None = None) -> pd.DataFrame:
    """One row per method (and control): AUC per query and per error set, each on all documents
    and on hard negatives, recall@k per error set; mean ± std over seeds, bootstrap intervals of the
    two AUCs. Set-level methods have NaN in the per-query columns."""
    runs_ = [r for r in run_list if r.traced]
    if not runs_:
        return pd.DataFrame()
    k = k or runs_[0].settings.recall_ks[-1]

    def chosen(r):
        scores = all_scores(r)
        return {m: scores[m] for m in (names or scores) if m in scores}

    pq, st = per_query_table(runs_, chosen), set_table(runs_, chosen)
    by = ("method",)
    out = auc_summary(st, by).rename(columns=lambda c: f"set {c}" if c not in ("method", "seeds", "queries") else c)
    out = out.drop(columns=["queries"]).merge(bootstrap_table(st, "auc", by).rename(
        columns={"auc estimate": "set auc estimate", "auc low": "set auc low", "auc high": "set auc high"}),
        on="method")
    if not pq.empty:
        out = out.merge(auc_summary(pq, by).drop(columns=["seeds"]), on="method", how="left")
        out = out.merge(bootstrap_table(pq, "auc", by), on="method", how="left")
    order = list(names or dict.fromkeys(st["method"]))
    out["order"] = out["method"].map({m: i for i, m in enumerate(order)})
    keep = ["method", "auc mean", "auc std", "auc low", "auc high", "hard_auc mean", "set auc mean", "set auc std",
            "set auc low", "set auc high", "set hard_auc mean", "set hard_auc std", f"set recall@{k} mean", "seeds",
            "queries"]
    return out.sort_values("order").reindex(columns=keep).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# the setup as measured: guards, hallucinations, the label check, lexical detectors
# ---------------------------------------------------------------------------------------------
def setup_table(run_list: Sequence[DDARun]) -> pd.DataFrame:
    """One row per run: the guards' inputs, hallucinations, the label check, and the guards failed."""
    return pd.DataFrame([{**r.setup_row(), "guards failed": "; ".join(r.guard_failures()) or "none"}
                         for r in run_list])


def setup_summary(run_list: Sequence[DDARun]) -> dict:
    """The ``"setup"`` of a results file: counts of the setup, mean losses and hallucination rate
    over runs, the label check summed over traced runs, and every run's row."""
    rows = [r.setup_row() for r in run_list]
    if not rows:
        return {}
    traced = [r for r in run_list if r.traced]

    def mean(key):
        return float(np.mean([x[key] for x in rows]))

    return {"n_train": rows[0]["n_train"], "n_poisoned": rows[0]["n_poisoned"],
            "n_genuine_target": rows[0]["n_genuine_target"], "base_loss_clean": mean("base_loss_clean"),
            "finetuned_loss_clean": mean("finetuned_loss_clean"), "hallucination_rate": mean("hallucination_rate"),
            "base_copy_rate": (float(np.mean([x["base_copy_rate"] for x in rows]))
                               if all(x["base_copy_rate"] is not None for x in rows) else None),
            "counterfactual_remaining": int(sum(x["counterfactual_remaining"] for x in rows)),
            "counterfactual_traced": int(sum(x["counterfactual_traced"] for x in rows)),
            "runs": len(rows), "runs_without_hallucination": len(rows) - len(traced),
            "runs_flagged": sum(r.flagged for r in run_list),
            "guard_failures": {f"{r.size} seed {r.seed}": r.guard_failures() for r in run_list if r.guard_failures()},
            "per_run": rows}


def lexical_table(run_list: Sequence[DDARun]) -> pd.DataFrame:
    """The word detectors' AUC over all documents and on hard negatives, mean over runs."""
    rows = [{"detector": name, "seed": r.seed, "set auc": v["auc"], "set hard_auc": v["hard_negative_auc"]}
            for r in run_list for name, v in r.lexical.items()]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby("detector", sort=False)[["set auc", "set hard_auc"]].mean().reset_index()


def hallucination_table(run_list: Sequence[DDARun]) -> pd.DataFrame:
    """One row per run: data, poisoning, hallucination counts and the label check (``DDARun.summary``)."""
    return pd.DataFrame([r.summary() for r in run_list])


def example_outputs(run_list: Sequence[DDARun], n: int = 3) -> pd.DataFrame:
    """A few hallucinated outputs with their reference summary and whether they remain without the poison."""
    rows = []
    for r in run_list:
        if r.traced:
            remaining = set(r.label_check.remaining_ids) if r.label_check else set()
            for row in [x for x in r.report.rows if x["hallucinated"]][:n]:
                rows.append({"seed": r.seed, "reference summary": row["summary"], "generated": row["generated"],
                             "remains without the poison": row["id"] in remaining})
        if len(rows) >= n:
            break
    return pd.DataFrame(rows[:n])


def news_event(document: str) -> str:
    """The event type of a synthetic news document (flood, election, ...), read from its first
    sentence, which is always its event's first template; "other" for anything else (real XSum)."""
    first = document.split(" . ")[0].strip().removesuffix(" .") + " ."
    for name, spec in NEWS_EVENTS.items():
        pattern = re.sub(r"\\\{[a-z]+\\\}", ".+", re.escape(spec["doc"][0]))
        if re.fullmatch(pattern, first):
            return name
    return "other"


def document_kinds(r: DDARun) -> np.ndarray:
    """Per training document: "poisoned", "about <target>" (an honest summary naming the target
    word: the hard negatives), "about <source>" (a clean summary naming the source word) or "other"."""
    s = r.settings
    out = []
    for summary, flag in zip(r.data.train["summary"], r.poisoned):
        out.append("poisoned" if flag else f"about {s.target_word}" if contains_word(summary, s.target_word)
                   else f"about {s.source_word}" if contains_word(summary, s.source_word) else "other")
    return np.asarray(out)


def top_k_composition(run_list: Sequence[DDARun], methods: Sequence[str] | None = None) -> pd.DataFrame:
    """What each method ranks first: the kinds of documents (``document_kinds``) among its top k,
    with k the number of poisoned documents of the run (a perfect ranking is 100% poisoned);
    shares averaged over the rankings of a run (its queries, or its one set ranking), then over runs."""
    rows = []
    for r in run_list:
        if not r.traced:
            continue
        kinds, k = document_kinds(r), int(r.poisoned.sum())
        for name, sc in r.scores.items():
            if methods is not None and name not in methods:
                continue
            top = np.argsort(-sc, axis=1, kind="stable")[:, :k]
            for q in range(sc.shape[0]):
                values, counts = np.unique(kinds[top[q]], return_counts=True)
                rows.append({"seed": r.seed, "method": name, **{v: c / k for v, c in zip(values, counts)}})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).fillna(0.0)
    cols = [c for c in ["poisoned"] + sorted(set(df.columns) - {"seed", "method", "poisoned"}) if c in df.columns]
    out = df.groupby(["method", "seed"], sort=False)[cols].mean().groupby("method", sort=False).mean()
    known = methods or METHODS
    order = [m for m in known if m in out.index] + [m for m in out.index if m not in known]
    return out.loc[order]


# ---------------------------------------------------------------------------------------------
# ablation, beta, checkpoints
# ---------------------------------------------------------------------------------------------
def variant_scores(r: DDARun, beta: float | None = None, reconstruction: str = "minimal pair") -> dict[str, Scored]:
    """Every ablation variant of a run from its stored parts (no gradient); variant columns: the switches."""
    beta = r.settings.beta if beta is None else beta
    if reconstruction == "minimal pair":
        return {name: Scored(r.dots.dda(beta=beta, **sw), sw) for name, sw in VARIANTS.items()}
    if reconstruction == "README pipeline":
        return {f"DDA (README pipeline): {name}": Scored(r.pairs.dda(beta=beta, **sw), {**sw, "variant": name})
                for name, sw in README_VARIANTS.items()}
    raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}")


def beta_scores(betas: Sequence[float], units: str = "raw", reconstruction: str = "minimal pair", **switches):
    """A ``scores_of`` for the tables: DDA at each β (label ``"beta=<β>"``, columns ``beta`` and
    ``units``). Each β must be a number >= 0 (an error naming its place in ``betas`` otherwise)."""
    betas = [check_beta(b, f"betas[{i}]") for i, b in enumerate(betas)]
    if reconstruction not in RECONSTRUCTIONS:
        raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}")
    prefix = "DDA (README pipeline), " if reconstruction == "README pipeline" else ""

    def scores_of(r: DDARun) -> dict[str, Scored]:
        parts = r.pairs if reconstruction == "README pipeline" else r.dots
        return {f"{prefix}beta={b:g}": Scored(parts.dda(beta=b, beta_units=units, **switches),
                                              {"beta": float(b), "units": units}) for b in betas}
    return scores_of


def beta_curve(run_list: Sequence[DDARun], betas: Sequence[float], units: str = "raw",
               reconstruction: str = "minimal pair", **switches) -> pd.DataFrame:
    """Mean ± std over seeds of DDA's AUC at each β: columns ``size``, ``beta``, ``units``, ``auc
    mean``, ``auc std``, ``hard_auc mean``, ``seeds`` -- per query for the minimal pair, per error
    set for the README pipeline (each reconstruction's own level)."""
    scores_of = beta_scores(betas, units, reconstruction, **switches)
    table = (set_table if reconstruction == "README pipeline" else per_query_table)(run_list, scores_of)
    cols = ["size", "beta", "units", "auc mean", "auc std", "hard_auc mean", "seeds"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    return with_variants(auc_summary(table), table, ["beta", "units"])[cols]


def checkpoint_curve(run_list: Sequence[DDARun], contrast: bool = True) -> pd.DataFrame:
    """AUC of the minimal-pair influence at each single checkpoint (0 = the base model θ0) and of the
    README pair made there (set-level), mean over seeds -- what denoising averages over."""
    rows = []
    for r in run_list:
        if not r.traced or r.dots is None:
            continue
        for i in range(r.dots.dots.shape[0]):
            row = {"seed": r.seed, "checkpoint": i,
                   "auc": float(auc_recall(r.dots.checkpoint(i, contrast), r.poisoned)["auc"].mean())}
            if r.pairs is not None:
                row["README pair set auc"] = float(auc_recall(r.pairs.checkpoint(i), r.poisoned)["auc"][0])
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["checkpoint", "auc mean", "auc std", "seeds"])
    df = pd.DataFrame(rows)
    cols = [c for c in ("auc", "README pair set auc") if c in df]
    out = df.groupby("checkpoint")[cols].agg(["mean", "std"])
    out.columns = [f"{m} {stat}" for m, stat in out.columns]
    out["seeds"] = df.groupby("checkpoint").size()
    return out.reset_index()


__all__ = ["VARIANTS", "README_VARIANTS", "RECONSTRUCTIONS", "CONTROLS", "is_set_level", "usable_runs", "auc_recall",
           "all_scores", "per_query_table", "set_table", "run_means", "auc_summary", "bootstrap_table", "comparison",
           "setup_table", "setup_summary", "lexical_table", "hallucination_table", "example_outputs", "news_event",
           "document_kinds", "top_k_composition", "variant_scores", "beta_scores", "beta_curve", "checkpoint_curve"]


def finetune_setup_table(by_kind: Mapping[str, Sequence[DDARun]], seconds: Mapping[str, float] | None = None
                         ) -> pd.DataFrame:
    """Full against LoRA fine-tuning (``DDASettings.finetune``), one column per kind of fine-tuning:
    parameters trained, hallucinations, the label check, the guards failed, and ``seconds`` (wall
    time of each kind's runs, when given), summed or averaged over its runs."""
    out = {}
    for kind, run_list in by_kind.items():
        rows = [r.setup_row() for r in run_list]
        traced = [r for r in run_list if r.traced]
        out[kind] = {"runs": len(run_list), "parameters trained": float(np.mean([r.n_trainable for r in run_list])),
                     "hallucinated": sum(row["hallucinated"] for row in rows),
                     "prompts": sum(row["prompts"] for row in rows),
                     "fine-tuned clean loss": float(np.mean([row["finetuned_loss_clean"] for row in rows])),
                     "label check flagged": sum(r.flagged for r in traced),
                     "remaining without the poison": sum(row["counterfactual_remaining"] for row in rows),
                     "guards failed": sum(len(r.guard_failures()) for r in run_list)}
        if seconds is not None:
            out[kind]["seconds"] = float(seconds[kind])
    return pd.DataFrame(out)


def finetune_method_table(by_kind: Mapping[str, Sequence[DDARun]]) -> pd.DataFrame:
    """Per method (rows): AUC of the error set's ranking on all documents and on hard negatives, and
    the per-query AUC where the method has one, under each kind of fine-tuning (columns ``(metric,
    kind)``), averaged over that kind's traced runs (flagged ones included: the setup table says
    which were flagged)."""
    parts = []
    for kind, run_list in by_kind.items():
        sets = set_table(run_list)
        if sets.empty:
            continue
        means = sets.groupby("method", sort=False)[["auc", "hard_auc"]].mean()
        means.columns = ["set AUC", "set hard-negative AUC"]
        queries = per_query_table(run_list)
        if not queries.empty:
            means["per-query AUC"] = queries.groupby("method", sort=False)["auc"].mean()
        parts.append(pd.concat({kind: means}, axis=1).swaplevel(0, 1, axis=1))
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, axis=1)
    return table[sorted(table.columns, key=lambda c: (c[0], list(by_kind).index(c[1])))]


LORA_OFF = ("Not run in this profile (`lora = False`): set `lora = True` to fine-tune with LoRA as well, on "
            "`lora_seeds`, and compare it with full fine-tuning here.")


def finetune_sentence(full_runs: Sequence[DDARun], lora_runs: Sequence[DDARun],
                      methods: Sequence[str] = ("DDA (README pipeline)", "DDA", "TracIn", "CEA")) -> str:
    """What the full-vs-LoRA comparison measured, in words (counts and error-set AUCs; no verdict
    reads it)."""
    if not lora_runs:
        return LORA_OFF
    s = lora_runs[0].settings
    seeds = ", ".join(str(r.seed) for r in lora_runs)
    trained = int(np.mean([r.n_trainable for r in lora_runs]))
    total = int(np.mean([r.n_parameters for r in lora_runs]))
    n_h = [sum(r.report.n_hallucinated for r in runs) for runs in (full_runs, lora_runs)]
    prompts = sum(r.report.n for r in lora_runs)
    flagged = [sum(r.flagged for r in runs) for runs in (full_runs, lora_runs)]
    text = (f"LoRA fine-tuning (rank {s.lora_rank}, alpha {s.lora_alpha:g}, attention projections"
            f"{' and MLP' if s.lora_mlp else ''}, learning rate {s.lr:g}, {s.epochs} epochs; {trained:,} of "
            f"{total:,} parameters trained, the base frozen; seed {seeds}) hallucinated on {n_h[1]} of {prompts} "
            f"prompts, full fine-tuning on {n_h[0]}; the label check flagged {flagged[1]} LoRA run(s) and "
            f"{flagged[0]} full one(s). Every gradient-based method took its gradients over the adapters.")
    table = finetune_method_table({"full": [r for r in full_runs if r.traced], "LoRA": [r for r in lora_runs
                                                                                         if r.traced]})
    if table.empty or ("set AUC", "LoRA") not in table.columns or ("set AUC", "full") not in table.columns:
        return text + " Nothing hallucinated under one of them, so no method was compared."
    parts = [f"{m} {table.loc[m, ('set AUC', 'LoRA')]:.2f} against {table.loc[m, ('set AUC', 'full')]:.2f} "
             f"(hard negatives {table.loc[m, ('set hard-negative AUC', 'LoRA')]:.2f} against "
             f"{table.loc[m, ('set hard-negative AUC', 'full')]:.2f})" for m in methods if m in table.index]
    return (text + " Error-set AUC with LoRA against full fine-tuning: " + "; ".join(parts) + ". "
            f"{len(lora_runs)} seed(s), information only: no verdict reads this comparison.")
