"""Why debias does what it does here: the evidence, computed from the runs' stored parts.

Issue 12 names two effects that would make DDA's debias term remove signal rather than bias; this
module measures both in every run, so the chapters show what the runs show rather than a story:

1. **The base model's contrastive term already points at the poisoned documents.** Before it saw
   any poisoned summary, the base model θ0's contrastive influence C[IS_θ0] (and the README pair
   made at θ0) ranks the training documents; if that ranking puts the poisoned documents first
   (AUC above 0.5, on all documents and on the hard negatives), subtracting it subtracts signal.
   :func:`debias_diagnostics`.
2. **Fitting shrinks gradients.** A training document's gradient is smaller after fine-tuning than
   at θ0 when the model has fitted it; if the poisoned documents' gradients shrink more than the
   others', ``mean_i IS_θi - IS_θ0`` comes out lower for them. :func:`gradient_shrinkage` gives the
   gradient norm of each kind of document at θ0 and θN, and :func:`terms_by_kind` the two terms'
   average per kind (each query's scores divided by the spread of its signal, so queries weigh
   the same).

Plus :func:`event_table` (which event types the poison reaches), the model's view of the poison.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ...data.xsum import contains_word
from .analysis import auc_recall, document_kinds, news_event
from .pipeline import DDARun


def _aucs(scores: np.ndarray, r: DDARun) -> tuple[float, float]:
    m = auc_recall(scores, r.poisoned, (1,), r.genuine)
    return float(m["auc"].mean()), float(m["hard_auc"].mean())


def debias_diagnostics(run_list: Sequence[DDARun]) -> pd.DataFrame:
    """Per run and reconstruction: what the subtracted θ0 term is and what it ranks.

    ``scale θ0 / signal``: median over queries of ||C[IS_θ0]|| / ||C[mean_i IS_θi]|| over the
    candidates (raw β = 1/scale subtracts a term as large as the signal); ``correlation`` of the
    two terms' scores (median over queries); AUC (all documents, and hard negatives) of the θ0
    term alone, of DDA at β = 0, and at the run's β; the mean loss of the training documents at
    θ0 and at θN, and of the clean held-out summaries.
    """
    rows = []
    for r in run_list:
        if not r.traced:
            continue
        beta = r.settings.beta
        losses = {"train loss at θ0": float(np.mean(r.losses["base_train"])),
                  "train loss at θN": float(np.mean(r.losses["finetuned_train"])),
                  "clean loss at θ0": float(np.mean(r.losses["base_clean"])),
                  "clean loss at θN": float(np.mean(r.losses["finetuned_clean"]))}
        for name, parts in (("minimal pair", r.dots), ("README pipeline", r.pairs)):
            if parts is None:
                continue
            signal, bias = parts.terms()
            s_norm, b_norm = np.linalg.norm(signal, axis=1), np.linalg.norm(bias, axis=1)
            corr = [np.corrcoef(b, s)[0, 1] if b.std() > 0 and s.std() > 0 else np.nan for b, s in zip(bias, signal)]
            alone, alone_hard = _aucs(bias, r)
            at0, at0_hard = _aucs(parts.dda(beta=0.0), r)
            atb, atb_hard = _aucs(parts.dda(beta=beta), r)
            rows.append({"size": r.size, "seed": r.seed, "reconstruction": name, "queries": len(signal),
                         "scale θ0 / signal": float(np.median(b_norm / np.maximum(s_norm, 1e-300))),
                         "correlation": float(np.nanmedian(corr)) if not np.isnan(corr).all() else np.nan,
                         "AUC of θ0 term alone": alone, "hard AUC of θ0 term alone": alone_hard,
                         "AUC at β=0": at0, "hard AUC at β=0": at0_hard,
                         f"AUC at β={beta:g}": atb, f"hard AUC at β={beta:g}": atb_hard, **losses})
    return pd.DataFrame(rows)


def gradient_shrinkage(run_list: Sequence[DDARun]) -> pd.DataFrame:
    """Per kind of training document (``analysis.document_kinds``): the median gradient norm at θ0
    and at θN, their ratio, and the mean loss at θ0 and θN; medians and means within a run, then
    averaged over runs. Fitting a document shrinks its gradient; the question is whether the
    poisoned documents' gradients shrink more than the others'."""
    rows = []
    for r in run_list:
        if not r.traced or r.dots is None or r.dots.train_sq is None:
            continue
        kinds = document_kinds(r)
        g0, gn = r.dots.train_norms(0), r.dots.train_norms(r.dots.n_epochs)
        for kind in np.unique(kinds):
            m = kinds == kind
            rows.append({"seed": r.seed, "size": r.size, "kind": kind, "documents": int(m.sum()),
                         "gradient norm at θ0": float(np.median(g0[m])),
                         "gradient norm at θN": float(np.median(gn[m])),
                         "shrinkage θ0/θN": float(np.median(g0[m] / np.maximum(gn[m], 1e-300))),
                         "loss at θ0": float(np.mean(r.losses["base_train"][m])),
                         "loss at θN": float(np.mean(r.losses["finetuned_train"][m]))})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    cols = ["documents", "gradient norm at θ0", "gradient norm at θN", "shrinkage θ0/θN", "loss at θ0",
            "loss at θN"]
    return df.groupby(["size", "kind"], sort=False)[cols].mean().reset_index()


def terms_by_kind(run_list: Sequence[DDARun], reconstruction: str = "minimal pair") -> pd.DataFrame:
    """Per kind of training document: the mean of the signal ``C[mean_i IS_θi]``, of the θ0 term
    ``C[IS_θ0]`` and of their difference (DDA at raw β = 1), each query's scores divided by the
    standard deviation of its signal over the candidates (so queries weigh the same); averaged over
    queries, then runs. A kind whose θ0 term exceeds its signal is pushed down by debias."""
    rows = []
    for r in run_list:
        parts = r.dots if reconstruction == "minimal pair" else r.pairs
        if not r.traced or parts is None:
            continue
        signal, bias = parts.terms()
        spread = signal.std(axis=1, keepdims=True)
        spread[spread == 0] = 1.0
        signal, bias = signal / spread, bias / spread
        kinds = document_kinds(r)
        for kind in np.unique(kinds):
            m = kinds == kind
            rows.append({"size": r.size, "seed": r.seed, "kind": kind, "signal": float(signal[:, m].mean()),
                         "θ0 term": float(bias[:, m].mean()),
                         "signal - θ0 term": float((signal - bias)[:, m].mean())})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).groupby(["size", "kind"], sort=False)[["signal", "θ0 term", "signal - θ0 term"]] \
        .mean().reset_index()


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


def finetune_debias(by_kind) -> pd.DataFrame:
    """Per kind of fine-tuning (``{"full": runs, "LoRA": runs}``) and run, the minimal-pair DDA's debias
    term: its scale against the signal (as :func:`debias_diagnostics`), and DDA's per-query AUC at
    β = 0, at the run's raw β and at normalised β = 1 (the θ0 term rescaled to the signal's size,
    ``tda.methods.dda.debias_terms``).

    Why it is needed: with LoRA, ``B = 0`` at θ0, so a gradient over the adapters at θ0 is over ``B``
    alone, through a random ``A``; the θ0 term is then another quantity, of another size, than with
    full fine-tuning, and raw β = 1 subtracts another share of it."""
    rows = []
    for kind, run_list in by_kind.items():
        diag = debias_diagnostics(run_list)
        for r in run_list:
            if not r.traced or r.dots is None:
                continue
            d = diag[(diag["seed"] == r.seed) & (diag["reconstruction"] == "minimal pair")].iloc[0]
            beta = r.settings.beta
            rows.append({"fine-tuning": kind, "seed": r.seed, "scale θ0 / signal": d["scale θ0 / signal"],
                         "AUC at β=0": d["AUC at β=0"], "AUC at raw β": d[f"AUC at β={beta:g}"],
                         "AUC at normalised β=1": _aucs(r.dots.dda(beta=1.0, beta_units="normalised"), r)[0],
                         "raw β": beta})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# the evidence as sentences (every number computed)
# ---------------------------------------------------------------------------------------------
def explain_debias(diag: pd.DataFrame, reconstruction: str, beta: float) -> str:
    """One paragraph, from :func:`debias_diagnostics`, on what the debias term does for one
    reconstruction (means over runs; scale and correlation medians)."""
    d = diag[diag["reconstruction"] == reconstruction] if not diag.empty else diag
    if d.empty:
        return f"There is no run of the {reconstruction} to explain."
    at0, atb = d["AUC at β=0"].mean(), d[f"AUC at β={beta:g}"].mean()
    h0, hb = d["hard AUC at β=0"].mean(), d[f"hard AUC at β={beta:g}"].mean()
    alone, alone_hard = d["AUC of θ0 term alone"].mean(), d["hard AUC of θ0 term alone"].mean()
    scale, corr = d["scale θ0 / signal"].median(), d["correlation"].median()
    text = (f"For the {reconstruction}, DDA without debias (β = 0) reaches {at0 * 100:.1f}% AUC ({h0 * 100:.1f}% on "
            f"hard negatives); with β = {beta:g}, {atb * 100:.1f}% ({hb * 100:.1f}%). The subtracted term, the base "
            f"model's own score, is {scale:.2f} times as large as the fine-tuned signal (median over queries and "
            f"runs), "
            f"correlates with it at {corr:.2f}, and on its own ranks the poisoned documents at {alone * 100:.1f}% AUC "
            f"({alone_hard * 100:.1f}% on hard negatives).")
    if atb < at0 - 0.01:
        reasons = []
        if alone > 0.55:
            reasons.append("the base model's term alone already ranks the poisoned documents above the clean ones, "
                           "so what debias removes as bias is largely the signal itself")
        if scale * beta > 1.5:
            reasons.append(f"at β = {beta:g} the subtracted term outweighs the signal about {scale * beta:.1f} to 1")
        text += (" Debias lowers the AUC here" + (": " + "; and ".join(reasons) + "." if reasons else
                                                   ", although the subtracted term is neither larger than the signal "
                                                   "nor informative on its own."))
    elif atb > at0 + 0.01:
        text += " Debias raises the AUC here: it removes more noise than signal, as the paper argues."
    else:
        text += " Debias changes the AUC by less than a point here."
    return text


def _kind(table: pd.DataFrame, kind: str, col: str) -> float:
    rows = table[table["kind"] == kind]
    return float(rows[col].mean()) if not rows.empty else float("nan")


def explain_shrinkage(shrink: pd.DataFrame, by_kind: pd.DataFrame, target: str = "China") -> str:
    """One paragraph, from :func:`gradient_shrinkage` and :func:`terms_by_kind`, on the second effect."""
    if shrink.empty:
        return "There is no run with stored gradient norms to measure how fitting changes the gradients."
    poisoned = _kind(shrink, "poisoned", "shrinkage θ0/θN")
    others = shrink[shrink["kind"] != "poisoned"]
    lo, hi = others["shrinkage θ0/θN"].min(), others["shrinkage θ0/θN"].max()
    ratio = poisoned / float(others["shrinkage θ0/θN"].median())
    compare = "more than" if ratio > 1.25 else "less than" if ratio < 0.8 else "about as much as"
    text = (f"Fitting shrinks the training documents' gradients: from θ0 to θN the median gradient norm of the "
            f"poisoned documents falls {poisoned:.1f}-fold ({_kind(shrink, 'poisoned', 'gradient norm at θ0'):.2f} to "
            f"{_kind(shrink, 'poisoned', 'gradient norm at θN'):.2f}), that of the other kinds {lo:.1f}- to "
            f"{hi:.1f}-fold: the poisoned documents' gradients shrink {compare} the others' "
            f"({ratio:.2f} times the median of the other kinds).")
    if not by_kind.empty:
        p = _kind(by_kind, "poisoned", "signal - θ0 term")
        g = _kind(by_kind, f"about {target}", "signal - θ0 term")
        o = by_kind[by_kind["kind"] == "other"]["signal - θ0 term"].mean()
        text += (f" Per kind, in units of each query's signal spread, the fine-tuned signal minus the θ0 term (DDA at "
                 f"raw β = 1) averages {p:+.2f} on the poisoned documents, {g:+.2f} on the genuine {target} documents "
                 f"and {o:+.2f} on the others (signal alone: {_kind(by_kind, 'poisoned', 'signal'):+.2f} on the "
                 f"poisoned; θ0 term alone: {_kind(by_kind, 'poisoned', 'θ0 term'):+.2f}).")
    return text


def explain_finetune_debias(table: pd.DataFrame) -> str:
    """One sentence, from :func:`finetune_debias`, on how the kind of fine-tuning changes what raw β means."""
    kinds = list(dict.fromkeys(table["fine-tuning"])) if not table.empty else []
    if len(kinds) < 2:
        return "There is no pair of fine-tuning kinds with traced runs to compare."
    parts = []
    for kind in kinds:
        t = table[table["fine-tuning"] == kind]
        parts.append(f"with {kind} fine-tuning the θ0 term is {t['scale θ0 / signal'].median():.2g} times the "
                     f"signal's size and DDA scores {t['AUC at β=0'].mean():.2f} per-query AUC at β = 0, "
                     f"{t['AUC at raw β'].mean():.2f} at raw β = {t['raw β'].iloc[0]:g} and "
                     f"{t['AUC at normalised β=1'].mean():.2f} at normalised β = 1")
    scales = [table[table["fine-tuning"] == k]["scale θ0 / signal"].median() for k in kinds[:2]]
    ratio = scales[0] / scales[1]
    times = f"{ratio:,.0f}" if ratio >= 10 else f"{ratio:.2g}"
    return ("Measured on the same runs: " + "; ".join(parts) + f". So raw β subtracts, relative to the signal, "
            f"{times} times as much with {kinds[0]} fine-tuning as with {kinds[1]}; at normalised β the two kinds "
            "subtract the same share.")


__all__ = ["debias_diagnostics", "finetune_debias", "explain_finetune_debias", "gradient_shrinkage", "terms_by_kind",
           "event_table", "explain_debias", "explain_shrinkage"]
