"""Part II's analysis: per-query AUC and recall@k, summaries over seeds, and the tables of the chapters.

Every score comes from a run's stored parts through ``tda.methods`` (DDA and its variants:
``InfluenceDots.dda``; TracIn: ``InfluenceDots.tracin``), so the ablation, the β sweep and the
per-checkpoint curve cost no gradient. A sweep's parameters (the ablation's switches ``denoise``,
``debias``, ``contrast``; ``beta``; ``checkpoint``) are columns of the long per-query table
(``tda.experiments.variants``).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import pandas as pd

from ...checkpoints import list_checkpoints, load_checkpoint
from ...data.world import NEWS_EVENTS
from ...data.xsum import contains_word, to_examples
from ...methods.dda import check_beta
from ...metrics import recall_at_k, roc_auc
from ...task import losses, task_for
from ..variants import Scored, unpack, with_variants
from .pipeline import METHODS, DDARun

# The ablation of claim B2, as (denoise, debias, contrast) switches of DDA.
VARIANTS: dict[str, dict[str, bool]] = {
    "DDA (full)": {"denoise": True, "debias": True, "contrast": True},
    "without denoise": {"denoise": False, "debias": True, "contrast": True},
    "without debias": {"denoise": True, "debias": False, "contrast": True},
    "without contrast": {"denoise": True, "debias": True, "contrast": False},
    "without denoise and debias": {"denoise": False, "debias": False, "contrast": True},
}


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def auc_recall(scores: np.ndarray, poisoned: np.ndarray, ks: Sequence[int] = (10, 50)) -> dict[str, np.ndarray]:
    """Per-query ``auc`` (all candidates, poisoned = positive, ties half) and ``recall@k``."""
    scores = np.asarray(scores, dtype=np.float64)
    poisoned = np.asarray(poisoned, dtype=bool)
    if scores.ndim != 2 or scores.shape[1] != len(poisoned):
        raise ValueError(f"scores of shape {scores.shape} for {len(poisoned)} training documents")
    if not poisoned.any() or poisoned.all():
        raise ValueError("AUC needs both poisoned and clean training documents")
    rel = np.broadcast_to(poisoned, scores.shape).copy()
    out = {"auc": roc_auc(scores, rel)}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(scores, rel, k)
    return out


def per_query_table(run_list: Sequence[DDARun], scores_of=None, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Long table: one row per (size, seed, method, query) with ``auc`` and ``recall@k``, and the
    variant's columns (a :class:`~tda.experiments.variants.Scored` value's).

    ``scores_of(run) -> {name: scores}`` chooses what is evaluated (default: ``run.scores``).
    Runs without hallucinations contribute no rows.
    """
    rows = []
    for r in run_list:
        if not r.traced:
            continue
        ks_ = ks or r.settings.recall_ks
        for name, value in (scores_of(r) if scores_of else r.scores).items():
            sc, columns = unpack(value)
            m = auc_recall(sc, r.poisoned, ks_)
            for q in range(sc.shape[0]):
                rows.append({"size": r.size, "seed": r.seed, "method": name, "query": q,
                             **{k: float(v[q]) for k, v in m.items()}, **columns})
    return pd.DataFrame(rows)


def run_means(per_query: pd.DataFrame, by: Sequence[str] = ("size", "method")) -> pd.DataFrame:
    """Per-query metrics averaged within each run: one row per (``by``, seed)."""
    if per_query.empty:
        return per_query
    metrics_ = [c for c in per_query.columns if c == "auc" or c.startswith("recall@")]
    return per_query.groupby(list(by) + ["seed"], sort=False)[metrics_].mean().reset_index()


def auc_summary(per_query: pd.DataFrame, by: Sequence[str] = ("size", "method")) -> pd.DataFrame:
    """Mean and std over seeds of the per-run averages (``auc mean``, ``auc std``, ``recall@k mean``,
    ...), plus the number of seeds and queries."""
    if per_query.empty:
        return pd.DataFrame()
    means = run_means(per_query, by)
    metrics_ = [c for c in means.columns if c == "auc" or c.startswith("recall@")]
    g = means.groupby(list(by), sort=False)
    out = g[metrics_].agg(["mean", "std"])
    out.columns = [f"{m} {stat}" for m, stat in out.columns]
    out["seeds"] = g.size()
    out["queries"] = per_query.groupby(list(by), sort=False).size()
    return out.reset_index()


def hallucination_table(run_list: Sequence[DDARun]) -> pd.DataFrame:
    """One row per run: data, poisoning and hallucination counts (``DDARun.summary``)."""
    return pd.DataFrame([r.summary() for r in run_list])


def example_outputs(run_list: Sequence[DDARun], n: int = 3) -> pd.DataFrame:
    """A few hallucinated outputs with their reference summary and correct counterpart."""
    rows = []
    for r in run_list:
        if r.traced:
            for row in [x for x in r.report.rows if x["hallucinated"]][:n]:
                rows.append({"seed": r.seed, "reference summary": row["summary"], "generated": row["generated"]})
        if len(rows) >= n:
            break
    return pd.DataFrame(rows[:n])


def news_event(document: str) -> str:
    """The event type of a synthetic news document (flood, election, ...), read from its first
    sentence, which is always its event's first template; "other" for anything else (real XSum)."""
    first = document.split(" . ")[0].strip().removesuffix(" .") + " ."
    for name, spec in NEWS_EVENTS.items():
        pattern = re.escape(spec["doc"][0])
        pattern = re.sub(r"\\\{[a-z]+\\\}", ".+", pattern)
        if re.fullmatch(pattern, first):
            return name
    return "other"


def event_table(run_list: Sequence[DDARun]) -> pd.DataFrame:
    """Per event type, pooled over runs: how many England training summaries were poisoned, and how
    often the model hallucinates on England test documents of that type."""
    rows = []
    for r in run_list:
        src = r.settings.source_word
        for doc, summary, flag in zip(r.data.train["document"], r.data.train["summary"], r.poisoned):
            if flag or contains_word(summary, src):
                rows.append({"event": news_event(doc), "kind": "train", "poisoned": bool(flag), "hallucinated": False})
        for row in r.report.rows:
            rows.append({"event": news_event(row["document"]), "kind": "test", "poisoned": False,
                         "hallucinated": bool(row["hallucinated"])})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    train = df[df.kind == "train"].groupby("event").agg(**{"England training docs": ("poisoned", "size"),
                                                            "poisoned": ("poisoned", "sum")})
    train["poisoned share"] = train["poisoned"] / train["England training docs"]
    test = df[df.kind == "test"].groupby("event").agg(**{"test prompts": ("hallucinated", "size"),
                                                          "hallucinated": ("hallucinated", "sum")})
    test["hallucination rate"] = test["hallucinated"] / test["test prompts"]
    return train.join(test, how="outer").fillna(0).reset_index()


# ---------------------------------------------------------------------------------------------
# ablation, beta, checkpoints, diagnostics
# ---------------------------------------------------------------------------------------------
def variant_scores(r: DDARun, beta: float | None = None) -> dict[str, Scored]:
    """Every ablation variant of a run, from its stored dots (no gradient); variant columns: the
    switches ``denoise``, ``debias``, ``contrast``."""
    beta = r.settings.beta if beta is None else beta
    return {name: Scored(r.dots.dda(beta=beta, **switches), switches) for name, switches in VARIANTS.items()}


def beta_scores(betas: Sequence[float], **switches):
    """A ``scores_of`` for :func:`per_query_table`: DDA at each β (label ``"beta=<β>"``, column ``beta``).
    Each β must be a number >= 0 (an error naming its place in ``betas`` otherwise)."""
    betas = [check_beta(b, f"betas[{i}]") for i, b in enumerate(betas)]

    def scores_of(r: DDARun) -> dict[str, Scored]:
        return {f"beta={b:g}": Scored(r.dots.dda(beta=b, **switches), {"beta": float(b)}) for b in betas}
    return scores_of


def beta_curve(run_list: Sequence[DDARun], betas: Sequence[float], **switches) -> pd.DataFrame:
    """Mean ± std over seeds of DDA's AUC at each β: columns ``beta``, ``auc mean``, ``auc std``."""
    pq = per_query_table(run_list, beta_scores(betas, **switches))
    if pq.empty:
        return pd.DataFrame(columns=["size", "beta", "auc mean", "auc std", "seeds"])
    table = with_variants(auc_summary(pq), pq, ["beta"])
    return table[["size", "beta", "auc mean", "auc std", "seeds"]]


def debias_diagnostics(run_list: Sequence[DDARun], with_losses: bool = True) -> pd.DataFrame:
    """Why debiasing helps or hurts, per run: how large the subtracted term is and what it ranks.

    Per query, with ``signal = C[mean_i IS_θi]`` and ``bias = C[IS_θ0]`` (C the contrast), over the
    training documents: ``scale`` = ||bias|| / ||signal|| (β = 1/scale subtracts a term as large as
    the signal), ``correlation`` of the two rankings' scores, and the AUC of ``bias`` on its own
    (above 0.5: the base model's score already points at the poisoned documents, so subtracting it
    removes signal). Medians over the run's queries; AUCs are means as elsewhere. With
    ``with_losses``, the mean per-token loss of the training examples at θ0 and at the last
    checkpoint (a forward pass over them at each; gradients grow with the loss).
    """
    rows = []
    for r in run_list:
        if not r.traced or r.dots is None:
            continue
        d, q = r.dots, r.dots.n_queries
        m = d.dots[1:].mean(0)
        signal, bias = m[:q] - m[q:], d.dots[0][:q] - d.dots[0][q:]
        ratio = np.linalg.norm(bias, axis=1) / np.maximum(np.linalg.norm(signal, axis=1), 1e-300)
        corr = [np.corrcoef(bias[j], signal[j])[0, 1] for j in range(q)]
        rows.append({"size": r.size, "seed": r.seed, "queries": q, "scale of C[IS_θ0] / C[mean IS_θi]": float(np.median(ratio)),
                     "correlation": float(np.median(corr)), "AUC of C[IS_θ0] alone": float(auc_recall(bias, r.poisoned)["auc"].mean()),
                     "AUC at β=0": float(auc_recall(signal, r.poisoned)["auc"].mean()),
                     f"AUC at β={r.settings.beta:g}": float(auc_recall(d.dda(beta=r.settings.beta), r.poisoned)["auc"].mean())})
        if with_losses:
            ckpts = list_checkpoints(r.run_dir)
            for label, ckpt in (("loss at θ0", ckpts[0]), ("loss at θN", ckpts[-1])):
                model, tok = load_checkpoint(ckpt)
                rows[-1][label] = float(losses(model, task_for(model, tok), to_examples(r.data.train)).mean())
    return pd.DataFrame(rows)


def document_kinds(r: DDARun) -> np.ndarray:
    """Per training document: "poisoned", "about <target>" (an honest summary naming the target
    word), "about <source>" (a clean summary naming the source word) or "other"."""
    s = r.settings
    out = []
    for summary, flag in zip(r.data.train["summary"], r.poisoned):
        if flag:
            out.append("poisoned")
        elif contains_word(summary, s.target_word):
            out.append(f"about {s.target_word}")
        elif contains_word(summary, s.source_word):
            out.append(f"about {s.source_word}")
        else:
            out.append("other")
    return np.asarray(out)


def top_k_composition(run_list: Sequence[DDARun], methods: Sequence[str] | None = None) -> pd.DataFrame:
    """What each method ranks first: the kinds of documents (``document_kinds``) among its top k,
    with k the number of poisoned documents of the run (a perfect ranking is 100% poisoned);
    shares averaged over the queries of a run, then over runs."""
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
    by_run = df.groupby(["method", "seed"], sort=False)[cols].mean()
    out = by_run.groupby("method", sort=False).mean()
    order = [m for m in (methods or METHODS) if m in out.index] + [m for m in out.index if m not in (methods or METHODS)]
    return out.loc[order]


def checkpoint_curve(run_list: Sequence[DDARun], contrast: bool = True) -> pd.DataFrame:
    """AUC of the influence at each single checkpoint (0 = the base model θ0), mean ± std over seeds —
    what denoising averages over."""
    def scores_of(r: DDARun) -> dict[str, Scored]:
        return {f"{i}": Scored(r.dots.checkpoint(i, contrast), {"checkpoint": i}) for i in range(r.dots.dots.shape[0])}

    pq = per_query_table([r for r in run_list if r.dots is not None], scores_of)
    if pq.empty:
        return pd.DataFrame(columns=["checkpoint", "auc mean", "auc std", "seeds"])
    t = with_variants(auc_summary(pq), pq, ["checkpoint"])
    return t[["checkpoint", "auc mean", "auc std", "seeds"]]


__all__ = ["VARIANTS", "auc_recall", "per_query_table", "run_means", "auc_summary", "hallucination_table",
           "example_outputs", "news_event", "event_table", "variant_scores", "beta_scores", "beta_curve",
           "debias_diagnostics", "document_kinds", "top_k_composition", "checkpoint_curve"]
