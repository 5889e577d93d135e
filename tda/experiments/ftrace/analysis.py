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
from ...checkpoints import checkpoint_epoch, list_checkpoints, read_state
from ...data import ftrace as ft
from ...methods import bm25, random_scores, random_target
from ...methods.embed import EmbedParts
from ...methods.tracin import TracInParts, combine_tracin_embed
from ...results import fmt
from ...seeds import derive_seed
from ...gradients import unit_order
from ..variants import Scored, select, unpack, with_variants
from .pipeline import SLICES, FtraceRun, RunParts

METRICS = ("mrr", "precision@10", "recall@10")
# The paper's configuration of each method in the main comparison (see the methods chapter):
MAIN_TRACIN = {"units": "embedding", "similarity": "cosine", "corrected": True}
MAIN_EMBED = {"layers": [0], "pooling": "tokens"}
MAIN_METHODS = ("BM25", "TracIn", "TracIn (pre-training ckpts)", "EMBED", "TracIn+EMBED", "Random-Target", "random")
VARIANT_METHODS = ("TracIn (all parameters)", "EMBED (last layer)")
CHECKPOINT_VARIANTS = ("which", "units", "checkpoint", "similarity", "correction")
DATASET_LABELS = {"trex": "TREx analogue", "synth": "SYNTH"}
UNIT_LABELS = {"embedding": "embedding", "head": "head (final norm)", "other": "position embeddings"}
WHICH_LABELS = {"ft": "fine-tuning", "pt": "pre-training"}


# ---------------------------------------------------------------------------------------------
# scores of one run (per attributed query, over its candidates)
# ---------------------------------------------------------------------------------------------
def bm25_scores(run: FtraceRun) -> list[np.ndarray]:
    """BM25+ over the whole attribution set (its IDF), read off at each query's candidates."""
    q = run.data.queries.select(run.query_rows)
    a = run.data.abstracts
    qt = [ft.filled_text(i, t) for i, t in zip(q["inputs_pretokenized"], q["targets_pretokenized"])]
    at = [ft.filled_text(i, t) for i, t in zip(a["inputs_pretokenized"], a["targets_pretokenized"])]
    full = bm25(qt, at)
    return [full[j, np.asarray(c)] for j, c in enumerate(run.candidates.indices)]


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
        "TracIn (pre-training ckpts)": tracin_scores(run, rp.tracin_pt, **MAIN_TRACIN),
        "EMBED": e,
        "TracIn+EMBED": tracin_embed_scores(t_ft, e),
        "Random-Target": random_target_scores(run),
        "random": uniform_scores(run),
    }
    if variants:
        out["TracIn (all parameters)"] = tracin_scores(run, rp.tracin_ft, **{**MAIN_TRACIN, "units": "all"})
        out["EMBED (last layer)"] = embed_scores(run, rp.embed, **{**MAIN_EMBED, "layers": [rp.embed.n_layers - 1]})
    return out


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
    for which, parts in (("ft", rp.tracin_ft), ("pt", rp.tracin_pt)):
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
    for which, parts in (("ft", rp.tracin_ft), ("pt", rp.tracin_pt)):
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


def evaluate_methods(run: FtraceRun, methods: Mapping[str, object], ks: Sequence[int] = (10,)) -> pd.DataFrame:
    """Long table: one row per (method, attributed query), with the query's slice and losses and the
    variant's columns (a :class:`~tda.experiments.variants.Scored` value's)."""
    info = run.query_info()
    frames = []
    for name, value in methods.items():
        scores, columns = unpack(value)
        m = query_metrics(run, scores, ks)
        m.insert(0, "method", name)
        for col, v in columns.items():
            m[col] = v
        frames.append(info.merge(m, on="query"))
    return pd.concat(frames, ignore_index=True)


def evaluate_runs(runs: Sequence[RunParts], scores: Callable[[RunParts], Mapping[str, object]] = method_scores):
    """The long per-query table of every run for the methods ``scores(run_parts)`` returns."""
    return pd.concat([evaluate_methods(rp.run, scores(rp)) for rp in runs], ignore_index=True)


def seed_summary(per_query: pd.DataFrame, metrics_: Sequence[str] = METRICS, by: Sequence[str] = ("dataset", "method"),
                 slice_: str | None = None, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean ± std over seeds of each seed's mean (the paper's "mean ± std over seeds").

    ``per_query`` is ``evaluate_methods``' long table for several seeds; ``by`` any of its columns
    (variant columns included); ``slice_`` keeps one query slice (None: every attributed query).
    Columns ``<metric>``, ``<metric>_std``, ``seeds``, ``queries`` (mean per seed).
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
        single = s[s["checkpoint"] != "average"].sort_values("checkpoint")
        for i, (_, r) in enumerate(single.iterrows(), 1):
            row[f"checkpoint {i}"] = f"epoch {checkpoint_epoch(r['checkpoint'])}: {fmt(r['mrr'], r['mrr_std'])}"
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


# ---------------------------------------------------------------------------------------------
# comparisons behind the verdicts
# ---------------------------------------------------------------------------------------------
def _side(df: pd.DataFrame, which) -> tuple[pd.DataFrame, str | None]:
    """The rows of one side of a comparison (a method label, or a mapping of variant columns) and
    its method label."""
    rows = df[df["method"] == which] if isinstance(which, str) else select(df, **dict(which))
    labels = rows["method"].unique()
    if len(labels) > 1:
        raise ValueError(f"{which} selects several methods ({list(labels)[:4]}): add variant columns")
    return rows, (labels[0] if len(labels) else which if isinstance(which, str) else None)


def compare(per_query: pd.DataFrame, a, b, metric: str = "mrr", margin: float = 0.02, **filters) -> dict:
    """Paired comparison of methods ``a`` and ``b`` on the same queries (pooled over seeds).

    ``a`` and ``b`` are method labels or mappings of variant columns (e.g. ``{"units": "block.0"}``).
    ``d`` = mean over queries of metric(a) - metric(b), ``se`` its standard error; ``a`` *beats*
    ``b`` when ``d > margin`` and ``d > 2 se`` (a difference both practically and statistically
    clear). ``filters`` select rows (e.g. ``dataset="trex", slice="learned"``).
    """
    df = select(per_query, **filters)
    (rows_a, label_a), (rows_b, label_b) = _side(df, a), _side(df, b)
    missing = [str(s) for s, rows in ((a, rows_a), (b, rows_b)) if rows.empty]
    if missing:
        raise ValueError(f"no rows for method(s) {missing} with {filters}")
    both = pd.concat([rows_a.assign(_side="a"), rows_b.assign(_side="b")])
    wide = both.pivot_table(index=["dataset", "seed", "query"], columns="_side", values=metric).dropna()
    d = (wide["a"] - wide["b"]).to_numpy()
    n = len(d)
    diff = float(d.mean()) if n else float("nan")
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"a": label_a, "b": label_b, "metric": metric, "n": n,
            "mean_a": float(wide["a"].mean()) if n else float("nan"),
            "mean_b": float(wide["b"].mean()) if n else float("nan"), "diff": diff, "se": se,
            "beats": bool(n > 1 and diff > margin and diff > 2 * se), "margin": margin}


def compare_groups(x: Sequence[float], y: Sequence[float], margin: float = 0.02) -> dict:
    """Unpaired comparison of two groups of per-query values: ``x`` beats ``y`` when the difference
    of means exceeds ``margin`` and twice its standard error (Welch's)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return {"n_x": len(x), "n_y": len(y), "mean_x": float(x.mean()) if len(x) else float("nan"),
                "mean_y": float(y.mean()) if len(y) else float("nan"), "diff": float("nan"), "se": float("nan"),
                "beats": False, "margin": margin}
    diff = float(x.mean() - y.mean())
    se = float(np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y)))
    return {"n_x": len(x), "n_y": len(y), "mean_x": float(x.mean()), "mean_y": float(y.mean()), "diff": diff,
            "se": se, "beats": bool(diff > margin and diff > 2 * se), "margin": margin}


def comparison_rows(comparisons: Sequence[dict], a: str = "comparison", **labels) -> list[dict]:
    """``compare`` results as table rows (rounded for display)."""
    return [{**labels, a: f"{c['a']} vs {c['b']}", "queries": c["n"], "MRR a": round(c["mean_a"], 3),
             "MRR b": round(c["mean_b"], 3), "difference": round(c["diff"], 3), "2 x s.e.": round(2 * c["se"], 3),
             "beats": c["beats"]} for c in comparisons]


__all__ = ["METRICS", "MAIN_TRACIN", "MAIN_EMBED", "MAIN_METHODS", "VARIANT_METHODS", "CHECKPOINT_VARIANTS",
           "DATASET_LABELS", "UNIT_LABELS", "WHICH_LABELS", "bm25_scores", "random_target_scores", "uniform_scores",
           "tracin_scores", "embed_scores", "tracin_embed_scores", "method_scores", "layer_scores",
           "checkpoint_scores", "slice_checkpoint_scores", "query_metrics", "evaluate_methods", "evaluate_runs",
           "seed_summary", "main_slice", "slice_text", "slice_counts", "finetune_history", "checkpoint_table",
           "checkpoint_effects", "unit_label", "layer_row_label", "layer_table", "loss_bins", "binned_mrr", "gradient_norm_table",
           "query_with_proponents", "compare", "compare_groups", "comparison_rows"]
