"""Part II's claims: the paper's figures, each claim's rule, its verdict, and the text around it.

Claims B1–B4 of REFERENCES.md. For each claim ``X``: ``RULE_X`` (the rule, fixed before any result
was computed; the chapters glue this very text), ``verdict_x`` (the one function that decides it;
its ``"verdict"`` is one of ``tda.results.VERDICTS``), ``ours_x`` (our figure as text) and
``record_x`` (the scoreboard row, a ``tda.results.claim``).

Which runs and which reconstruction (fixed before any result of this setup was computed):

- **Testable** (:func:`testability`): a verdict uses the runs that hallucinated and whose labels
  hold (the label check, ``tda.counterfactual``); if none is left, or a guard of the setup
  (``tda.data.tracing.GUARDS``) fails in one of them, the verdict is ``"not testable"`` and the row
  says which guard failed or why no run is left.
- **Recorded reconstruction**: the authors' README pipeline (``"DDA (README pipeline)"``, its own
  level: one ranking per error set, set-level AUC), since it is the pipeline the authors describe.
  The minimal-pair reconstruction (``"DDA"``, per-query AUC, the book's earlier metric) gets the
  same rule, computed and shown beside it (``minimal_pair_verdict`` in the row).
- **Baselines of B1**: TracIn, TRAK and BM25 as the paper runs them, and TracIn and TRAK with the
  contrast DDA gets (hallucinated minus correct output): DDA must beat each of the five.
- **β**: raw β = ``settings.beta`` (the paper's formula) for B1–B3; B3 sweeps raw β (normalised
  shown beside); B4 compares sizes at normalised β = 1, so size does not change what β means.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ...results import NOT_TESTABLE, claim, fmt, headline, verdict_from
from .analysis import run_means
from .pipeline import DDARun

NO_TRACE = "no hallucinated output to trace"
RECORDED = "DDA (README pipeline)"
MINIMAL = "DDA"

# ---------------------------------------------------------------------------------------------
# the paper's figures (REFERENCES.md, with provenance)
# ---------------------------------------------------------------------------------------------
PAPER_AUC = {
    "DDA": "91.6 (mean of 3 models) [paper]; ~93.5 [2nd]",
    "DDA (README pipeline)": "the authors' pipeline: the same figures",
    "CEA": "a DDA baseline; CEA's own paper: auPR 94.1 on England–China [2nd]",
    "TracIn": "mostly 50–60 [seed]",
    "TracIn (contrast)": "not in the paper (fair control)",
    "TRAK": "mostly 50–60 [seed]",
    "TRAK (contrast)": "not in the paper (fair control)",
    "BM25": "a baseline; figure not found",
    "random": "50 by definition",
    "TracIn+Adam": "not in the paper (FTRACE's correction)",
}
PAPER_ABLATION = {"DDA (full)": 0.935, "without denoise": 0.848, "without debias": 0.679}
PAPER_ABLATION_TEXT = {"DDA (full)": "93.5 [seed]", "without denoise": "84.8 [seed]",
                       "without debias": "67.9 [seed] (38.3 in one secondary source)",
                       "without contrast": "not reported", "without denoise and debias": "not reported"}
PAPER_CLAIMS = {
    "B1": "DDA 91.6% AUC (avg. of LLaMA2, Qwen2, Mistral) [paper]; TracIn, TRAK mostly 50-60% [seed]",
    "B2": (f"full {PAPER_ABLATION['DDA (full)'] * 100:.1f}, "
           f"without denoise {PAPER_ABLATION['without denoise'] * 100:.1f}, "
           f"without debias {PAPER_ABLATION['without debias'] * 100:.1f} (AUC %) [seed]"),
    "B3": "rises fast from beta=0 to ~0.4, then flat [seed]",
    "B4": "about 90% AUC at Qwen2 0.5B, 1.5B and 7B [seed]",
}
# The paper's side of the claims' headline numbers (the figures quoted above, as numbers).
PAPER_DDA_AUC = 0.9164  # DDA's mean AUC over LLaMA2, Qwen2, Mistral [paper abstract]
PAPER_BASELINE_AUC_TOP = 0.60  # TracIn and TRAK "mostly 50-60" [seed]: the top of that range
PAPER_SIZES_AUC = 0.90  # "about 90% AUC at Qwen2 0.5B, 1.5B and 7B" [seed]
AUC_POINTS = "AUC points"
STATEMENTS = {
    "B1": "DDA beats TracIn, TRAK and BM25 by a wide margin on hallucination tracing (AUC).",
    "B2": "Removing debias hurts far more than removing denoise; both help.",
    "B3": "AUC rises with beta up to about 0.4 and then stays flat.",
    "B4": "DDA's accuracy holds across model sizes.",
}


# ---------------------------------------------------------------------------------------------
# testability: the runs left, and the guards
# ---------------------------------------------------------------------------------------------
def testability(run_list: Sequence[DDARun]) -> dict:
    """Whether a verdict can be drawn from ``run_list`` and why not: ``testable``, ``reason`` (a
    sentence, empty when testable), and the counts of runs, untraced, flagged and usable runs."""
    untraced = [r for r in run_list if not r.traced]
    flagged = [r for r in run_list if r.flagged]
    usable = [r for r in run_list if r.usable]
    failures = {f"{r.size} seed {r.seed}": r.guard_failures() for r in usable if r.guard_failures()}
    out = {"runs": len(run_list), "untraced": len(untraced), "flagged": len(flagged), "usable": len(usable),
           "guard_failures": failures, "testable": False, "reason": ""}
    if not run_list:
        out["reason"] = "no run"
    elif not usable:
        out["reason"] = (f"no run is left to test it: of {len(run_list)} runs, {len(untraced)} had no hallucinated "
                         f"output and {len(flagged)} failed the label check (retraining without the poisoned "
                         "documents left the hallucinations in place, so the labels are false)")
    elif failures:
        out["reason"] = "a guard of the setup fails: " + "; ".join(f"{k}: {'; '.join(v)}" for k, v in failures.items())
    else:
        out["testable"] = True
    return out


def left_out_sentence(t: dict) -> str:
    """How many runs the verdicts leave out, and why (empty when none)."""
    if not t["untraced"] and not t["flagged"]:
        return f"All {t['runs']} runs hallucinated and passed the label check; none is left out."
    return (f"Of {t['runs']} runs, {t['untraced']} produced no hallucinated output and {t['flagged']} failed the label "
            f"check (retraining without the poison left more than the allowed share of their hallucinations); they "
            f"are left out of the verdicts, which use the remaining {t['usable']}.")


def not_testable(reason: str, **extra) -> dict:
    return {"verdict": NOT_TESTABLE, "reason": reason, "status": "not testable", **extra}


def record(claim_id: str, verdict: dict, ours: str, rule: str, **extra) -> list[dict]:
    """The scoreboard row of a claim (a not-testable verdict records its reason as ours)."""
    if verdict["verdict"] == NOT_TESTABLE:
        return [claim(claim_id, STATEMENTS[claim_id], PAPER_CLAIMS[claim_id], f"not testable here: {verdict['reason']}",
                      NOT_TESTABLE, rule)]
    if verdict.get("headline") is not None:
        extra = {"headline": verdict["headline"], **extra}
    return [claim(claim_id, STATEMENTS[claim_id], PAPER_CLAIMS[claim_id], ours, verdict["verdict"], rule, **extra)]


def per_seed(table: pd.DataFrame, methods: Sequence[str], metric: str = "auc") -> dict[str, np.ndarray]:
    """``{method: [mean value per seed]}`` (same seeds, same order) from a per-query or set table."""
    if table.empty:
        return {}
    wide = run_means(table, ("method",)).pivot(index="seed", columns="method", values=metric)
    return {m: wide[m].to_numpy() for m in methods if m in wide}


def method_comparison(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The paper's Table-1 style from ``analysis.comparison``: per method, the paper's AUC beside
    ours per query and per error set (mean ± std over seeds, [95% bootstrap interval]) and on hard
    negatives."""
    rows = []
    for _, t in table.iterrows():
        def ci(lo, hi):
            return "" if not np.isfinite([lo, hi]).all() else f" [{lo * 100:.0f}, {hi * 100:.0f}]"
        rows.append({"method": t["method"], "paper: AUC %": PAPER_AUC.get(t["method"], ""),
                     "ours: AUC % per query": fmt(t["auc mean"], t["auc std"]) + ci(t["auc low"], t["auc high"]),
                     "per query, hard negatives": fmt(t["hard_auc mean"]),
                     "ours: AUC % per error set": fmt(t["set auc mean"], t["set auc std"])
                     + ci(t["set auc low"], t["set auc high"]),
                     "per error set, hard negatives": fmt(t["set hard_auc mean"], t["set hard_auc std"]),
                     f"recall@{k} % (set)": fmt(t[f"set recall@{k} mean"]), "seeds": int(t["seeds"])})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# B1: DDA against the baselines (dda_main)
# ---------------------------------------------------------------------------------------------
B1_MARGIN = 0.10
B1_BASELINES = ("TracIn", "TracIn (contrast)", "TRAK", "TRAK (contrast)", "BM25")
B1_RULE = (f"replicated if DDA's mean AUC exceeds each of TracIn, TRAK (each as the paper runs it and with the "
           f"contrast DDA gets) and BM25 by at least {B1_MARGIN * 100:.0f} points and DDA is ahead of each of them in "
           "every seed; partly if DDA's mean AUC is above all five but not by that margin (or not in every seed); not "
           "replicated if one of them matches or beats DDA's mean AUC. Recorded for the authors' README pipeline "
           "(one ranking per error set, set-level AUC); the minimal-pair reconstruction (per-query AUC) is judged "
           "by the same rule beside it. Runs whose labels fail the label check are left out; a failed guard makes "
           "the claim not testable.")


def verdict_b1(per_seed_auc: Mapping[str, Sequence[float]], dda: str = RECORDED) -> dict:
    """B1 from per-seed mean AUCs ``{method: [auc per seed]}`` of ``dda`` and :data:`B1_BASELINES`."""
    if not per_seed_auc or dda not in per_seed_auc or not len(per_seed_auc[dda]):
        return not_testable(NO_TRACE)
    ours = np.asarray(per_seed_auc[dda], dtype=np.float64)
    margins, every_seed = {}, {}
    for m in B1_BASELINES:
        other = np.asarray(per_seed_auc[m], dtype=np.float64)
        margins[m] = float(ours.mean() - other.mean())
        every_seed[m] = bool((ours > other).all())
    worst = min(margins, key=margins.get)
    if margins[worst] <= 0:
        verdict = "not replicated"
    elif all(v >= B1_MARGIN for v in margins.values()) and all(every_seed.values()):
        verdict = "replicated"
    else:
        verdict = "partly"
    return {"verdict": verdict, "method": dda, "auc": float(ours.mean()), "margins": margins,
            "ahead_every_seed": every_seed, "closest": worst, "seeds": len(ours), "status": "ok",
            "headline": headline("DDA's AUC minus the closest baseline's", AUC_POINTS, margins[worst] * 100,
                                 (PAPER_DDA_AUC - PAPER_BASELINE_AUC_TOP) * 100, threshold=B1_MARGIN * 100,
                                 note="paper: DDA's 91.6 [paper] minus 60, the top of the 50-60 quoted for TracIn "
                                      "and TRAK [seed]")}


def ours_b1(b1: dict, table: pd.DataFrame, level: str = "set") -> str:
    """Our figures behind a B1 verdict: DDA and the baselines' mean AUC at the verdict's level."""
    if b1["verdict"] == NOT_TESTABLE:
        return b1["reason"]
    col = "set auc" if level == "set" else "auc"
    t = table.set_index("method")
    names = [b1["method"], *B1_BASELINES, "random"]
    return (f"AUC % ({'per error set' if level == 'set' else 'per query'}): "
            + ", ".join(f"{m} {fmt(t.loc[m, f'{col} mean'], t.loc[m, f'{col} std'])}" for m in names if m in t.index)
            + f" ({b1['seeds']} seeds)")


def closest_baseline_sentence(b1: dict) -> str:
    """How far the closest baseline is from DDA (empty when not testable)."""
    if b1["verdict"] == NOT_TESTABLE:
        return ""
    m = b1["margins"][b1["closest"]] * 100
    return (f"The closest baseline, {b1['closest']}, is {m:.1f} points below {b1['method']}." if m > 0 else
            f"The best baseline, {b1['closest']}, is {-m:.1f} points above {b1['method']}.")


# ---------------------------------------------------------------------------------------------
# B2: the ablation (dda_ablation)
# ---------------------------------------------------------------------------------------------
B2_HELPS = 0.01
B2_RATIO = 2.0
B2_RULE = (f"two parts: (a) both help — removing debias and removing denoise each lower the mean AUC by more "
           f"than {B2_HELPS * 100:.0f} point; (b) debias matters far more — removing it costs at least "
           f"{B2_RATIO:g}x what removing denoise costs (and more than {B2_HELPS * 100:.0f} point). Replicated if "
           "both hold, partly if one does, not replicated if neither does. Recorded for the README pipeline "
           "(set-level AUC), the minimal pair judged beside it (per-query AUC); flagged runs left out.")


def ablation_table(table: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """The ablation's summary (one row per ``variant``; ``prefix`` strips the README pipeline's
    labels): mean ± std AUC over seeds, the change against the full method in points, and the
    paper's figure and ours as text. Empty when nothing was traced."""
    if table.empty:
        return table
    table = table.rename(columns={"method": "variant"}).copy()
    table["variant"] = table["variant"].str.removeprefix(prefix)
    full = table.set_index("variant").loc["DDA (full)", "auc mean"]
    table["change vs full (points)"] = ((table["auc mean"] - full) * 100).round(1)
    table["paper AUC %"] = table["variant"].map(PAPER_ABLATION_TEXT).fillna("")
    table["ours AUC %"] = [fmt(m, sd) for m, sd in zip(table["auc mean"], table["auc std"])]
    return table


def ablation_aucs(table: pd.DataFrame) -> tuple[float, float, float]:
    """(full, without debias, without denoise) mean AUC of an ablation table; NaN when empty."""
    if table.empty:
        return (float("nan"),) * 3
    t = table.set_index("variant")
    return tuple(float(t.loc[v, "auc mean"]) for v in ("DDA (full)", "without debias", "without denoise"))


def verdict_b2(full: float, no_debias: float, no_denoise: float) -> dict:
    """B2 from the mean AUCs of the full method and the two ablations."""
    if not np.isfinite([full, no_debias, no_denoise]).all():
        return not_testable(NO_TRACE)
    d_debias, d_denoise = full - no_debias, full - no_denoise
    both_help = d_debias > B2_HELPS and d_denoise > B2_HELPS
    debias_far_more = d_debias > B2_HELPS and d_debias >= B2_RATIO * max(d_denoise, 0.0)
    paper = ((PAPER_ABLATION["DDA (full)"] - PAPER_ABLATION["without debias"])
             - (PAPER_ABLATION["DDA (full)"] - PAPER_ABLATION["without denoise"]))
    return {"verdict": verdict_from([both_help, debias_far_more]), "full": float(full), "drop_debias": float(d_debias),
            "drop_denoise": float(d_denoise), "both_help": bool(both_help), "debias_far_more": bool(debias_far_more),
            "status": "ok",
            "headline": headline("AUC lost without debias minus AUC lost without denoise", AUC_POINTS,
                                 (d_debias - d_denoise) * 100, paper * 100)}


def ours_b2(b2: dict) -> str:
    if b2["verdict"] == NOT_TESTABLE:
        return b2["reason"]
    return (f"AUC %: full {b2['full'] * 100:.1f}, without denoise {(b2['full'] - b2['drop_denoise']) * 100:.1f}, "
            f"without debias {(b2['full'] - b2['drop_debias']) * 100:.1f}")


def b2_changes(b2: dict) -> str:
    """"Removing debias raises the mean AUC by 63.7 points; removing denoise lowers it by 1.8 points."."""
    if b2["verdict"] == NOT_TESTABLE:
        return ""
    parts = []
    for name, delta in (("debias", -b2["drop_debias"]), ("denoise", -b2["drop_denoise"])):
        verb = "raises" if delta > 0.0005 else "lowers" if delta < -0.0005 else "leaves"
        parts.append(f"removing {name} {verb} the mean AUC" + (f" by {abs(delta) * 100:.1f} points"
                                                                if verb != "leaves" else " unchanged"))
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


# ---------------------------------------------------------------------------------------------
# B3: the beta sweep (dda_beta)
# ---------------------------------------------------------------------------------------------
B3_RISE = 0.05
B3_FLAT = 0.03
B3_KNEE = 0.4
B3_RULE = (f"two parts: (a) a rise — mean AUC at β={B3_KNEE:g} is at least {B3_RISE * 100:.0f} points above β=0; "
           f"(b) a plateau — for every β from {B3_KNEE:g} to the largest swept, the mean AUC stays within "
           f"{B3_FLAT * 100:.0f} points (max minus min). Replicated if both hold, partly if one does, not "
           "replicated if neither does. Recorded for the README pipeline in raw β (the paper's units; set-level "
           "AUC); the minimal pair and normalised β are judged beside it; flagged runs left out.")


def verdict_b3(betas: Sequence[float], aucs: Sequence[float]) -> dict:
    """B3 from the mean AUC at each swept β (``analysis.beta_curve``)."""
    b = np.asarray(betas, dtype=np.float64)
    a = np.asarray(aucs, dtype=np.float64)
    if not len(a):
        return not_testable(NO_TRACE)
    if not (np.isclose(b, 0).any() and np.isclose(b, B3_KNEE).any()):
        raise ValueError(f"the β sweep must include 0 and {B3_KNEE}")
    at0, knee = float(a[np.isclose(b, 0)][0]), float(a[np.isclose(b, B3_KNEE)][0])
    tail = a[b >= B3_KNEE - 1e-9]
    rise, spread = knee - at0, float(tail.max() - tail.min())
    return {"verdict": verdict_from([rise >= B3_RISE, spread <= B3_FLAT]), "rise": rise, "plateau_spread": spread,
            "auc_at_0": at0, "auc_at_knee": knee, "best_beta": float(b[int(np.argmax(a))]),
            "largest_beta": float(b.max()),
            "status": "ok",  # the paper describes the rise ("fast, then flat") without a number
            "headline": headline(f"AUC at β = {B3_KNEE:g} minus at β = 0 (the rise)", AUC_POINTS, rise * 100, None,
                                 threshold=B3_RISE * 100)}


def ours_b3(b3: dict) -> str:
    if b3["verdict"] == NOT_TESTABLE:
        return b3["reason"]
    return (f"AUC % at β=0: {b3['auc_at_0'] * 100:.1f}, at β={B3_KNEE:g}: {b3['auc_at_knee'] * 100:.1f} "
            f"(rise {b3['rise'] * 100:+.1f} points); spread over β in [{B3_KNEE:g}, {b3['largest_beta']:g}]: "
            f"{b3['plateau_spread'] * 100:.1f} points; best β {b3['best_beta']:g}")


# ---------------------------------------------------------------------------------------------
# B4: model sizes (dda_sizes)
# ---------------------------------------------------------------------------------------------
B4_SPREAD = 0.05
B4_FLOOR = 0.80
B4_RULE = (f"at normalised β = 1 (β relative to the ratio of the two terms' scales, so that size does not change "
           f"what β means), two parts: (a) stable — DDA's mean AUC differs by at most {B4_SPREAD * 100:.0f} points "
           f"between the smallest and the largest value across sizes; (b) high at every size — at least "
           f"{B4_FLOOR * 100:.0f}% at each size. Replicated if both hold, partly if one does, not replicated if "
           "neither does. Sizes whose runs all fail the label check (or hallucinate nowhere) are reported and left "
           "out; a size failing a guard is left out too; the claim needs two sizes. Recorded for the README "
           "pipeline (set-level AUC), the minimal pair judged beside it.")


def size_status(run_list: Sequence[DDARun], sizes: Sequence[str]) -> pd.DataFrame:
    """Per size: runs, untraced, flagged, usable, guard failures, and whether it enters B4."""
    rows = []
    for z in sizes:
        t = testability([r for r in run_list if r.size == z])
        failed = "; ".join(f for v in t["guard_failures"].values() for f in v) or "none"
        rows.append({"size": z, "runs": t["runs"], "no hallucination": t["untraced"],
                     "failed label check": t["flagged"], "usable": t["usable"], "guards failed": failed,
                     "in B4": t["testable"], "why not": t["reason"]})
    return pd.DataFrame(rows)


def verdict_b4(aucs_by_size: Mapping[str, float], status: pd.DataFrame | None = None) -> dict:
    """B4 from DDA's mean AUC per size that enters the claim; not testable with fewer than two."""
    v = np.asarray(list(aucs_by_size.values()), dtype=np.float64)
    if len(v) < 2:
        out = [] if status is None else [f"{row['size']} ({row['why not']})" for _, row in status.iterrows()
                                         if not row["in B4"]]
        return not_testable(f"only {len(v)} size(s) can be compared" + (f"; left out: {', '.join(out)}" if out else ""))
    spread = float(v.max() - v.min())
    return {"verdict": verdict_from([spread <= B4_SPREAD, v.min() >= B4_FLOOR]), "spread": spread,
            "lowest": float(v.min()), "highest": float(v.max()), "auc_by_size": dict(aucs_by_size), "status": "ok",
            "headline": headline("DDA's lowest AUC across model sizes", "AUC %", float(v.min()) * 100,
                                 PAPER_SIZES_AUC * 100, threshold=B4_FLOOR * 100,
                                 note="paper: about 90 at each of three sizes [seed]")}


def ours_b4(b4: dict, parameters: Mapping[str, int]) -> str:
    if b4["verdict"] == NOT_TESTABLE:
        return b4["reason"]
    return "DDA AUC % at normalised β = 1: " + ", ".join(
        f"{z} ({parameters[z] / 1e6:.2f}M) {v * 100:.1f}" for z, v in b4["auc_by_size"].items()) + (
        f"; spread {b4['spread'] * 100:.1f} points")


def b4_note(b4: dict) -> str:
    """Which part of B4 holds when only one does (empty otherwise)."""
    if b4["verdict"] == NOT_TESTABLE:
        return ""
    if b4["spread"] <= B4_SPREAD and b4["lowest"] < B4_FLOOR:
        return (f"DDA's AUC is stable across sizes, but stably low (lowest {b4['lowest'] * 100:.1f}%"
                f"{', below chance' if b4['highest'] < 0.5 else ''}): the part of the claim that holds is "
                "the stability, not the accuracy the paper reports.")
    if b4["spread"] > B4_SPREAD and b4["lowest"] >= B4_FLOOR:
        return "DDA stays high at every size, but how high depends on the size by more than the rule allows."
    return ""


def verdict_sentence(name: str, v: dict, ours: str) -> str:
    """"The minimal-pair reconstruction: not replicated (AUC % ...)." for the reconstruction beside the recorded one."""
    return f"{name}: {v['verdict']}" + (f" ({ours})." if v["verdict"] != NOT_TESTABLE else f" — {v['reason']}.")


__all__ = ["NO_TRACE", "RECORDED", "MINIMAL", "PAPER_AUC", "PAPER_DDA_AUC", "PAPER_BASELINE_AUC_TOP", "PAPER_SIZES_AUC",
           "AUC_POINTS", "PAPER_ABLATION", "PAPER_ABLATION_TEXT", "PAPER_CLAIMS",
           "STATEMENTS", "testability", "left_out_sentence", "not_testable", "record", "per_seed", "method_comparison",
           "B1_MARGIN", "B1_BASELINES", "B1_RULE", "verdict_b1", "ours_b1", "closest_baseline_sentence", "B2_HELPS",
           "B2_RATIO", "B2_RULE", "ablation_table", "ablation_aucs", "verdict_b2", "ours_b2", "b2_changes", "B3_RISE",
           "B3_FLAT", "B3_KNEE", "B3_RULE", "verdict_b3", "ours_b3", "B4_SPREAD", "B4_FLOOR", "B4_RULE", "size_status",
           "verdict_b4", "ours_b4", "b4_note", "verdict_sentence"]
