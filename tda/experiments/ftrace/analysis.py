"""Part I's analysis: the score sets of the chapters, per-query metrics, summaries and comparisons.

Every score is a combination of a run's stored parts through ``tda.methods`` (TracIn:
``TracInParts.scores``; EMBED: ``EmbedParts.scores``; TracIn+EMBED: ``combine_tracin_embed``;
BM25 and the baselines: the methods themselves). A score set maps a label to per-query scores over
each query's candidates; a sweep's parameters (``which``, ``units``, ``checkpoint``, ``similarity``,
``correction``, ``layer``) are columns of the long per-query table (``tda.experiments.variants``).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ... import metrics
from ...checkpoints import list_checkpoints, read_state
from ...data import ftrace as ft
from ...methods import random_scores, random_target
from ...methods.embed import EmbedParts
from ...methods.tracin import TracInParts, combine_tracin_embed
from ...results import fmt
from ...seeds import derive_seed
from ...gradients import unit_order
from ...stats import bootstrap_mean
from ..variants import Scored, select, unpack, with_variants
from .comparisons import compare, compare_groups, comparison_rows
from .pipeline import SLICES, FtraceRun, RunParts, label_fraction

METRICS = ("mrr", "precision@10", "recall@10")
# The paper's configuration of each method in the main comparison (see the methods chapter):
MAIN_TRACIN = {"units": "embedding", "similarity": "cosine", "corrected": True}
MAIN_EMBED = {"layers": [0], "pooling": "tokens"}
MAIN_METHODS = ("BM25", "TracIn", "TracIn (pre-training ckpts)", "EMBED", "TracIn+EMBED", "Random-Target", "random")
CHANCE = "chance (expected)"  # the exact expectation of a random order of each candidate set
VARIANT_METHODS = ("TracIn (all parameters)", "EMBED (last layer)")
CHECKPOINT_VARIANTS = ("which", "units", "checkpoint", "similarity", "correction")
DATASET_LABELS = {"trex": "TREx analogue", "synth": "SYNTH"}
UNIT_LABELS = {"embedding": "embedding", "head": "head (final norm)", "other": "position embeddings"}
WHICH_LABELS = {"ft": "fine-tuning", "pt": "pre-training"}


# ---------------------------------------------------------------------------------------------
# scores of one run (per attributed query, over its candidates)
# ---------------------------------------------------------------------------------------------
def bm25_scores(run: FtraceRun) -> list[np.ndarray]:
    """BM25+ over the whole attribution set (its IDF), read off at each query's candidates
    (``BM25Index.scores_at``: ``rank_bm25``'s scores, without a queries x abstracts matrix)."""
    q = run.data.queries.select(run.query_rows)
    tokens = [ft.bm25_tokens(i, t) for i, t in zip(q["inputs_pretokenized"], q["targets_pretokenized"])]
    return [run.bm25_index.scores_at(tok, np.asarray(c)) for tok, c in zip(tokens, run.candidates.indices)]


def _answer_lists(ds) -> list[str]:
    return [ft.answer_text(i, t).lower() for i, t in zip(ds["inputs_pretokenized"], ds["targets_pretokenized"])]


def random_target_scores(run: FtraceRun, seed: int | None = None) -> list[np.ndarray]:
    """FTRACE's Random-Target: candidates sharing the query's answer first, in random order.

    A SYNTH training example has two answers; it "shares the answer" when either is the query's
    (``tda.methods.random_target`` compares whole targets, so it is applied to a per-candidate
    answer chosen to match when possible).
    """
    q_ans = _answer_lists(run.data.queries.select(run.query_rows))
    a = run.data.abstracts.select(run.union)
    a_sets = [{p.strip().lower() for p in ft.answers(i, t)}
              for i, t in zip(a["inputs_pretokenized"], a["targets_pretokenized"])]
    out = np.zeros((len(q_ans), len(a_sets)))
    seed = run.seed if seed is None else seed
    for j, qa in enumerate(q_ans):
        cand = [qa if qa in s else "" for s in a_sets]
        out[j] = random_target([qa], cand, seed=derive_seed(seed, "random-target", j))[0]
    return run.from_matrix(out)


def uniform_scores(run: FtraceRun, seed: int | None = None) -> list[np.ndarray]:
    """Uniform random scores (chance level)."""
    seed = run.seed if seed is None else seed
    return run.from_matrix(random_scores(run.query_rows, run.union, seed=derive_seed(seed, "uniform")))


def tracin_scores(run: FtraceRun, parts: TracInParts, **kwargs) -> list[np.ndarray]:
    """Per-query TracIn scores over each query's candidates (``TracInParts.scores`` kwargs)."""
    return run.split(parts.scores(**kwargs))


def embed_scores(run: FtraceRun, parts: EmbedParts, layers=0, pooling: str = "tokens") -> list[np.ndarray]:
    """Per-query EMBED scores over each query's candidates (``EmbedParts.scores``)."""
    return run.split(parts.scores(layers, pooling))


def tracin_embed_scores(tracin: Sequence[np.ndarray], embed: Sequence[np.ndarray]) -> list[np.ndarray]:
    """TracIn+EMBED per query: ``combine_tracin_embed`` of the two methods' cosines."""
    if len(tracin) != len(embed):
        raise ValueError(f"TracIn scores for {len(tracin)} queries, EMBED scores for {len(embed)}")
    return [combine_tracin_embed(t, e) for t, e in zip(tracin, embed)]


# ---------------------------------------------------------------------------------------------
# score sets of the chapters
# ---------------------------------------------------------------------------------------------
def method_scores(rp: RunParts, variants: bool = True) -> dict[str, list[np.ndarray]]:
    """Per-query scores of the main comparison's methods (and two variants) for one run.

    TracIn: ``MAIN_TRACIN`` over the fine-tuning (or pre-training) checkpoints; EMBED:
    ``MAIN_EMBED`` at the final checkpoint; TracIn+EMBED: the mean of those two cosines.
    """
    run = rp.run
    t_ft = tracin_scores(run, rp.tracin_ft, **MAIN_TRACIN)
    e = embed_scores(run, rp.embed, **MAIN_EMBED)
    out = {
        "BM25": bm25_scores(run),
        "TracIn": t_ft,
        "TracIn (pre-training ckpts)": None if rp.tracin_pt is None else tracin_scores(run, rp.tracin_pt, **MAIN_TRACIN),
        "EMBED": e,
        "TracIn+EMBED": tracin_embed_scores(t_ft, e),
        "Random-Target": random_target_scores(run),
        "random": uniform_scores(run),
    }
    if out["TracIn (pre-training ckpts)"] is None:  # a real source's model: no pre-training checkpoints
        del out["TracIn (pre-training ckpts)"]
    if variants:
        out["TracIn (all parameters)"] = tracin_scores(run, rp.tracin_ft, **{**MAIN_TRACIN, "units": "all"})
        out["EMBED (last layer)"] = embed_scores(run, rp.embed, **{**MAIN_EMBED, "layers": [rp.embed.n_layers - 1]})
    return out


def tracin_sets(rp: RunParts) -> list[tuple[str, object]]:
    """("ft", parts) and ("pt", parts) of a run; "pt" left out where there are no pre-training
    checkpoints (a real source's model, ``tda.experiments.sources``)."""
    return [("ft", rp.tracin_ft)] + ([] if rp.tracin_pt is None else [("pt", rp.tracin_pt)])


def layer_scores(rp: RunParts) -> dict[str, Scored]:
    """TracIn per parameter unit (and all), EMBED per layer (and the mean over layers), and BM25.

    Variant columns: ``units`` (TracIn: ``MAIN_TRACIN`` restricted to that unit, fine-tuning
    checkpoints) and ``layer`` (EMBED with ``MAIN_EMBED``'s pooling; ``"all"`` = the mean).
    """
    run, t, e = rp.run, rp.tracin_ft, rp.embed
    out = {f"TracIn | {u}": Scored(tracin_scores(run, t, **{**MAIN_TRACIN, "units": u}), {"units": u})
           for u in t.units}
    out["TracIn | all"] = Scored(tracin_scores(run, t, **{**MAIN_TRACIN, "units": "all"}), {"units": "all"})
    for i in range(e.n_layers):
        out[f"EMBED | layer {i}"] = Scored(embed_scores(run, e, [i], MAIN_EMBED["pooling"]), {"layer": i})
    out["EMBED | all layers"] = Scored(embed_scores(run, e, list(range(e.n_layers)), MAIN_EMBED["pooling"]),
                                       {"layer": "all"})
    out["BM25"] = bm25_scores(run)
    return out


def checkpoint_scores(rp: RunParts) -> dict[str, Scored]:
    """TracIn at each single checkpoint and averaged, fine-tuning and pre-training checkpoints, in
    the four combinations of similarity (cosine/dot) and optimizer correction (on/off), for the main
    unit (``MAIN_TRACIN["units"]``) and for all parameters.

    Variant columns ``CHECKPOINT_VARIANTS``: ``which`` (ft/pt), ``units``, ``checkpoint`` (a name or
    ``"average"``), ``similarity``, ``correction`` (corrected/plain).
    """
    run = rp.run
    out = {}
    for which, parts in tracin_sets(rp):
        for units in (MAIN_TRACIN["units"], "all"):
            for sim in ("cosine", "dot"):
                for corr in (True, False):
                    correction = "corrected" if corr else "plain"
                    tag = f"{sim} | {correction}"
                    columns = {"which": which, "units": units, "similarity": sim, "correction": correction}
                    for i, name in enumerate(parts.checkpoints):
                        out[f"{which} | {units} | {name} | {tag}"] = Scored(tracin_scores(
                            run, parts, units=units, checkpoints=[i], similarity=sim, corrected=corr),
                            {**columns, "checkpoint": name})
                    out[f"{which} | {units} | average | {tag}"] = Scored(tracin_scores(
                        run, parts, units=units, similarity=sim, corrected=corr), {**columns, "checkpoint": "average"})
    return out


def slice_checkpoint_scores(rp: RunParts) -> dict[str, Scored]:
    """TracIn (``MAIN_TRACIN``) at each single fine-tuning and pre-training checkpoint, and averaged;
    variant columns ``which`` and ``checkpoint`` (a name or ``"average"``)."""
    out = {}
    for which, parts in tracin_sets(rp):
        for i, name in enumerate(parts.checkpoints):
            out[f"{which} | {name}"] = Scored(tracin_scores(rp.run, parts, checkpoints=[i], **MAIN_TRACIN),
                                              {"which": which, "checkpoint": name})
        out[f"{which} | average"] = Scored(tracin_scores(rp.run, parts, **MAIN_TRACIN),
                                           {"which": which, "checkpoint": "average"})
    return out


# ---------------------------------------------------------------------------------------------
# per-query metrics and summaries
# ---------------------------------------------------------------------------------------------
def query_metrics(run: FtraceRun, scores: Sequence[np.ndarray], ks: Sequence[int] = (10,)) -> pd.DataFrame:
    """Per attributed query: MRR and precision/recall@k of a method's scores over its candidates.

    Before any metric the candidate sets are checked again (every proponent present, no
    duplicate) and every score array must match its candidate set's size and be finite: a
    mismatch raises instead of producing a wrong MRR.
    """
    ft.check_candidates(run.candidates, run.data.queries)
    if len(scores) != len(run.query_rows):
        raise ValueError(f"scores for {len(scores)} queries, but the run attributes {len(run.query_rows)}")
    props = run.data.queries["proponents"]
    rows = []
    for j, (row, cands, sc) in enumerate(zip(run.query_rows, run.candidates.indices, scores)):
        sc = np.asarray(sc, dtype=np.float64)
        if sc.shape != (len(cands),):
            raise ValueError(f"query {j} (row {row}): {sc.shape} scores for {len(cands)} candidates")
        pos = {c: i for i, c in enumerate(cands)}
        relevant = [pos[p] for p in props[row]]
        m = metrics.evaluate(sc[None, :], [relevant], ks=ks)
        rows.append({"query": j, **{name: float(v[0]) for name, v in m.items()}})
    return pd.DataFrame(rows)


def evaluate_methods(run: FtraceRun, methods: Mapping[str, object], ks: Sequence[int] = (10,),
                     chance: bool = False) -> pd.DataFrame:
    """Long table: one row per (method, attributed query), with the query's slice and losses and the
    variant's columns (a :class:`~tda.experiments.variants.Scored` value's). ``chance``: add the
    rows of ``CHANCE``, each metric's exact expectation under a random order of the query's
    candidates (``tda.metrics.chance_mrr`` / ``chance_at_k``)."""
    info = run.query_info()
    frames = []
    if chance:
        c = info.copy()
        c.insert(0, "method", CHANCE)
        c["mrr"] = info["chance_mrr"]
        for k in ks:
            at_k = [metrics.chance_at_k(n, r, k) for n, r in zip(info["n_candidates"], info["n_proponents"])]
            c[f"precision@{k}"] = [p for p, _ in at_k]
            c[f"recall@{k}"] = [r for _, r in at_k]
        frames.append(c)
    for name, value in methods.items():
        scores, columns = unpack(value)
        m = query_metrics(run, scores, ks)
        m.insert(0, "method", name)
        for col, v in columns.items():
            m[col] = v
        frames.append(info.merge(m, on="query"))
    return pd.concat(frames, ignore_index=True)


def evaluate_runs(runs: Sequence[RunParts], scores: Callable[[RunParts], Mapping[str, object]] = method_scores,
                  chance: bool = False):
    """The long per-query table of every run for the methods ``scores(run_parts)`` returns (and the
    chance rows with ``chance``)."""
    return pd.concat([evaluate_methods(rp.run, scores(rp), chance=chance) for rp in runs], ignore_index=True)


def seed_summary(per_query: pd.DataFrame, metrics_: Sequence[str] = METRICS, by: Sequence[str] = ("dataset", "method"),
                 slice_: str | None = None, order: Sequence[str] | None = None, ci: bool = False) -> pd.DataFrame:
    """Mean ± std over seeds of each seed's mean (the paper's "mean ± std over seeds").

    ``per_query`` is ``evaluate_methods``' long table for several seeds; ``by`` any of its columns
    (variant columns included); ``slice_`` keeps one query slice (None: every attributed query).
    Columns ``<metric>``, ``<metric>_std``, ``seeds``, ``queries`` (mean per seed); with ``ci`` also
    ``<metric>_ci_low`` / ``<metric>_ci_high``, the 95% interval of the mean over all queries by a
    bootstrap over seeds, then queries (``tda.stats.bootstrap_mean``).
    """
    df = per_query if slice_ is None else per_query[per_query["slice"] == slice_]
    by = list(by)
    per_seed = df.groupby(by + ["seed"], sort=False, dropna=False).agg(
        **{m: (m, "mean") for m in metrics_}, queries=("query", "size")).reset_index()
    g = per_seed.groupby(by, sort=False, dropna=False)
    out = g[list(metrics_)].mean()
    std = g[list(metrics_)].std(ddof=1).fillna(0.0)
    for m in metrics_:
        out[f"{m}_std"] = std[m]
    out["seeds"] = g.size()
    out["queries"] = g["queries"].mean()
    if ci:
        groups = [rows for _, rows in df.groupby(by, sort=False, dropna=False)]  # the order of ``out``'s rows
        for m in metrics_:
            bounds = [bootstrap_mean([v.to_numpy() for _, v in rows.groupby("seed")[m]]) for rows in groups]
            out[f"{m}_ci_low"] = [b.low for b in bounds]
            out[f"{m}_ci_high"] = [b.high for b in bounds]
    out = out.reset_index()
    if order is not None and "method" in by:
        rank = {name: i for i, name in enumerate(order)}
        out = out.sort_values(by=[c for c in by if c != "method"] + ["method"],
                              key=lambda s: s.map(rank) if s.name == "method" else s).reset_index(drop=True)
    return out


def main_slice(per_query: pd.DataFrame, dataset: str, min_queries: int = 5) -> str | None:
    """The slice the main comparison uses: ``"learned"`` (the paper's) when every seed has at least
    ``min_queries`` attributed learned queries, else None (all attributed queries)."""
    df = per_query[(per_query["dataset"] == dataset)]
    per_seed = df[df["slice"] == "learned"].groupby("seed")["query"].nunique()
    seeds = df["seed"].unique()
    if len(per_seed) == len(seeds) and (per_seed >= min_queries).all():
        return "learned"
    return None


def slice_text(slice_: str | None) -> str:
    """How a chapter names the queries a verdict was computed on."""
    return "fine-tune-learned queries" if slice_ == "learned" else "all attributed queries"


def slice_counts(runs: Sequence[RunParts]) -> pd.DataFrame:
    """Per run: queries, the three slices over all sampled queries, and how many were attributed."""
    rows = []
    for rp in runs:
        r = rp.run
        sl = r.slices
        n = len(sl["learned"])
        known = sum(sl["correct_before"])
        learned = sum(sl["learned"])
        rows.append({"dataset": r.settings.dataset, "seed": r.seed, "queries": n, "learned": learned,
                     "known": known, "other": n - learned - known,
                     **{f"attributed {k}": r.query_slice.count(k) for k in SLICES},
                     "candidates (mean)": float(np.mean(r.candidates.sizes())), "candidate union": len(r.union),
                     "skipped (no proponent)": r.candidates.skipped})
    return pd.DataFrame(rows)


def finetune_history(runs: Sequence[RunParts]) -> dict[str, list[float]]:
    """Mean training loss per fine-tuning epoch of each run."""
    return {f"{DATASET_LABELS[rp.run.settings.dataset]}, seed {rp.run.seed}":
            read_state(list_checkpoints(rp.run.finetune_dir)[-1])["epoch_losses"] for rp in runs}


def checkpoint_table(summary: pd.DataFrame, units: str | None = None, similarity: str = "cosine",
                     correction: str = "corrected") -> pd.DataFrame:
    """One row per (data set, checkpoint kind): MRR at each single checkpoint ("epoch e: mean ± std")
    and averaged, from a ``seed_summary`` of ``checkpoint_scores`` by its variant columns."""
    units = units or MAIN_TRACIN["units"]
    sub = select(summary, units=units, similarity=similarity, correction=correction)
    rows = []
    for (dataset, which), s in sub.groupby(["dataset", "which"], sort=False):
        row = {"data set": DATASET_LABELS.get(dataset, dataset), "checkpoints": WHICH_LABELS[which]}
        single = s[s["checkpoint"] != "average"]
        single = single.iloc[np.argsort([label_fraction(c) for c in single["checkpoint"]], kind="stable")]
        for i, (_, r) in enumerate(single.iterrows(), 1):
            row[f"checkpoint {i}"] = f"{r['checkpoint']} of {WHICH_LABELS[which]}: {fmt(r['mrr'], r['mrr_std'])}"
        avg = s[s["checkpoint"] == "average"]
        row["average"] = fmt(float(avg["mrr"].iloc[0]), float(avg["mrr_std"].iloc[0])) if len(avg) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def checkpoint_effects(per_query: pd.DataFrame, slices: Mapping[str, str | None], margin: float = 0.02,
                       units: Sequence[str] = (MAIN_TRACIN["units"], "all")) -> list[dict]:
    """What cosine (vs dot) and the optimizer correction (vs plain) do to TracIn averaged over the
    fine-tuning checkpoints, per data set and parameter units, by ``compare``'s rule both ways."""
    effects = []
    for dataset, slice_ in slices.items():
        for u in units:
            for (sim_a, corr_a), (sim_b, corr_b), what in (
                    (("cosine", "corrected"), ("dot", "corrected"), "cosine vs dot (corrected)"),
                    (("cosine", "corrected"), ("cosine", "plain"), "corrected vs plain (cosine)")):
                a = {"which": "ft", "units": u, "checkpoint": "average", "similarity": sim_a, "correction": corr_a}
                b = {**a, "similarity": sim_b, "correction": corr_b}
                kw = dict(margin=margin, dataset=dataset, slice=slice_)
                c = compare(per_query, a, b, **kw)
                effects.append({"dataset": dataset, "units": u, "comparison": what, "queries": c["n"],
                                "difference": round(c["diff"], 3), "2 x s.e.": round(2 * c["se"], 3),
                                "clearly better": c["beats"], "clearly worse": compare(per_query, b, a, **kw)["beats"]})
    return effects


def unit_label(unit: str) -> str:
    if unit.startswith("block."):
        return f"block {unit.split('.')[1]}"
    return UNIT_LABELS.get(unit, unit)


def layer_row_label(units=None, layer=None, method: str = "") -> str:
    """A readable row label of ``layer_scores``' variants (its ``units`` or ``layer`` column)."""
    if isinstance(units, str):
        return "TracIn: all parameters" if units == "all" else f"TracIn: {unit_label(units)}"
    if layer == "all":
        return "EMBED: all layers"
    if layer is not None and layer == layer:  # not NaN
        i = int(layer)
        return f"EMBED: layer {i}" + (" (embedding output)" if i == 0 else f" (after block {i - 1})")
    return method


def layer_table(summary: pd.DataFrame, per_query: pd.DataFrame, metric: str = "mrr") -> pd.DataFrame:
    """MRR (mean ± std over seeds) of every ``layer_scores`` variant, one column per data set, rows from
    the embedding to the top of the model: TracIn per unit, TracIn over all parameters, EMBED per
    layer, EMBED over all layers, BM25."""
    s = with_variants(summary, per_query, ["units", "layer"])
    units = unit_order([u for u in s["units"].dropna().unique() if u != "all"])
    layers = sorted(int(i) for i in s["layer"].dropna().unique() if i != "all")
    keys = [("units", u) for u in units] + [("units", "all")] + [("layer", i) for i in layers] + [("layer", "all")]
    order = [select(s, **{col: value})["method"].iloc[0] for col, value in keys if len(select(s, **{col: value}))]
    order += [m for m in s["method"].unique() if m not in order]
    labels = {r["method"]: layer_row_label(r["units"], r["layer"], r["method"]) for _, r in s.iterrows()}
    cells = s.assign(**{metric: [fmt(a, b) for a, b in zip(s[metric], s[f"{metric}_std"])]})
    return cells.pivot(index="method", columns="dataset", values=metric).reindex(order).rename(index=labels)


def loss_bins(per_query: pd.DataFrame, edges: Sequence[float] = (0.0, 0.05, 0.3, 1.0, 2.0, 4.0, np.inf),
              column: str = "loss_before") -> pd.DataFrame:
    """Add a ``loss bin`` column: the query's loss at the start of fine-tuning, in fixed bins."""
    labels = [f"{a:g}–{b:g}" if np.isfinite(b) else f"> {a:g}" for a, b in zip(edges[:-1], edges[1:])]
    out = per_query.copy()
    out["loss bin"] = pd.cut(out[column], bins=list(edges), labels=labels, include_lowest=True, right=False)
    return out


def binned_mrr(per_query: pd.DataFrame, methods: Sequence[str], metric: str = "mrr") -> pd.DataFrame:
    """Mean metric per (dataset, method, loss bin) over all seeds' queries, with counts and s.e."""
    df = per_query[per_query["method"].isin(methods)]
    g = df.groupby(["dataset", "method", "loss bin"], observed=True)[metric]
    out = g.agg(["mean", "count", "std"]).reset_index()
    out["se"] = out["std"] / np.sqrt(out["count"].clip(lower=1))
    return out


def gradient_norm_table(runs: Sequence[RunParts], units: str = "all", corrected: bool = False) -> pd.DataFrame:
    """One row per (run, attributed query, fine-tuning checkpoint): the query's gradient norm
    (plain gradients of all parameters by default: the size saturation is about) and its loss
    before and after fine-tuning."""
    frames = []
    for rp in runs:
        info = rp.run.query_info()
        norms = rp.tracin_ft.query_norms(units, corrected=corrected)
        for c, name in enumerate(rp.tracin_ft.checkpoints):
            f = info[["dataset", "seed", "query", "slice", "loss_before", "loss_after"]].copy()
            f["checkpoint"] = name
            f["grad_norm"] = norms[c]
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


def _median_ratio(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.median(a) / np.median(b)) if len(a) and len(b) and np.median(b) > 0 else float("nan")


def saturation_table(runs: Sequence[RunParts], dataset: str = "trex") -> pd.DataFrame:
    """Saturation at each TracIn fine-tuning checkpoint (issue 11, point 4), mean over seeds: of the
    queries known before fine-tuning, the share still answered and the share with answer loss below
    0.05 nats; and the median gradient norm of attributed known queries over that of attributed
    learned ones (all parameters, and the input embedding alone; no correction). The first row is
    the base model, before fine-tuning (no TracIn gradients there)."""
    rows = []
    for rp in runs:
        run = rp.run
        if run.settings.dataset != dataset:
            continue
        sl = run.slices
        known = np.asarray(sl["correct_before"], dtype=bool)
        names = np.asarray(run.query_slice)
        is_k, is_l = names == "known", names == "learned"
        rows.append({"seed": run.seed, "checkpoint": "before fine-tuning", "known queries": int(known.sum()),
                     "known still answered": 1.0 if known.any() else float("nan"),
                     "known with loss < 0.05": float((np.asarray(sl["loss_before"])[known] < 0.05).mean()) if known.any()
                     else float("nan")})
        every, emb = rp.tracin_ft.query_norms("all"), rp.tracin_ft.query_norms("embedding")
        for c, label in enumerate(rp.tracin_ft.checkpoints):
            at, loss = np.asarray(sl["correct_at"][c], dtype=bool), np.asarray(sl["loss_at"][c])
            rows.append({"seed": run.seed, "checkpoint": f"fine-tuning {label}", "known queries": int(known.sum()),
                         "known still answered": float(at[known].mean()) if known.any() else float("nan"),
                         "known with loss < 0.05": float((loss[known] < 0.05).mean()) if known.any() else float("nan"),
                         "grad norm known / learned": _median_ratio(every[c][is_k], every[c][is_l]),
                         "embedding grad norm known / learned": _median_ratio(emb[c][is_k], emb[c][is_l])})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.groupby("checkpoint", sort=False).mean(numeric_only=True).drop(columns="seed").reset_index()


def pretraining_knowledge(runs: Sequence[RunParts], dataset: str = "trex") -> pd.DataFrame:
    """What the base model answers at TracIn's pre-training checkpoints and at the end of
    pre-training (mean over seeds): the share of the sampled facts it read in pre-training, and of
    the others. The paper's pre-training checkpoints sit before known-fact accuracy rises."""
    rows = []
    for rp in runs:
        run = rp.run
        if run.settings.dataset != dataset:
            continue
        in_pt = np.asarray(run.data.queries["known"], dtype=bool)
        stages = list(zip(run.checkpoint_labels("pt"), run.slices["correct_at_pt"]))
        stages.append(("end of pre-training", run.slices["correct_before"]))
        for label, correct in stages:
            c = np.asarray(correct, dtype=bool)
            rows.append({"seed": run.seed, "checkpoint": label if label.endswith("training") else f"pre-training {label}",
                         "facts in pre-training answered": float(c[in_pt].mean()) if in_pt.any() else float("nan"),
                         "other facts answered": float(c[~in_pt].mean()) if (~in_pt).any() else float("nan")})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.groupby("checkpoint", sort=False).mean(numeric_only=True).drop(columns="seed").reset_index()


def query_with_proponents(data: ft.FtraceData, row: int = 0, n: int = 6) -> pd.DataFrame:
    """A query and up to ``n`` of its proponents, as a table (masked text, answer, filled text)."""
    q = data.queries[row]
    out = [{"role": "query", "masked text": q["inputs_pretokenized"],
            "answer": ft.answer_text(q["inputs_pretokenized"], q["targets_pretokenized"])}]
    for i in q["proponents"][:n]:
        a = data.abstracts[i]
        out.append({"role": f"proponent (row {i})", "masked text": a["inputs_pretokenized"],
                    "answer": ft.answer_text(a["inputs_pretokenized"], a["targets_pretokenized"])})
    return pd.DataFrame(out)


__all__ = ["METRICS", "MAIN_TRACIN", "MAIN_EMBED", "MAIN_METHODS", "VARIANT_METHODS", "CHECKPOINT_VARIANTS",
           "DATASET_LABELS", "UNIT_LABELS", "WHICH_LABELS", "bm25_scores", "random_target_scores", "uniform_scores",
           "tracin_scores", "embed_scores", "tracin_embed_scores", "method_scores", "layer_scores",
           "checkpoint_scores", "slice_checkpoint_scores", "query_metrics", "evaluate_methods", "evaluate_runs",
           "seed_summary", "main_slice", "slice_text", "slice_counts", "finetune_history", "checkpoint_table",
           "checkpoint_effects", "unit_label", "layer_row_label", "layer_table", "loss_bins", "binned_mrr", "gradient_norm_table",
           "query_with_proponents", "compare", "compare_groups", "comparison_rows", "CHANCE", "saturation_table",
           "pretraining_knowledge"]
