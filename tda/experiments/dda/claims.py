"""Part II's claims: the paper's figures, each claim's rule, its verdict, and the text around it.

Claims B1–B4 of REFERENCES.md. For each claim ``X``: ``RULE_X`` (the rule, fixed before any result
was computed; the chapters glue this very text), ``verdict_x`` (the one function that decides it;
its ``"verdict"`` is one of ``tda.results.VERDICTS``, or ``NOT_TESTED`` when there is nothing to
test, e.g. no hallucinated output), ``ours_x`` (our figure as text) and ``record_x`` (the
scoreboard rows: one ``tda.results.claim``, none when not tested). The explanation helpers turn
the diagnostics into the sentences the chapters show. The notebooks call, glue and display.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ...results import NOT_TESTED, claim, fmt, verdict_from
from .analysis import auc_summary, per_query_table, run_means
from .pipeline import EXTRA_METHODS, METHODS, DDARun

NO_TRACE = "no hallucinated output to trace"

# ---------------------------------------------------------------------------------------------
# the paper's figures (REFERENCES.md, with provenance)
# ---------------------------------------------------------------------------------------------
PAPER_AUC = {
    "DDA": "91.6 (mean of 3 models) [paper]; ~93.5 [2nd]",
    "TracIn": "mostly 50–60 [seed]",
    "TRAK": "mostly 50–60 [seed]",
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
    "B2": (f"full {PAPER_ABLATION['DDA (full)'] * 100:.1f}, without denoise {PAPER_ABLATION['without denoise'] * 100:.1f}, "
           f"without debias {PAPER_ABLATION['without debias'] * 100:.1f} (AUC %) [seed]"),
    "B3": "rises fast from beta=0 to ~0.4, then flat [seed]",
    "B4": "about 90% AUC at Qwen2 0.5B, 1.5B and 7B [seed]",
}
STATEMENTS = {
    "B1": "DDA beats TracIn, TRAK and BM25 by a wide margin on hallucination tracing (AUC).",
    "B2": "Removing debias hurts far more than removing denoise; both help.",
    "B3": "AUC rises with beta up to about 0.4 and then stays flat.",
    "B4": "DDA's accuracy holds across model sizes.",
}


def method_comparison(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The paper's Table-1 style: per method, the paper's AUC beside ours (mean ± std over seeds)."""
    rows = []
    for m in METHODS + EXTRA_METHODS:
        t = table[table["method"] == m] if not table.empty else table
        if t is None or t.empty:
            continue
        t = t.iloc[0]
        rows.append({"method": m, "paper: AUC %": PAPER_AUC[m], "ours: AUC %": fmt(t["auc mean"], t["auc std"]),
                     f"ours: recall@{k} %": fmt(t[f"recall@{k} mean"], t[f"recall@{k} std"]),
                     "seeds": int(t["seeds"]), "queries": int(t["queries"])})
    return pd.DataFrame(rows)


def _not_tested(reason: str = NO_TRACE, **extra) -> dict:
    return {"verdict": NOT_TESTED, "reason": reason, "status": "nothing to trace", **extra}


# ---------------------------------------------------------------------------------------------
# B1: DDA against the baselines (dda_main)
# ---------------------------------------------------------------------------------------------
B1_MARGIN = 0.10
B1_RULE = (f"replicated if DDA's mean AUC exceeds each of TracIn, TRAK and BM25 by at least "
           f"{B1_MARGIN * 100:.0f} points and DDA is ahead of each of them in every seed; partly if DDA's mean "
           "AUC is above all three but not by that margin (or not in every seed); not replicated if one of them "
           "matches or beats DDA's mean AUC.")


def per_seed_auc(per_query: pd.DataFrame, methods: Sequence[str] = ("DDA", "TracIn", "TRAK", "BM25")) -> dict:
    """``{method: [mean AUC per seed]}`` (same seeds, same order) from the per-query table; ``{}``
    when there is nothing traced."""
    if per_query.empty:
        return {}
    per_seed = run_means(per_query, ("method",)).pivot(index="seed", columns="method", values="auc")
    return {m: per_seed[m].to_numpy() for m in methods}


def verdict_b1(per_seed: Mapping[str, Sequence[float]]) -> dict:
    """B1 from per-seed mean AUCs ``{method: [auc per seed]}`` (``per_seed_auc``); not tested when empty."""
    if not per_seed or not len(per_seed["DDA"]):
        return _not_tested()
    dda = np.asarray(per_seed["DDA"], dtype=np.float64)
    margins, every_seed = {}, {}
    for m in ("TracIn", "TRAK", "BM25"):
        other = np.asarray(per_seed[m], dtype=np.float64)
        margins[m] = float(dda.mean() - other.mean())
        every_seed[m] = bool((dda > other).all())
    worst = min(margins, key=margins.get)
    if margins[worst] <= 0:
        verdict = "not replicated"
    elif all(v >= B1_MARGIN for v in margins.values()) and all(every_seed.values()):
        verdict = "replicated"
    else:
        verdict = "partly"
    return {"verdict": verdict, "margins": margins, "ahead_every_seed": every_seed, "closest": worst,
            "seeds": len(dda), "status": "ok"}


def ours_b1(b1: dict, table: pd.DataFrame) -> str:
    if b1["verdict"] == NOT_TESTED:
        return b1["reason"]
    auc = table.set_index("method")
    return (f"AUC %: DDA {fmt(auc.loc['DDA', 'auc mean'], auc.loc['DDA', 'auc std'])}, "
            + ", ".join(f"{m} {fmt(auc.loc[m, 'auc mean'], auc.loc[m, 'auc std'])}"
                        for m in ("TracIn", "TRAK", "BM25", "random"))
            + f" ({b1['seeds']} seeds, {int(auc.loc['DDA', 'queries'])} queries)")


def record_b1(b1: dict, ours: str) -> list[dict]:
    if b1["verdict"] == NOT_TESTED:
        return []
    return [claim("B1", STATEMENTS["B1"], PAPER_CLAIMS["B1"], ours, b1["verdict"], B1_RULE, margins=b1["margins"],
                  ahead_every_seed=b1["ahead_every_seed"])]


def closest_baseline_sentence(b1: dict) -> str:
    """How far the closest baseline is from DDA (empty when B1 was not tested)."""
    if b1["verdict"] == NOT_TESTED:
        return ""
    m = b1["margins"][b1["closest"]] * 100
    return (f"The closest baseline, {b1['closest']}, is {m:.1f} points below DDA." if m > 0 else
            f"The best baseline, {b1['closest']}, is {-m:.1f} points above DDA.")


def beta0_sentence(run_list: Sequence[DDARun], table: pd.DataFrame, beta: float) -> str:
    """DDA without its debias term against the best baseline (not part of the verdict)."""
    if table.empty:
        return "There are no hallucinated outputs, so there is nothing to compare."
    nodebias = auc_summary(per_query_table(run_list, lambda r: {"DDA, β = 0": r.dots.dda(beta=0.0)})).iloc[0]
    others = table.set_index("method").loc[["TracIn", "TRAK", "BM25"], "auc mean"]
    gap = (nodebias["auc mean"] - others.max()) * 100
    return (f"DDA without its debias term (β = 0, contrast and denoise kept) reaches "
            f"{fmt(nodebias['auc mean'], nodebias['auc std'])}% AUC, {abs(gap):.1f} points "
            f"{'above' if gap >= 0 else 'below'} the best baseline ({others.idxmax()}). This is not the "
            f"method the claim is about (its β is {beta:g}), so it does not enter the verdict.")


def no_trace_note(run_list: Sequence[DDARun], what: str) -> str:
    """Why a chapter has nothing to attribute, or which runs it leaves out (empty when none)."""
    untraced = [r for r in run_list if not r.traced]
    if not untraced:
        return ""
    which = ", ".join(f"{r.size} seed {r.seed} (0 of {r.report.n})" for r in untraced)
    if len(untraced) == len(run_list):
        return (f"No run produced a hallucinated output — {which} — so there is nothing to trace and {what} "
                "is not tested here: no AUC is computed and no verdict is recorded. To get hallucinations, "
                "poison more training summaries (`poison_fraction`), fine-tune longer or with a higher learning "
                "rate (`epochs`, `lr`), or prompt more test documents (`n_docs`, `test_fraction`).")
    return (f"{len(untraced)} of {len(run_list)} runs produced no hallucinated output and are left out of the "
            f"averages: {which}.")


# ---------------------------------------------------------------------------------------------
# B2: the ablation (dda_ablation)
# ---------------------------------------------------------------------------------------------
B2_HELPS = 0.01
B2_RATIO = 2.0
B2_RULE = (f"two parts: (a) both help — removing debias and removing denoise each lower the mean AUC by more "
           f"than {B2_HELPS * 100:.0f} point; (b) debias matters far more — removing it costs at least "
           f"{B2_RATIO:g}x what removing denoise costs (and more than {B2_HELPS * 100:.0f} point). Replicated if "
           "both hold, partly if one does, not replicated if neither does.")


def ablation_table(per_query: pd.DataFrame) -> pd.DataFrame:
    """The ablation's summary (one row per ``variant``): mean ± std AUC over seeds, the change against
    the full method in points, and the paper's figure and ours as text. Empty when nothing was traced."""
    table = auc_summary(per_query)
    if table.empty:
        return table
    table = table.rename(columns={"method": "variant"})
    full = table.set_index("variant").loc["DDA (full)", "auc mean"]
    table["change vs full (points)"] = ((table["auc mean"] - full) * 100).round(1)
    table["paper AUC %"] = table["variant"].map(PAPER_ABLATION_TEXT).fillna("")
    table["ours AUC %"] = [fmt(m, sd) for m, sd in zip(table["auc mean"], table["auc std"])]
    return table


def ablation_aucs(table: pd.DataFrame) -> tuple[float, float, float]:
    """(full, without debias, without denoise) mean AUC of an ablation table (column ``variant``);
    NaN when there is nothing traced."""
    if table.empty:
        return (float("nan"),) * 3
    t = table.set_index("variant")
    return tuple(t.loc[v, "auc mean"] for v in ("DDA (full)", "without debias", "without denoise"))


def verdict_b2(full: float, no_debias: float, no_denoise: float) -> dict:
    """B2 from the mean AUCs of the full method and the two ablations; not tested when one is missing."""
    if not np.isfinite([full, no_debias, no_denoise]).all():
        return _not_tested()
    d_debias, d_denoise = full - no_debias, full - no_denoise
    both_help = d_debias > B2_HELPS and d_denoise > B2_HELPS
    debias_far_more = d_debias > B2_HELPS and d_debias >= B2_RATIO * max(d_denoise, 0.0)
    return {"verdict": verdict_from([both_help, debias_far_more]), "drop_debias": float(d_debias),
            "drop_denoise": float(d_denoise), "both_help": bool(both_help), "debias_far_more": bool(debias_far_more),
            "status": "ok"}


def ours_b2(b2: dict, table: pd.DataFrame) -> str:
    if b2["verdict"] == NOT_TESTED:
        return b2["reason"]
    t = table.set_index("variant")
    return (f"AUC %: full {fmt(t.loc['DDA (full)', 'auc mean'], t.loc['DDA (full)', 'auc std'])}, "
            f"without denoise {fmt(t.loc['without denoise', 'auc mean'], t.loc['without denoise', 'auc std'])}, "
            f"without debias {fmt(t.loc['without debias', 'auc mean'], t.loc['without debias', 'auc std'])} "
            f"({int(t.loc['DDA (full)', 'seeds'])} seeds)")


def record_b2(b2: dict, ours: str) -> list[dict]:
    if b2["verdict"] == NOT_TESTED:
        return []
    return [claim("B2", STATEMENTS["B2"], PAPER_CLAIMS["B2"], ours, b2["verdict"], B2_RULE,
                  drop_debias=b2["drop_debias"], drop_denoise=b2["drop_denoise"])]


def change_sentence(changes: Mapping[str, float]) -> str:
    """"Removing debias raises the mean AUC by 63.7 points; removing denoise lowers it by 1.8 points."
    from ``{ingredient: AUC without it minus AUC of the full method}``."""
    parts = []
    for name, delta in changes.items():
        pts = abs(delta) * 100
        verb = "raises" if delta > 0.0005 else "lowers" if delta < -0.0005 else "leaves"
        parts.append(f"removing {name} {verb} the mean AUC" + (f" by {pts:.1f} points" if verb != "leaves" else
                                                                 " unchanged"))
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "." if text else ""


def b2_changes(b2: dict) -> str:
    """B2's two drops as a sentence (empty when not tested)."""
    if b2["verdict"] == NOT_TESTED:
        return ""
    return change_sentence({"debias": -b2["drop_debias"], "denoise": -b2["drop_denoise"]})


def explain_debias(diag: pd.DataFrame | None, beta: float) -> str:
    """One paragraph, computed from ``debias_diagnostics``, on what the debias term does here."""
    if diag is None or diag.empty:
        return "There is no run with hallucinated outputs, so there is nothing to explain."
    at0, atb = diag["AUC at β=0"].mean(), diag[f"AUC at β={beta:g}"].mean()
    alone, scale, corr = diag["AUC of C[IS_θ0] alone"].mean(), diag["scale of C[IS_θ0] / C[mean IS_θi]"].median(), \
        diag["correlation"].median()
    text = (f"Without the debias term (β = 0) DDA reaches {at0 * 100:.1f}% AUC; with β = {beta:g} it reaches "
            f"{atb * 100:.1f}%. The subtracted term, the base model's own contrastive influence C[IS_θ0], is "
            f"{scale:.1f} times as large as the fine-tuned checkpoints' average (median over queries), its scores "
            f"correlate at {corr:.2f} with theirs, and on its own it ranks the poisoned documents with "
            f"{alone * 100:.1f}% AUC.")
    if "loss at θ0" in diag:
        text += (f" The base model's loss on the training summaries is {diag['loss at θ0'].mean():.2f} nats per "
                 f"token against {diag['loss at θN'].mean():.2f} after fine-tuning: it has never seen the "
                 "summarisation prompt, so its gradients are large.")
    if atb < at0 - 0.01:
        reasons = []
        if scale * beta > 1.5:
            reasons.append(f"at β = {beta:g} the subtracted term outweighs the signal about {scale * beta:.0f} to 1, "
                           "so the ranking mostly follows the base model's scores, reversed")
        if alone > 0.55:
            reasons.append("the base model's own ranking already leans towards the poisoned documents — before it "
                           "ever saw a poisoned summary, the gradient of a summary that says China where its article "
                           "says England points the way of the hallucination — so what debias removes as bias is "
                           "partly the signal itself")
        text += (" Debiasing hurts here: " + "; and ".join(reasons) + "." if reasons else
                 " Debiasing hurts here, although the subtracted term is neither dominant nor informative on its own.")
    elif atb > at0 + 0.01:
        text += " Here subtracting the base model's influence removes more noise than signal, as the paper argues."
    else:
        text += " Here subtracting it changes little."
    return text


# ---------------------------------------------------------------------------------------------
# B3: the beta sweep (dda_beta)
# ---------------------------------------------------------------------------------------------
B3_RISE = 0.05
B3_FLAT = 0.03
B3_KNEE = 0.4
B3_RULE = (f"two parts: (a) a rise — mean AUC at β={B3_KNEE:g} is at least {B3_RISE * 100:.0f} points above β=0; "
           f"(b) a plateau — for every β from {B3_KNEE:g} to the largest swept, the mean AUC stays within "
           f"{B3_FLAT * 100:.0f} points (max minus min). Replicated if both hold, partly if one does, not "
           "replicated if neither does.")


def verdict_b3(betas: Sequence[float], aucs: Sequence[float]) -> dict:
    """B3 from the mean AUC at each swept β (``beta_curve``); not tested when the sweep is empty."""
    b = np.asarray(betas, dtype=np.float64)
    a = np.asarray(aucs, dtype=np.float64)
    if not len(a):
        return _not_tested()
    if not (np.isclose(b, 0).any() and np.isclose(b, B3_KNEE).any()):
        raise ValueError(f"the β sweep must include 0 and {B3_KNEE}")
    at0, knee = float(a[np.isclose(b, 0)][0]), float(a[np.isclose(b, B3_KNEE)][0])
    tail = a[b >= B3_KNEE - 1e-9]
    rise, spread = knee - at0, float(tail.max() - tail.min())
    return {"verdict": verdict_from([rise >= B3_RISE, spread <= B3_FLAT]), "rise": rise, "plateau_spread": spread,
            "auc_at_0": at0, "auc_at_knee": knee, "best_beta": float(b[int(np.argmax(a))]), "largest_beta": float(b.max()),
            "status": "ok"}


def ours_b3(b3: dict, curve: pd.DataFrame) -> str:
    if b3["verdict"] == NOT_TESTED:
        return b3["reason"]
    return (f"AUC % at β=0: {b3['auc_at_0'] * 100:.1f}, at β={B3_KNEE:g}: {b3['auc_at_knee'] * 100:.1f} "
            f"(rise {b3['rise'] * 100:+.1f} points); spread over β in [{B3_KNEE:g}, {b3['largest_beta']:g}]: "
            f"{b3['plateau_spread'] * 100:.1f} points; best β {b3['best_beta']:g} "
            f"({int(curve['seeds'].iloc[0])} seeds)")


def record_b3(b3: dict, ours: str) -> list[dict]:
    if b3["verdict"] == NOT_TESTED:
        return []
    return [claim("B3", STATEMENTS["B3"], PAPER_CLAIMS["B3"], ours, b3["verdict"], B3_RULE, rise=b3["rise"],
                  plateau_spread=b3["plateau_spread"], best_beta=b3["best_beta"])]


# ---------------------------------------------------------------------------------------------
# B4: model sizes (dda_sizes)
# ---------------------------------------------------------------------------------------------
B4_SPREAD = 0.05
B4_FLOOR = 0.80
B4_RULE = (f"two parts: (a) stable — DDA's mean AUC differs by at most {B4_SPREAD * 100:.0f} points between the "
           f"smallest and the largest value across sizes; (b) high at every size — at least {B4_FLOOR * 100:.0f}% "
           "at each size. Replicated if both hold, partly if one does, not replicated if neither does.")


def dda_auc_by_size(table: pd.DataFrame, sizes: Sequence[str]) -> dict[str, float]:
    """DDA's mean AUC per size that has traced outputs, in the order of ``sizes``."""
    if table.empty:
        return {}
    return {z: float(table[(table["size"] == z) & (table["method"] == "DDA")]["auc mean"].iloc[0])
            for z in sizes if ((table["size"] == z) & (table["method"] == "DDA")).any()}


def verdict_b4(aucs_by_size: Mapping[str, float]) -> dict:
    """B4 from DDA's mean AUC per size; not tested with fewer than two sizes to compare."""
    v = np.asarray(list(aucs_by_size.values()), dtype=np.float64)
    if len(v) < 2:
        reason = f"only {len(v)} size(s) with hallucinated outputs to trace" if len(v) else NO_TRACE
        return _not_tested(reason, status="fewer than two sizes" if len(v) else "nothing to trace")
    spread = float(v.max() - v.min())
    return {"verdict": verdict_from([spread <= B4_SPREAD, v.min() >= B4_FLOOR]), "spread": spread,
            "lowest": float(v.min()), "highest": float(v.max()), "status": "ok"}


def ours_b4(b4: dict, table: pd.DataFrame, aucs_by_size: Mapping[str, float], parameters: Mapping[str, int]) -> str:
    if b4["verdict"] == NOT_TESTED:
        return b4["reason"]
    t = table[table["method"] == "DDA"].set_index("size")
    return "DDA AUC %: " + ", ".join(
        f"{z} ({parameters[z] / 1e6:.2f}M) {fmt(t.loc[z, 'auc mean'], t.loc[z, 'auc std'])}" for z in aucs_by_size) + (
        f"; spread {b4['spread'] * 100:.1f} points")


def record_b4(b4: dict, ours: str, aucs_by_size: Mapping[str, float], parameters: Mapping[str, int]) -> list[dict]:
    if b4["verdict"] == NOT_TESTED:
        return []
    return [claim("B4", STATEMENTS["B4"], PAPER_CLAIMS["B4"], ours, b4["verdict"], B4_RULE,
                  auc_by_size=dict(aucs_by_size), parameters={z: parameters[z] for z in aucs_by_size})]


def b4_note(b4: dict) -> str:
    """Which part of B4 holds when only one does (empty otherwise)."""
    if b4["verdict"] == NOT_TESTED:
        return ""
    if b4["spread"] <= B4_SPREAD and b4["lowest"] < B4_FLOOR:
        return (f"DDA's AUC is stable across sizes, but stably low (lowest {b4['lowest'] * 100:.1f}%"
                f"{', below chance' if b4['highest'] < 0.5 else ''}): the part of the claim that holds is "
                "the stability, not the accuracy the paper reports.")
    if b4["spread"] > B4_SPREAD and b4["lowest"] >= B4_FLOOR:
        return "DDA stays high at every size, but how high depends on the size by more than the rule allows."
    return ""


def b4_beta0_sentence(table: pd.DataFrame) -> str:
    """DDA without debias across sizes, for comparison (empty when it was not scored)."""
    nodebias = table[table["method"] == "DDA, β = 0"] if not table.empty else table
    if nodebias.empty:
        return ""
    return (f"For comparison, DDA without its debias term (β = 0) reaches {nodebias['auc mean'].min() * 100:.1f}–"
            f"{nodebias['auc mean'].max() * 100:.1f}% at the sizes here; it is not the method the claim is about, so it "
            "does not enter the verdict.")


__all__ = ["NO_TRACE", "PAPER_AUC", "PAPER_ABLATION", "PAPER_ABLATION_TEXT", "PAPER_CLAIMS", "STATEMENTS",
           "method_comparison", "B1_MARGIN", "B1_RULE", "per_seed_auc", "verdict_b1", "ours_b1", "record_b1",
           "closest_baseline_sentence", "beta0_sentence", "no_trace_note", "B2_HELPS", "B2_RATIO", "B2_RULE",
           "ablation_table", "ablation_aucs", "verdict_b2", "ours_b2", "record_b2", "change_sentence", "b2_changes", "explain_debias",
           "B3_RISE", "B3_FLAT", "B3_KNEE", "B3_RULE", "verdict_b3", "ours_b3", "record_b3", "B4_SPREAD", "B4_FLOOR",
           "B4_RULE", "dda_auc_by_size", "verdict_b4", "ours_b4", "record_b4", "b4_note", "b4_beta0_sentence"]
