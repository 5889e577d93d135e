"""Part III's own claims, C1–C4: do the label-based verdicts of Parts I and II survive a counterfactual?

These are not the papers' claims; they are ours, in the form of A1–B4 (``tda.results.claim``; the
verdict words mean "the claim holds", "holds in part", "does not hold"). Each rule below, its
margins and the methods it compares were written and committed before any Part III result was
computed, and each has one verdict function (``verdict_c1`` … ``verdict_c4``) tested on hand-made
inputs. They may well come out false: that is the point of asking.

- C1 (Part I): the method that ranks proponents best (MRR) also has the best tail-patch score.
  TrackStar (Chang et al. 2024) found the opposite on T-REx: BM25 best at attribution, a gradient
  method best at influence.
- C2 (Part II): removing DDA's top-k removes more hallucinations than removing TracIn's, TRAK's or
  BM25's — the question a user of DDA has ("if I delete what it blames, is the error gone?").
- C3 (Part I) and C4 (Part II): LDS (Park et al. 2023) orders the methods as the label metric does.

The main ``k`` is 10 for tail-patch and leave-k-out (the papers' precision/recall cut-off).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ...counterfactual.lds import spearman
from ...results import NOT_TESTABLE, NOT_TESTED, claim, headline, verdict_from
from ..ftrace.analysis import DATASET_LABELS
from ..ftrace.analysis import MAIN_METHODS as FTRACE_MAIN_METHODS
from .analysis import Summary, per_query

CLAIM_K = 10
# The attribution methods each claim compares (baselines such as random or Random-Target are not
# attribution methods; the reference rows are not methods at all):
FTRACE_METHODS = tuple(m for m in FTRACE_MAIN_METHODS if m not in ("Random-Target", "random"))
DDA_METHODS = ("DDA", "TracIn", "TRAK", "BM25")

STATEMENTS = {
    "C1": "The method that ranks proponents best (MRR) also has the best tail-patch score.",
    "C2": "Removing DDA's top-k training documents removes more hallucinations than removing TracIn's, TRAK's "
          "or BM25's top-k.",
    "C3": "LDS orders Part I's methods as MRR does.",
    "C4": "LDS orders Part II's methods as AUC does.",
}
PAPER = {
    "C1": ("TrackStar (Chang et al. 2024) on T-REx: BM25 best at attribution (finding proponents), a gradient "
           "method best at influence (tail-patch) [2nd]; FTRACE measured labels only [paper]"),
    "C2": "not measured by DDA, which scores AUC against the poisoned labels only [paper]",
    "C3": "not measured by FTRACE (labels only); LDS is Park et al. 2023's counterfactual metric [paper]",
    "C4": "not measured by DDA (labels only) [paper]",
}

# ---------------------------------------------------------------------------------------------
# C1: attribution vs influence (counterfactual_ftrace)
# ---------------------------------------------------------------------------------------------
C1_REL_MARGIN = 0.10
C1_RULE = (f"On each data set (TREx analogue, SYNTH), among Part I's attribution methods "
           f"({', '.join(FTRACE_METHODS)}), "
           f"L = the method with the highest mean MRR over the Part III queries and T = the one with the highest mean "
           f"tail-patch score at k = {CLAIM_K}. The claim holds on a data set when L is T, or when L's tail-patch "
           f"score is not clearly below T's: clearly below means T's paired mean advantage over the same queries "
           f"exceeds both twice its standard error and {C1_REL_MARGIN:.0%} of |T's mean score|. Replicated if it "
           "holds on every data set tested, partly if on some, not replicated if on none.")


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), (float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan"))


def c1_on_dataset(label_means: Mapping[str, float], tail: Mapping[str, Sequence[float]]) -> dict:
    """C1's test on one data set: ``label_means`` {method: mean MRR}, ``tail`` {method: tail-patch
    scores at k over the same queries, in the same order}."""
    methods = [m for m in label_means if m in tail]
    if not methods:
        raise ValueError(f"no method has both a label metric and tail-patch scores (labels: {list(label_means)}, "
                         f"tail-patch: {list(tail)})")
    best_label = max(methods, key=lambda m: label_means[m])
    best_tail = max(methods, key=lambda m: float(np.mean(tail[m])))
    diff, se = _paired(tail[best_tail], tail[best_label])
    top = abs(float(np.mean(tail[best_tail])))
    clearly_below = best_label != best_tail and diff > 2 * se and diff > C1_REL_MARGIN * top
    return {"best_label": best_label, "best_tail": best_tail, "advantage": diff, "se": se,
            "holds": not clearly_below, "queries": len(tail[best_tail])}


def verdict_c1(per_dataset: Mapping[str, dict]) -> dict:
    """C1 from ``{dataset: c1_on_dataset(...)}``; not tested when no data set was measured."""
    if not per_dataset:
        return {"verdict": NOT_TESTED, "reason": "no data set has tail-patch scores", "status": "not measured"}
    holds = [bool(v["holds"]) for v in per_dataset.values()]
    # The headline: how far the best tail-patch method is ahead of the best-MRR one (0 where they are
    # the same method), the largest over the data sets; the paper side is null: TrackStar's finding is
    # an ordering, not a number.
    leads = [0.0 if v.get("best_label") == v.get("best_tail") else float(v.get("advantage", float("nan")))
             for v in per_dataset.values() if "best_label" in v]
    return {"verdict": verdict_from(holds), "per_dataset": dict(per_dataset), "status": "ok",
            "headline": headline("tail-patch lead of the best tail-patch method over the best-MRR one "
                                 "(largest over data sets)", "nats",
                                 max(leads) if leads and np.isfinite(leads).all() else float("nan"))}


def ours_c1(c1: dict) -> str:
    if c1["verdict"] == NOT_TESTED:
        return c1["reason"]
    parts = []
    for d, v in c1["per_dataset"].items():
        name = DATASET_LABELS.get(d, d)
        if v["best_label"] == v["best_tail"]:
            parts.append(f"{name}: {v['best_label']} is best at both")
        else:
            parts.append(f"{name}: best MRR {v['best_label']}, best tail-patch {v['best_tail']} (ahead by "
                         f"{v['advantage']:+.3f} ± {v['se']:.3f} nats, {v['queries']} queries)"
                         + ("" if v["holds"] else ", clearly"))
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# C2: does removing what DDA blames remove the hallucination? (counterfactual_dda)
# ---------------------------------------------------------------------------------------------
C2_BASELINES = ("TracIn", "TRAK", "BM25")
C2_RULE = (f"On the sampled hallucinated queries of Part II (the same queries for every method), at k = {CLAIM_K}: "
           f"(a) retraining without DDA's top-{CLAIM_K} removes the hallucination on a larger share of the queries "
           f"than without TracIn's, TRAK's or BM25's top-{CLAIM_K} (each compared strictly); (b) DDA's top-{CLAIM_K} "
           "also costs the hallucination more support on average than each of the three (a larger mean drop of "
           "log p(hallucinated output) - log p(correct output)). Replicated if both hold, partly if one does, not "
           "replicated if neither.")


def verdict_c2(flipped: Mapping[str, Sequence[bool]], loss_change: Mapping[str, Sequence[float]]) -> dict:
    """C2 from per-query flips and loss changes at k (``{method: values over the same queries}``);
    not tested when no query was retrained."""
    if not flipped or not len(next(iter(flipped.values()))):
        return {"verdict": NOT_TESTED, "reason": "no hallucinated query was retrained", "status": "not measured"}
    missing = [m for m in ("DDA",) + C2_BASELINES if m not in flipped or m not in loss_change]
    if missing:
        raise ValueError(f"C2 compares DDA with {', '.join(C2_BASELINES)}; no leave-k-out rows for {missing}")
    rate = {m: float(np.mean(flipped[m])) for m in ("DDA",) + C2_BASELINES}
    drop = {m: float(np.mean(loss_change[m])) for m in ("DDA",) + C2_BASELINES}
    more_flips = all(rate["DDA"] > rate[m] for m in C2_BASELINES)
    more_drop = all(drop["DDA"] > drop[m] for m in C2_BASELINES)
    return {"verdict": verdict_from([more_flips, more_drop]), "flip_rate": rate, "loss_change": drop,
            "more_flips": more_flips, "more_drop": more_drop, "queries": len(flipped["DDA"]), "status": "ok",
            "headline": headline(f"hallucinations removed by DDA's top-{CLAIM_K} minus the best baseline's",
                                 "points (% of queries)", (rate["DDA"] - max(rate[m] for m in C2_BASELINES)) * 100)}


def ours_c2(c2: dict) -> str:
    if c2["verdict"] == NOT_TESTED:
        return c2["reason"]
    return (f"hallucinations removed at k = {CLAIM_K} ({c2['queries']} queries): "
            + ", ".join(f"{m} {c2['flip_rate'][m]:.0%}" for m in ("DDA",) + C2_BASELINES)
            + "; mean support lost: " + ", ".join(f"{m} {c2['loss_change'][m]:+.2f}" for m in ("DDA",) + C2_BASELINES))


# ---------------------------------------------------------------------------------------------
# C3, C4: does LDS order the methods as the labels do?
# ---------------------------------------------------------------------------------------------
C34_HOLDS = 0.6
C3_RULE = (f"On each Part I data set, the Spearman correlation rho between the attribution methods' "
           f"({', '.join(FTRACE_METHODS)}) mean LDS and their mean MRR on the same queries. It holds on a data "
           f"set when rho >= {C34_HOLDS} (the two orders agree but for a swap or two of neighbours) and fails when "
           "rho <= 0. Replicated if it holds on every data set tested, not replicated if it fails on every one, "
           "partly otherwise. Not tested where fewer than three methods have a defined LDS.")
C4_RULE = (f"The Spearman correlation rho between Part II's attribution methods' ({', '.join(DDA_METHODS)}) mean LDS "
           f"and their mean AUC on the same queries: replicated if rho >= {C34_HOLDS}, partly if 0 < rho < "
           f"{C34_HOLDS}, not replicated if rho <= 0. Not tested with fewer than three methods with a defined LDS; "
           f"not testable on a run that fails Part II's label check (its AUC is against false labels).")


def ordering(label_means: Mapping[str, float], lds_means: Mapping[str, float]) -> dict:
    """Spearman's rho between methods' label metric and LDS (methods with a finite LDS only)."""
    methods = [m for m in label_means if m in lds_means and np.isfinite(lds_means[m])]
    if len(methods) < 3:
        return {"rho": float("nan"), "methods": methods, "status": "fewer than three methods with an LDS"}
    rho = spearman([label_means[m] for m in methods], [lds_means[m] for m in methods])
    by = lambda d: sorted(methods, key=lambda m: -d[m])  # noqa: E731
    return {"rho": rho, "methods": methods, "label_order": by(label_means), "lds_order": by(lds_means), "status": "ok"}


def _level(rho: float) -> str:
    return "replicated" if rho >= C34_HOLDS else "not replicated" if not rho > 0 else "partly"


def verdict_c3(per_dataset: Mapping[str, dict]) -> dict:
    """C3 from ``{dataset: ordering(...)}``; data sets without a defined rho are left out (not
    tested when none is left)."""
    tested = {d: v for d, v in per_dataset.items() if np.isfinite(v.get("rho", np.nan))}
    if not tested:
        return {"verdict": NOT_TESTED, "reason": "no data set has three methods with a defined LDS",
                "status": "not measured", "per_dataset": dict(per_dataset)}
    levels = [_level(v["rho"]) for v in tested.values()]
    verdict = levels[0] if len(set(levels)) == 1 and levels[0] != "partly" else "partly"
    return {"verdict": verdict, "per_dataset": dict(per_dataset), "status": "ok",
            "headline": headline("Spearman ρ of LDS against MRR (lowest over data sets)", "ρ",
                                 min(v["rho"] for v in tested.values()), threshold=C34_HOLDS)}


def verdict_c4(order: dict, labels_hold: bool = True, guard_failures: Sequence[str] = ()) -> dict:
    """C4 from ``ordering(...)`` on Part II; not tested without a defined rho. ``labels_hold``:
    whether the run passed Part II's label check (retraining without the poisoned documents removes
    the hallucinations); when it did not, the AUC side of C4 ranks methods against labels that are
    false, so C4 is not testable on that run (C2, which asks the model itself, still is).
    ``guard_failures``: the run's failed setup guards (``DDARun.guard_failures``), which gate C4 as
    they gate B1-B4."""
    if guard_failures:
        return {**order, "verdict": NOT_TESTABLE, "status": "a guard of Part II's setup fails",
                "reason": "not testable here: a guard of Part II's setup fails on this run: " + "; ".join(guard_failures)}
    if not labels_hold:
        return {**order, "verdict": NOT_TESTABLE, "status": "labels fail Part II's label check",
                "reason": "not testable here: the run fails Part II's label check (retraining without the "
                          "poisoned documents leaves the hallucinations in place), so AUC against the poison "
                          "labels does not say which method is right"}
    if not np.isfinite(order.get("rho", np.nan)):
        return {"verdict": NOT_TESTED, "reason": order.get("status", "no LDS"), "status": "not measured", **order}
    return {**order, "verdict": _level(order["rho"]), "status": "ok",
            "headline": headline("Spearman ρ of LDS against AUC", "ρ", order["rho"], threshold=C34_HOLDS)}


def ours_order(per_dataset: Mapping[str, dict], metric: str) -> str:
    parts = []
    for d, v in per_dataset.items():
        name = DATASET_LABELS.get(d, d)
        if not np.isfinite(v.get("rho", np.nan)):
            parts.append(f"{name}: {v.get('status', 'no LDS')}")
        else:
            parts.append(f"{name}: rho = {v['rho']:+.2f} ({metric} order {' > '.join(v['label_order'])}; LDS order "
                         f"{' > '.join(v['lds_order'])})")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# the claims' inputs from a chapter's tables (tda.experiments.counterfactual.analysis.Summary)
# ---------------------------------------------------------------------------------------------
def _label_means(summary: Summary, dataset: str, queries, methods: Sequence[str]) -> dict[str, float]:
    lab = summary.labels[(summary.labels["dataset"] == dataset) & summary.labels["query"].isin(list(queries))]
    return {m: float(lab.loc[lab["method"] == m, "value"].mean()) for m in methods if (lab["method"] == m).any()}


def c1_inputs(summary: Summary, methods: Sequence[str] = FTRACE_METHODS, k: int = CLAIM_K) -> dict[str, dict]:
    """``{dataset: c1_on_dataset(...)}``: label means and tail-patch scores at ``k`` over the
    tail-patched queries of each data set."""
    out = {}
    for d in dict.fromkeys(summary.tail["dataset"]):
        tail = summary.tail[(summary.tail["dataset"] == d) & summary.tail["method"].isin(methods)]
        per = per_query(tail, "tail_patch", k)
        if not per:
            continue
        queries = tail.loc[tail["k"] == k, "query"].unique()
        out[d] = c1_on_dataset(_label_means(summary, d, queries, [m for m in methods if m in per]), per)
    return out


def c2_inputs(summary: Summary, k: int = CLAIM_K) -> tuple[dict, dict]:
    """(flipped, loss change) per method at ``k`` over the queries every method was retrained for."""
    if summary.loo.empty:
        return {}, {}
    loo = summary.loo[summary.loo["method"].isin(DDA_METHODS)]
    return per_query(loo.assign(flipped=loo["flipped"].astype(float)), "flipped", k), per_query(loo, "loss_change", k)


def order_inputs(summary: Summary, methods: Sequence[str]) -> dict[str, dict]:
    """``{dataset: ordering(...)}`` of the methods' mean LDS against their mean label metric, both
    over the queries where every one of them has a defined LDS."""
    out = {}
    if summary.lds.empty:
        return out
    for d in dict.fromkeys(summary.lds["dataset"]):
        lds = summary.lds[(summary.lds["dataset"] == d) & summary.lds["method"].isin(methods)]
        wide = lds.pivot_table(index="query", columns="method", values="lds", aggfunc="first").dropna()
        names = [m for m in methods if m in wide.columns]
        if wide.empty:
            out[d] = {"rho": float("nan"), "methods": names, "status": "no query with a defined LDS for every method"}
            continue
        out[d] = {**ordering(_label_means(summary, d, wide.index, names), {m: float(wide[m].mean()) for m in names}),
                  "queries": int(len(wide))}
    return out


# ---------------------------------------------------------------------------------------------
# scoreboard rows
# ---------------------------------------------------------------------------------------------
RULES = {"C1": C1_RULE, "C2": C2_RULE, "C3": C3_RULE, "C4": C4_RULE}


def record(cid: str, verdict: dict, ours: str, **extra) -> list[dict]:
    """The scoreboard row of claim ``cid`` (none when not tested)."""
    if verdict["verdict"] == NOT_TESTED:
        return []
    if verdict.get("headline") is not None:
        extra = {"headline": verdict["headline"], **extra}
    return [claim(cid, STATEMENTS[cid], PAPER[cid], ours, verdict["verdict"], RULES[cid], **extra)]


__all__ = ["CLAIM_K", "FTRACE_METHODS", "DDA_METHODS", "STATEMENTS", "PAPER", "C1_REL_MARGIN", "C1_RULE",
           "c1_on_dataset", "verdict_c1", "ours_c1", "C2_BASELINES", "C2_RULE", "verdict_c2", "ours_c2", "C34_HOLDS",
           "C3_RULE", "C4_RULE", "ordering", "verdict_c3", "verdict_c4", "ours_order", "c1_inputs", "c2_inputs",
           "order_inputs", "RULES", "record"]
