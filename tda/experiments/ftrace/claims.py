"""Part I's claims: the paper's figures, each claim's rule, its verdict, and the text around it.

Claims A1–A5 of REFERENCES.md. For each claim ``X``: ``rule_x`` (the rule as the chapter states it,
fixed before the results), ``verdict_x`` (the one function that decides it, from the per-query
tables of ``tda.experiments.ftrace.analysis`` and the guards' checks of
``tda.experiments.ftrace.guards``; its ``"verdict"`` is one of ``tda.results.VERDICTS``, and
``NOT_TESTABLE`` when a guard the claim depends on failed) and ``record_x`` (the scoreboard row,
``tda.results.claim``: the paper's figure from ``PAPER_TABLES`` and friends, ours from the summary,
the verdict and the rule). The notebooks call, glue and display; they compute no verdict themselves.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Mapping, Sequence

import pandas as pd

from ...gradients import unit_order
from ...results import NOT_TESTABLE, claim, fmt, headline, verdict_from
from ..variants import select, with_variants
from . import guards as G
from .analysis import MAIN_TRACIN, METRICS, main_slice, slice_text, unit_label
from .pipeline import label_fraction
from .comparisons import RULE, compare, compare_groups

# The paper's main tables (REFERENCES.md, "[2nd]": read from a secondary summary of the paper's
# tables; mean ± std over seeds, in %). Random-Target: the code's early single-seed run ("[code]").
PAPER_TABLES = {
    "trex": {
        "BM25": {"mrr": (77.55, 1.50), "recall@10": (60.89, 2.31)},
        "TracIn": {"mrr": (48.56, 4.40), "recall@10": (56.02, 0.67)},
        "TracIn (pre-training ckpts)": {"mrr": (62.38, 1.99), "recall@10": (57.54, 1.25)},
        "EMBED": {"mrr": (64.29, 1.32), "recall@10": (57.89, 1.38)},
        "TracIn+EMBED": {"mrr": (58.52, 3.83), "recall@10": (61.72, 0.08)},
        "Random-Target": {"mrr": (19.7, None)},
    },
    "synth": {
        "BM25": {"mrr": (87.69, 1.71), "precision@10": (52.02, 2.65), "recall@10": (4.20, 0.21)},
        "TracIn": {"mrr": (100.00, 0.0), "precision@10": (99.50, 0.14), "recall@10": (8.02, 0.01)},
        "EMBED": {"mrr": (99.58, 0.24), "precision@10": (97.12, 0.53), "recall@10": (7.83, 0.04)},
        "TracIn+EMBED": {"mrr": (100.00, 0.0), "precision@10": (98.07, 0.18), "recall@10": (7.91, 0.01)},
    },
}
PAPER_PROVENANCE = "[2nd] main tables (mean ± std over seeds); Random-Target: [code], one early seed"
# The layer sweep of an early single-seed run of the authors' code ([code]): TracIn's MRR on the
# input embeddings alone and in the next-best single block.
PAPER_LAYERS = {"TracIn, embedding": 0.496, "TracIn, next-best block": 0.409}
# Proponents per query in the real data sets (REFERENCES.md: TREx [2nd], SYNTH from the generator).
PAPER_PROPONENTS = {"trex": {"median": 7, "mean": 83}, "synth": {"median": 124, "mean": 124}}

STATEMENTS = {
    "A1": "On TREx, BM25 beats both TracIn and EMBED.",
    "A2": "For both TracIn and EMBED the best signal comes from the embedding layer.",
    "A3": "A single good checkpoint can match or beat averaging several.",
    "A4": "Gradient saturation: TracIn over checkpoints where a fact is already learned has little signal; "
          "checkpoints from before it was learned do better.",
    "A5": "On novel synthetic facts (SYNTH) TracIn beats BM25 and EMBED.",
}


def paper_figure(mean: float, std: float | None = None) -> str:
    """A figure of the paper's tables as the chapters print it: one decimal, rounded half up as the
    printed decimal reads (77.55 -> 77.6, which binary floating point would round down); a std of
    exactly 0 is written ``0``, a missing one left out."""
    def one(x: float) -> str:
        return str(Decimal(repr(float(x))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))

    if std is None:
        return one(mean)
    return f"{one(mean)} ± {'0' if std == 0 else one(std)}"


def _paper_mrr(dataset: str, method: str) -> str:
    return paper_figure(*PAPER_TABLES[dataset][method]["mrr"])


def paper_vs_ours(summary: pd.DataFrame, dataset: str, methods: Sequence[str],
                  metrics_: Sequence[str] = METRICS) -> pd.DataFrame:
    """The paper's number beside ours for each method and metric (both in %, mean ± std)."""
    rows = []
    for method in methods:
        row = {"method": method}
        ours = summary[(summary["dataset"] == dataset) & (summary["method"] == method)]
        for m in metrics_:
            p = PAPER_TABLES.get(dataset, {}).get(method, {}).get(m)
            row[f"{m} paper"] = "" if p is None else paper_figure(*p)
            row[f"{m} ours"] = fmt(float(ours[m].iloc[0]), float(ours[f"{m}_std"].iloc[0])) if len(ours) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def _mrr_of(summary: pd.DataFrame, dataset: str, method: str) -> str:
    row = summary[(summary["dataset"] == dataset) & (summary["method"] == method)]
    if row.empty:  # a data set that did not run (SYNTH with a real source)
        return "n/a"
    return fmt(float(row["mrr"].iloc[0]), float(row["mrr_std"].iloc[0]))


def _with_reason(ours: str, result: Mapping) -> str:
    """Ours, with the reason when the claim is not testable here."""
    return ours if result["verdict"] != NOT_TESTABLE else f"{ours}; not testable here: {result['reason']}"


def _guard_fields(result: Mapping) -> dict:
    """The guard checks a scoreboard row records (and the rule's outcome when a guard failed), and the
    verdict's headline number when it has one."""
    out = {"guards": result.get("guards", []), "failed_guards": result.get("failed_guards", [])}
    if "rule_outcome" in result:
        out["rule_outcome"] = result["rule_outcome"]
    if result.get("headline") is not None:
        out["headline"] = result["headline"]
    return out


def beats_all(per_query: pd.DataFrame, winner, losers: Sequence, margin: float = 0.02, metric: str = "mrr",
              **filters) -> tuple[str, list[dict]]:
    """The verdict of "``winner`` beats every one of ``losers``": replicated if it beats all
    (``compare``'s rule), partly if some, not replicated if none; and the comparisons."""
    comps = [compare(per_query, winner, loser, metric=metric, margin=margin, **filters) for loser in losers]
    return verdict_from([c["beats"] for c in comps]), comps


MRR_POINTS = "MRR points"  # the headlines' unit: MRR in % as the paper's tables print it


def extreme(values: Sequence[float], pick=min) -> float:
    """``pick`` (min or max) of ``values``, NaN when any is NaN or there are none: a headline that
    takes the worst of several comparisons is undefined when one of them is (Python's own min and
    max would skip or keep a NaN depending on where it stands)."""
    values = [float(v) for v in values]
    return pick(values) if values and all(math.isfinite(v) for v in values) else float("nan")


def _paper_mrr_value(dataset: str, method: str) -> float | None:
    """The paper's mean MRR (%) of a method in its main table (None for a method it does not list)."""
    return PAPER_TABLES.get(dataset, {}).get(method, {}).get("mrr", (None,))[0]


def beats_all_headline(comps: Sequence[dict], dataset: str, margin: float) -> dict | None:
    """The headline of "``a`` beats every one of the others": ``a``'s MRR minus the best other's (the
    smallest of the comparisons' differences), ours and the paper's main table's, in MRR points; the
    rule's line is the margin."""
    winner, losers = comps[0]["a"], [c["b"] for c in comps]
    values = [_paper_mrr_value(dataset, m) for m in (winner, *losers)]
    paper = None if None in values else min(values[0] - v for v in values[1:])
    others = " and ".join(f"{m}'s" for m in losers)
    return headline(f"{winner}'s MRR minus the {'better' if len(losers) == 2 else 'best'} of {others}", MRR_POINTS,
                    extreme([c["diff"] for c in comps]) * 100, paper, threshold=margin * 100)


# ---------------------------------------------------------------------------------------------
# A1 and A5: the main comparison (ftrace_methods)
# ---------------------------------------------------------------------------------------------
def rule_a1(margin: float, slice_: str | None, n_seeds: int) -> str:
    return (f"BM25 beats a method when its mean MRR on the same {slice_text(slice_)} ({n_seeds} seeds) is "
            f"{RULE.replace('the margin', f'{margin:.2f}')}; replicated if BM25 beats both TracIn (fine-tuning "
            "checkpoints, input embedding, unit-normalised, Adam-corrected) and EMBED (layer 0), partly if one, not "
            "replicated if neither. Not testable here when whole-set BM25 scores MRR 0.95 or more (guard).")


def verdict_a1(per_query: pd.DataFrame, margin: float = 0.02, slice_: str | None = None, *, guards: Sequence[Mapping],
               bm25: str = "BM25", tracin: str = "TracIn", embed: str = "EMBED") -> dict:
    """A1 on the TREx analogue: BM25 beats TracIn and EMBED (``compare``'s rule on ``slice_``);
    ``guards``: ``tda.experiments.ftrace.guards.check``'s list (A1 needs whole-set BM25 < 0.95)."""
    verdict, comps = beats_all(per_query, bm25, [tracin, embed], margin, dataset="trex", slice=slice_)
    return G.gate("A1", {"verdict": verdict, "comparisons": comps,
                         "headline": beats_all_headline(comps, "trex", margin)}, guards)


def record_a1(a1: dict, a1_variants: dict, summary: pd.DataFrame, slice_: str | None, n_seeds: int,
              margin: float) -> dict:
    """A1's scoreboard row; ``a1_variants``: the same rule with the variants (reported, not decisive)."""
    paper = "MRR (%): " + ", ".join(f"{m} {_paper_mrr('trex', m)}" for m in ("BM25", "TracIn", "EMBED")) + " [2nd]"
    ours = (f"MRR (%): BM25 {_mrr_of(summary, 'trex', 'BM25')}, TracIn {_mrr_of(summary, 'trex', 'TracIn')}, "
            f"EMBED {_mrr_of(summary, 'trex', 'EMBED')} (TREx analogue, {slice_text(slice_)}, {n_seeds} seeds)")
    return claim("A1", STATEMENTS["A1"], paper, _with_reason(ours, a1), a1["verdict"], rule_a1(margin, slice_, n_seeds),
                 **_guard_fields(a1), comparisons=a1["comparisons"], verdict_with_variants=a1_variants["verdict"])


def rule_a5(slice_: str | None) -> str:
    return (f"Same rule on SYNTH ({slice_text(slice_)}): replicated if TracIn beats both BM25 and EMBED, partly if one, "
            "not replicated if neither. Not testable here when fewer than 80% of the SYNTH queries are learned (guard).")


def verdict_a5(per_query: pd.DataFrame, margin: float = 0.02, slice_: str | None = None, *, guards: Sequence[Mapping],
               tracin: str = "TracIn", bm25: str = "BM25", embed: str = "EMBED") -> dict:
    """A5 on SYNTH: TracIn beats BM25 and EMBED (``compare``'s rule on ``slice_``), gated by the
    ``synth_learned`` guard. Not testable without SYNTH runs (a real source has none: SYNTH is
    built from the synthetic world's facts)."""
    if not (per_query["dataset"] == "synth").any():
        return {"verdict": NOT_TESTABLE, "comparisons": [], "guards": [], "failed_guards": [],
                "reason": "FTRACE-SYNTH is built from the synthetic world's facts: not available with a real source"}
    verdict, comps = beats_all(per_query, tracin, [bm25, embed], margin, dataset="synth", slice=slice_)
    return G.gate("A5", {"verdict": verdict, "comparisons": comps,
                         "headline": beats_all_headline(comps, "synth", margin)}, guards)


def record_a5(a5: dict, a5_variants: dict, summary: pd.DataFrame, slice_: str | None, n_seeds: int) -> dict:
    """A5's scoreboard row."""
    paper = "MRR (%): " + ", ".join(f"{m} {_paper_mrr('synth', m)}" for m in ("TracIn", "EMBED", "BM25")) + " [2nd]"
    ours = (f"MRR (%): TracIn {_mrr_of(summary, 'synth', 'TracIn')}, EMBED {_mrr_of(summary, 'synth', 'EMBED')}, "
            f"BM25 {_mrr_of(summary, 'synth', 'BM25')} (SYNTH, {slice_text(slice_)}, {n_seeds} seeds)")
    return claim("A5", STATEMENTS["A5"], paper, _with_reason(ours, a5), a5["verdict"], rule_a5(slice_),
                 **_guard_fields(a5), comparisons=a5["comparisons"], verdict_with_variants=a5_variants["verdict"])


# ---------------------------------------------------------------------------------------------
# A2: layers (ftrace_layers)
# ---------------------------------------------------------------------------------------------
def rule_a2(margin: float, slice_: str | None) -> str:
    return (f"On the TREx analogue's {slice_text(slice_)}, a unit or layer beats another when its mean MRR is higher "
            f"{RULE.replace('the margin', f'{margin:.2f}')}. The embedding layer gives the best "
            f"signal for a method when the evidence says so: for every other block, head or layer, the upper end of "
            f"the interval of (its MRR minus the embedding's) is below {margin:.2f}. Replicated if that holds for both "
            "TracIn and EMBED, partly if for one, not replicated if for neither (too few queries to tell counts as "
            "not holding; whether a challenger beats the embedding is reported beside it).")


def swept_units_and_layers(per_query: pd.DataFrame) -> tuple[list[str], list[int]]:
    """The single TracIn units (embedding .. other) and EMBED layers of ``layer_scores``' table."""
    units = [u for u in per_query["units"].dropna().unique() if u != "all"] if "units" in per_query else []
    layers = [v for v in per_query["layer"].dropna().unique() if v != "all"] if "layer" in per_query else []
    return unit_order(units), sorted(int(i) for i in layers)


def verdict_a2(per_query: pd.DataFrame, margin: float = 0.02, slice_: str | None = None, dataset: str = "trex", *,
               guards: Sequence[Mapping]) -> dict:
    """A2: the embedding layer gives the best signal for TracIn (against every other block and head)
    and for EMBED (against every other layer), with evidence: every challenger's interval of
    (challenger - embedding) lies below the margin (``ci_high < margin``). "Not beaten" alone is not
    enough, since with few queries nothing is ever beaten (the rule before issue 11's review could not
    fail on one seed); ``*_beaten`` records whether some challenger significantly beats it."""
    units, layers = swept_units_and_layers(per_query)

    def best_with_evidence(challengers: Sequence[dict], reference: dict) -> tuple[bool, bool, list[dict]]:
        comps = [compare(per_query, c, reference, margin=margin, dataset=dataset, slice=slice_) for c in challengers]
        best = bool(comps) and all(c["ci_high"] < margin for c in comps)  # NaN (n < 2) is not evidence
        return best, any(c["beats"] for c in comps), comps

    tracin_ok, tracin_beaten, tracin_comps = best_with_evidence(
        [{"units": u} for u in units if u not in ("embedding", "other")], {"units": "embedding"})
    embed_ok, embed_beaten, embed_comps = best_with_evidence([{"layer": i} for i in layers if i != 0], {"layer": 0})
    # The headline is TracIn's lead, the one the paper gives a number for (EMBED's is only "best at the
    # embedding layer"); the rule asks every challenger's interval to stay below +margin, so its line is -margin.
    lead = -extreme([c["diff"] for c in tracin_comps], max) * 100
    paper = (PAPER_LAYERS["TracIn, embedding"] - PAPER_LAYERS["TracIn, next-best block"]) * 100
    return G.gate("A2", {"verdict": verdict_from([tracin_ok, embed_ok]), "tracin_embedding_best": tracin_ok,
                         "embed_layer0_best": embed_ok, "tracin_embedding_beaten": tracin_beaten,
                         "embed_layer0_beaten": embed_beaten, "comparisons": tracin_comps + embed_comps,
                         "headline": headline("TracIn: MRR of the embedding unit minus the best other block's",
                                              MRR_POINTS, lead, paper, threshold=-margin * 100,
                                              note="paper: one early seed of the authors' code [code]")}, guards)


def a2_comparison_table(a2: dict) -> pd.DataFrame:
    """A2's comparisons, one row per challenger of the embedding unit or layer 0."""
    return pd.DataFrame([{"challenger": c["a"], "vs": c["b"], "queries": c["n"], "MRR challenger": round(c["mean_a"], 3),
                          "MRR embedding": round(c["mean_b"], 3), "difference": round(c["diff"], 3),
                          "95% interval": f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}]", "beats the embedding": c["beats"]}
                         for c in a2["comparisons"]])


def record_a2(a2: dict, summary: pd.DataFrame, per_query: pd.DataFrame, slice_: str | None, n_seeds: int,
              margin: float, dataset: str = "trex") -> dict:
    """A2's scoreboard row; ours names the best challenger unit and layer by mean MRR."""
    units, layers = swept_units_and_layers(per_query)
    s = with_variants(summary[summary["dataset"] == dataset], per_query, ["units", "layer"])

    def mrr(**variant) -> float:
        return float(select(s, **variant)["mrr"].iloc[0])

    best_block = max((u for u in units if u not in ("embedding", "other")), key=lambda u: mrr(units=u))
    best_layer = max((i for i in layers if i != 0), key=lambda i: mrr(layer=i))
    ours = (f"TREx analogue ({slice_text(slice_)}, {n_seeds} seeds), MRR: TracIn embedding {mrr(units='embedding'):.3f} "
            f"vs best other unit ({unit_label(best_block)}) {mrr(units=best_block):.3f}; EMBED layer 0 "
            f"{mrr(layer=0):.3f} vs best other layer ({best_layer}) {mrr(layer=best_layer):.3f}")
    paper = (f"TracIn: embedding-only MRR {PAPER_LAYERS['TracIn, embedding']:.3f} vs next-best block "
             f"{PAPER_LAYERS['TracIn, next-best block']:.3f} (one early seed [code]); EMBED: best at the embedding layer")
    return claim("A2", STATEMENTS["A2"], paper, _with_reason(ours, a2), a2["verdict"], rule_a2(margin, slice_),
                 **_guard_fields(a2), tracin_embedding_best=a2["tracin_embedding_best"],
                 embed_layer0_best=a2["embed_layer0_best"])


# ---------------------------------------------------------------------------------------------
# A3: checkpoints (ftrace_checkpoints)
# ---------------------------------------------------------------------------------------------
def rule_a3(margin: float, slice_: str | None) -> str:
    return (f"TracIn (embedding matrix, cosine, Adam-corrected) on the TREx analogue's {slice_text(slice_)}: the best "
            f"single checkpoint matches or beats the average unless the average's mean MRR is higher by more than "
            f"{margin:.2f}, with the 95% bootstrap interval of the difference (over seeds, then queries) above zero. "
            "Replicated if the best single checkpoint matches "
            "or beats the average for both fine-tuning and pre-training checkpoints, partly if for one, not replicated "
            "if for neither.")


def best_single_checkpoint(summary: pd.DataFrame, per_query: pd.DataFrame, which: str, dataset: str,
                           slice_: str | None, margin: float, units: str | None = None) -> dict:
    """Of one checkpoint kind (``which``: ft/pt), the best single checkpoint by mean MRR (and the
    last) against the average over all of them, in the main configuration (cosine, corrected).

    ``summary``: a ``seed_summary`` of ``checkpoint_scores`` by its variant columns."""
    config = {"units": units or MAIN_TRACIN["units"], "similarity": "cosine", "correction": "corrected"}
    s = select(summary, dataset=dataset, which=which, **config)
    single = s[s["checkpoint"] != "average"]
    best = single.loc[single["mrr"].idxmax(), "checkpoint"]
    last = max(single["checkpoint"], key=label_fraction)
    average = {"which": which, **config, "checkpoint": "average"}
    kw = dict(margin=margin, dataset=dataset, slice=slice_)
    c = compare(per_query, average, {"which": which, **config, "checkpoint": best}, **kw)
    c_last = compare(per_query, average, {"which": which, **config, "checkpoint": last}, **kw)
    return {"checkpoints": which, "best single": best, "best MRR": float(single["mrr"].max()),
            "average MRR": float(s[s["checkpoint"] == "average"]["mrr"].iloc[0]), "last": last,
            "last MRR": float(single[single["checkpoint"] == last]["mrr"].iloc[0]),
            "average beats best": c["beats"], "average beats last": c_last["beats"], "matches or beats": not c["beats"]}


def verdict_a3(summary: pd.DataFrame, per_query: pd.DataFrame, slices: Mapping[str, str | None],
               margin: float = 0.02, units: str | None = None, *, guards: Sequence[Mapping]) -> dict:
    """A3 on the TREx analogue: the best single checkpoint matches or beats the average, for
    fine-tuning and for pre-training checkpoints (SYNTH reported beside, not decisive)."""
    parts = {w: best_single_checkpoint(summary, per_query, w, "trex", slices.get("trex"), margin, units)
             for w in ("ft", "pt")}
    synth = {w: best_single_checkpoint(summary, per_query, w, "synth", slices.get("synth"), margin, units)
             for w in ("ft", "pt")} if (summary["dataset"] == "synth").any() else {}
    # The paper reports no number for A3 (its checkpoint sweeps are described, not tabulated).
    gap = extreme([p["best MRR"] - p["average MRR"] for p in parts.values()]) * 100
    return G.gate("A3", {"verdict": verdict_from([parts["ft"]["matches or beats"], parts["pt"]["matches or beats"]]),
                         "parts": parts, "synth": synth,
                         "headline": headline("best single checkpoint's MRR minus the average's (lower of "
                                              "fine-tuning, pre-training)", MRR_POINTS, gap, None,
                                              threshold=-margin * 100)}, guards)


def a3_table(a3: dict) -> pd.DataFrame:
    """A3's best single, last and average checkpoints per data set and kind (rounded for display)."""
    return pd.DataFrame([{"dataset": "trex", **p} for p in a3["parts"].values()]
                        + [{"dataset": "synth", **p} for p in a3["synth"].values()]).round(3)


def record_a3(a3: dict, slice_: str | None, n_seeds: int, margin: float) -> dict:
    """A3's scoreboard row."""
    p = a3["parts"]
    ours = (f"TREx analogue ({slice_text(slice_)}, {n_seeds} seeds), TracIn MRR: fine-tuning best single "
            f"{p['ft']['best single']} {p['ft']['best MRR']:.3f} vs average {p['ft']['average MRR']:.3f}; pre-training "
            f"best single {p['pt']['best single']} {p['pt']['best MRR']:.3f} vs average {p['pt']['average MRR']:.3f}")
    return claim("A3", STATEMENTS["A3"], "checkpoint sweeps in the paper: single checkpoints match the 4-checkpoint "
                 "average [paper]", _with_reason(ours, a3), a3["verdict"], rule_a3(margin, slice_), **_guard_fields(a3),
                 parts=dict(p), synth=a3["synth"])


# ---------------------------------------------------------------------------------------------
# A4: saturation (ftrace_saturation)
# ---------------------------------------------------------------------------------------------
def rule_a4(margin: float, slice_: str | None) -> str:
    return (f"(a) on the TREx analogue's {slice_text(slice_)}, TracIn over pre-training checkpoints beats TracIn over "
            f"fine-tuning checkpoints (paired mean MRR difference > {margin:.2f}, its 95% bootstrap interval over seeds "
            "then queries above zero); (b) TracIn over fine-tuning checkpoints has a higher MRR on fine-tune-learned than "
            "on already-known queries (unpaired, same thresholds). Replicated if (a) and (b), partly if one, not "
            "replicated if neither. Not testable here when fewer than 90% of the known facts are still answered at some "
            "TracIn fine-tuning checkpoint, or fewer than 50% of the new facts are learned (guards).")


def verdict_a4(per_query: pd.DataFrame, margin: float = 0.02, *, guards: Sequence[Mapping]) -> dict:
    """A4 on the TREx analogue: (a) TracIn over pre-training checkpoints beats it over fine-tuning
    ones on the main slice (paired); (b) TracIn (fine-tuning) does better on fine-tune-learned than
    on known queries (unpaired). BM25's (b) is the control; SYNTH's (a) is reported beside."""
    trex = per_query[per_query["dataset"] == "trex"]
    slice_ = main_slice(per_query, "trex")

    def groups(method: str) -> dict:
        rows = {name: trex[(trex["method"] == method) & (trex["slice"] == name)] for name in ("learned", "known")}
        return dict(x=rows["learned"]["mrr"].to_numpy(), y=rows["known"]["mrr"].to_numpy(),
                    x_seeds=rows["learned"]["seed"].to_numpy(), y_seeds=rows["known"]["seed"].to_numpy())

    part_a = compare(per_query, "TracIn (pre-training ckpts)", "TracIn", margin=margin, dataset="trex", slice=slice_)
    part_b = compare_groups(margin=margin, **groups("TracIn"))
    control = compare_groups(margin=margin, **groups("BM25"))
    synth = (compare(per_query, "TracIn (pre-training ckpts)", "TracIn", margin=margin, dataset="synth",
                     slice=main_slice(per_query, "synth")) if (per_query["dataset"] == "synth").any() else None)
    paper = _paper_mrr_value("trex", "TracIn (pre-training ckpts)") - _paper_mrr_value("trex", "TracIn")
    return G.gate("A4", {"verdict": verdict_from([part_a["beats"], part_b["beats"]]), "slice": slice_,
                         "part_a": part_a, "part_b": part_b, "control_bm25": control, "synth": synth,
                         "headline": headline("TracIn's MRR with pre-training minus with fine-tuning checkpoints "
                                              "(part a)", MRR_POINTS, part_a["diff"] * 100, paper,
                                              threshold=margin * 100)}, guards)


def a4_table(a4: dict) -> pd.DataFrame:
    """A4's tests side by side (rounded for display)."""
    rows = [("(a) TREx main slice: TracIn pre-training vs fine-tuning ckpts", a4["part_a"], "a"),
            ("(b) TREx, TracIn (fine-tuning ckpts): learned vs known slice", a4["part_b"], "x"),
            ("control: BM25, learned vs known slice", a4["control_bm25"], "x")]
    if a4["synth"] is not None:
        rows.append(("SYNTH: TracIn pre-training vs fine-tuning ckpts", a4["synth"], "a"))
    return pd.DataFrame([{"test": name, "MRR first": c[f"mean_{k}"], "MRR second": c["mean_b" if k == "a" else "mean_y"],
                          "difference": c["diff"], "95% low": c["ci_low"], "95% high": c["ci_high"],
                          "holds": c["beats"]}
                         for name, c, k in rows]).round(3)


def record_a4(a4: dict, n_seeds: int, margin: float) -> dict:
    """A4's scoreboard row."""
    a, b, control = a4["part_a"], a4["part_b"], a4["control_bm25"]
    ours = (f"TREx analogue ({slice_text(a4['slice'])}, {n_seeds} seeds): TracIn MRR {a['mean_a']:.3f} with pre-training "
            f"checkpoints vs {a['mean_b']:.3f} with fine-tuning ones; TracIn (fine-tuning) MRR {b['mean_x']:.3f} on "
            f"learned vs {b['mean_y']:.3f} on known queries (BM25: {control['mean_x']:.3f} vs {control['mean_y']:.3f})")
    paper = (f"TracIn MRR (%) on the learned slice: {_paper_mrr('trex', 'TracIn (pre-training ckpts)')} with "
             f"pre-training checkpoints vs {_paper_mrr('trex', 'TracIn')} with fine-tuning ones [2nd]")
    return claim("A4", STATEMENTS["A4"], paper, _with_reason(ours, a4), a4["verdict"], rule_a4(margin, a4["slice"]),
                 **_guard_fields(a4), part_a=a, part_b=b, control_bm25=control, synth=a4["synth"])


def explain_saturation(norms: pd.DataFrame, part_b: dict, dataset: str = "trex") -> str:
    """One paragraph, computed from the numbers, on what saturation does to TracIn here.

    ``norms``: ``gradient_norm_table``; ``part_b``: ``compare_groups`` of TracIn's per-query MRR
    on the learned (x) against the known (y) slice. The gradient sizes are compared at the first
    fine-tuning checkpoint, where the known facts are already known and the learned ones not yet.
    """
    d = norms[norms["dataset"] == dataset]
    if d.empty or not {"known", "learned"} <= set(d["slice"]):
        return "There are not both known and fine-tune-learned queries here, so the two cannot be compared."
    first = d[d["checkpoint"] == d["checkpoint"].iloc[0]]
    known, learned = (float(first[first["slice"] == s]["grad_norm"].median()) for s in ("known", "learned"))
    ratio = learned / known if known > 0 else float("inf")
    text = (f"At the first fine-tuning checkpoint the median gradient of a known query is {known:.3g}, against "
            f"{learned:.3g} for a fine-tune-learned one ({ratio:.1f} times larger). TracIn's MRR is "
            f"{part_b['mean_y']:.3f} on the known queries and {part_b['mean_x']:.3f} on the learned ones "
            f"({part_b['n_y']} and {part_b['n_x']} queries).")
    if part_b["beats"]:
        return text + (" The known queries lose accuracy beyond the noise: their small gradients carry less "
                       "signal, as the saturation argument says.")
    if part_b["diff"] == part_b["diff"] and part_b["diff"] > part_b["margin"]:
        return text + (f" The known queries do worse, but the difference ({part_b['diff']:.3f}) has a 95% interval "
                       f"reaching {part_b['ci_low']:.3f}: with this many queries we cannot tell it from noise.")
    return text + (" Although the known queries' gradients are smaller, TracIn does as well on them: its cosine divides "
                   "the size out, and the gradient's direction still points at the fact.")


__all__ = ["PAPER_TABLES", "PAPER_PROVENANCE", "PAPER_LAYERS", "PAPER_PROPONENTS", "STATEMENTS",
           "paper_figure", "paper_vs_ours", "beats_all", "MRR_POINTS", "extreme", "beats_all_headline",
           "rule_a1", "verdict_a1", "record_a1", "rule_a5", "verdict_a5",
           "record_a5", "rule_a2", "swept_units_and_layers", "verdict_a2", "a2_comparison_table", "record_a2",
           "rule_a3", "best_single_checkpoint", "verdict_a3", "a3_table", "record_a3", "rule_a4", "verdict_a4", "a4_table",
           "record_a4", "explain_saturation"]
