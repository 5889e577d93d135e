"""How faithful an FTRACE dataset is to the real one: the statistics fact tracing turns on.

Three measurements, each a function of an ``FtraceData`` (so they run unchanged on the real
``ekinakyurek/ftrace`` data, on the TREx analogue and on SYNTH):

- ``fidelity``: proponents per query (mean, median, max); the share of proponents whose text holds
  the query's exact subject / object label; per query, the non-proponents that name the subject,
  and those that name both entities (hard negatives: lexically close, not a proponent).
- ``whole_set_bm25``: BM25 as FTRACE's BM25 row scores it — each query against *all* abstracts,
  mask filled with the gold answer in the query and the abstracts, top 250 kept, MRR of the first
  proponent (0 when none is in the top 250). Issue 11's guard: A1 is testable only when this is
  below 0.95.
- ``bm25_sweep``: whole-set BM25 MRR as a function of the world's rates, one rate at a time, for
  the figure that shows the reader how the verdict depends on them.

Texts are the abstracts' and queries' *filled* texts (``ftrace.filled_text``), what BM25 reads.
"Names an entity" means one of its names occurs as whole words (no letter, digit or ``_`` on
either side, so ``entity-1`` is not found in ``entity-12``). By default an entity's only name is
the query's label (``sub_surface`` / ``obj_surface``), the one thing the real data lets us match;
pass ``names`` to count other surface forms (SYNTH's four writings, the analogue's aliases).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import fields, replace
from statistics import mean, median
from typing import Callable, Mapping, Sequence

import numpy as np

from ..methods.bm25_index import BM25Index
from .ftrace import FtraceData, build_trex, filled_text, synth_surface, SYNTH_FORMS
from .world import WorldConfig, build_world

WORD_RE = re.compile(r"\w+")
TOP_K = 250  # FTRACE's code keeps the BM25 top 250 of the whole corpus

# The real data's numbers, with where they come from (REFERENCES.md). None: not published, and the
# data cannot be downloaded here; ``fidelity(load_ftrace())`` fills them where it can.
PAPER_FIDELITY: dict[str, dict] = {
    "trex": {"proponents_mean": 83.0, "proponents_median": 7.0, "proponents_max": None,
             "proponent_subject_label_share": None, "proponent_object_label_share": None,
             "non_proponents_naming_subject": None, "non_proponents_naming_both": None,
             "source": "mean and median [2nd, REFERENCES.md]; the rest not published"},
    "synth": {"proponents_mean": 124.0, "proponents_median": 124.0, "proponents_max": 124.0,
              "non_proponents_naming_both": "1-10", "non_proponents_naming_both_low": 1.0,
              "non_proponents_naming_both_high": 10.0,
              "source": "124 proponents [code]; 1-10 non-proponents naming both [inf, REFERENCES.md]"},
}


def _texts(ds) -> list[str]:
    return [filled_text(i, t) for i, t in zip(ds["inputs_pretokenized"], ds["targets_pretokenized"])]


class _NameIndex:
    """Which texts name a string as whole words: an inverted index of word tokens, then a check."""

    def __init__(self, texts: Sequence[str]):
        self.texts = list(texts)
        self.by_word: dict[str, set[int]] = defaultdict(set)
        for row, text in enumerate(self.texts):
            for w in set(WORD_RE.findall(text)):
                self.by_word[w].add(row)
        self.cache: dict[str, frozenset[int]] = {}

    def rows(self, name: str) -> frozenset[int]:
        found = self.cache.get(name)
        if found is None:
            words = WORD_RE.findall(name)
            if not words:
                raise ValueError(f"cannot search for the name {name!r}: it has no word characters")
            rows = set.intersection(*(self.by_word.get(w, set()) for w in words))
            pattern = re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)")
            found = frozenset(r for r in rows if pattern.search(self.texts[r]))
            self.cache[name] = found
        return found

    def naming(self, names: Sequence[str]) -> frozenset[int]:
        out: set[int] = set()
        for name in names:
            out |= self.rows(name)
        return frozenset(out)


def _stats(values: Sequence[float]) -> dict:
    values = list(values)
    if not values:
        return {"mean": 0.0, "median": 0.0, "max": 0.0}
    return {"mean": float(mean(values)), "median": float(median(values)), "max": float(max(values))}


def fidelity(data: FtraceData, names: Callable[[str], Sequence[str]] | Mapping[str, Sequence[str]] | None = None) -> dict:
    """The fidelity statistics of a dataset (see the module docstring), JSON-able.

    Returns ``n_queries``, ``n_abstracts``; ``proponents`` (mean, median, max per query);
    ``proponent_subject_label_share``, ``proponent_object_label_share``,
    ``proponent_both_labels_share`` (mean over queries of the share of its proponents whose text
    holds the query's exact ``sub_surface`` / ``obj_surface`` / both); ``non_proponents_naming_subject``
    and ``non_proponents_naming_both`` (mean, median, max per query), where an entity's names come
    from ``names`` (a function or mapping URI -> names; default: the query's labels only).
    """
    queries, abstracts = data
    texts = _texts(abstracts)
    index = _NameIndex(texts)
    if names is None:
        def names_of(uri: str, label: str) -> list[str]:
            return [label]
    elif callable(names):
        def names_of(uri: str, label: str) -> list[str]:
            return list(names(uri)) or [label]
    else:
        def names_of(uri: str, label: str) -> list[str]:
            return list(names.get(uri, ())) or [label]

    counts, sub_share, obj_share, both_share, name_sub, name_both = [], [], [], [], [], []
    for row in range(len(queries)):
        q = queries[row]
        props = set(q["proponents"])
        counts.append(len(props))
        sub_rows, obj_rows = index.rows(q["sub_surface"]), index.rows(q["obj_surface"])
        if props:
            sub_share.append(len(props & sub_rows) / len(props))
            obj_share.append(len(props & obj_rows) / len(props))
            both_share.append(len(props & sub_rows & obj_rows) / len(props))
        subject = index.naming(names_of(q["sub_uri"], q["sub_surface"]))
        obj = index.naming(names_of(q["obj_uri"], q["obj_surface"]))
        name_sub.append(len(subject - props))
        name_both.append(len((subject & obj) - props))
    return {
        "n_queries": len(queries), "n_abstracts": len(abstracts),
        "proponents": _stats(counts),
        "proponent_subject_label_share": float(mean(sub_share)) if sub_share else 0.0,
        "proponent_object_label_share": float(mean(obj_share)) if obj_share else 0.0,
        "proponent_both_labels_share": float(mean(both_share)) if both_share else 0.0,
        "non_proponents_naming_subject": _stats(name_sub),
        "non_proponents_naming_both": _stats(name_both),
        "names": "labels" if names is None else "given",
    }


TABLE_ROWS = (
    ("proponents per query, mean", ("proponents", "mean"), "proponents_mean"),
    ("proponents per query, median", ("proponents", "median"), "proponents_median"),
    ("proponents per query, max", ("proponents", "max"), "proponents_max"),
    ("share of proponents with the query's subject label", ("proponent_subject_label_share",), "proponent_subject_label_share"),
    ("share of proponents with the query's object label", ("proponent_object_label_share",), "proponent_object_label_share"),
    ("non-proponents naming the subject, per query (mean)", ("non_proponents_naming_subject", "mean"), "non_proponents_naming_subject"),
    ("non-proponents naming both entities, per query (mean)", ("non_proponents_naming_both", "mean"), "non_proponents_naming_both"),
)


def fidelity_table(ours: Mapping, paper: Mapping) -> list[dict]:
    """Rows ``statistic``, ``ours``, ``paper`` for the book's table: ``ours`` a ``fidelity`` result,
    ``paper`` one entry of ``PAPER_FIDELITY`` (None where the real number is not known)."""
    rows = []
    for label, path, key in TABLE_ROWS:
        value = ours
        for part in path:
            value = value[part]
        rows.append({"statistic": label, "ours": float(value), "paper": paper.get(key)})
    return rows


def synth_names(uri: str) -> list[str]:
    """SYNTH entity ``E<n>``'s four writings (entity-12, 12-entity, entity-XII, XII-entity)."""
    if not re.fullmatch(r"E\d+", uri):
        raise ValueError(f"{uri!r} is not a SYNTH entity URI (E<number>)")
    n = int(uri[1:])
    return [synth_surface(n, form) for form in range(len(SYNTH_FORMS))]


# ---------------------------------------------------------------------------------------------
# whole-set BM25
# ---------------------------------------------------------------------------------------------
def bm25_top_k(queries: Sequence[str], documents: Sequence[str], k: int = TOP_K) -> list[np.ndarray]:
    """For each query, the row indices of its ``k`` best documents by BM25+, best first.

    The one place whole-set BM25 is scored: ``tda.methods.bm25_index.BM25Index`` (``rank_bm25``'s
    ``BM25Plus`` at FTRACE's defaults over whitespace tokens, bit for bit, ties by document order),
    which touches only the postings of each query's words instead of a queries x documents matrix.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    index = BM25Index([d.split() for d in documents], desc=None)
    tops, _ = index.top_k([q.split() for q in queries], k)
    return list(tops)


def reciprocal_ranks(proponents: Sequence[Sequence[int]], tops: Sequence[Sequence[int]]) -> list[float]:
    """Per query, 1 / the rank of its first proponent among its retrieved rows ``tops`` (0 if none)."""
    if len(proponents) != len(tops):
        raise ValueError(f"proponents of {len(proponents)} queries but retrieved rows of {len(tops)}")
    rr = []
    for props, top in zip(proponents, tops):
        props = set(props)
        hit = next((rank for rank, row in enumerate(top, start=1) if int(row) in props), None)
        rr.append(1.0 / hit if hit else 0.0)
    return rr


def whole_set_bm25(data: FtraceData, k: int = TOP_K, ranker: Callable | None = None) -> dict:
    """Whole-set BM25 as the paper scores it: MRR of each query's first proponent in the top ``k``.

    Returns ``mrr`` (mean over queries), ``reciprocal_ranks`` (per query row; 0 when no proponent
    is in the top ``k``), ``found`` (share of queries with a proponent in the top ``k``) and ``k``.
    ``ranker(query_texts, abstract_texts, k)`` replaces ``bm25_top_k``.
    """
    queries, abstracts = data
    if len(queries) == 0:
        raise ValueError("no queries: whole-set BM25 needs at least one")
    if len(abstracts) == 0:
        raise ValueError("no abstracts: whole-set BM25 has nothing to retrieve")
    tops = (ranker or bm25_top_k)(_texts(queries), _texts(abstracts), k)
    rr = reciprocal_ranks(queries["proponents"], tops)
    return {"mrr": float(np.mean(rr)), "reciprocal_ranks": rr, "found": float(np.mean([r > 0 for r in rr])), "k": k}


def bm25_sweep(config: WorldConfig, grid: Mapping[str, Sequence[float]], seeds: Sequence[int] = (0,),
               n_queries: int | None = None, k: int = TOP_K, ranker: Callable | None = None) -> list[dict]:
    """Whole-set BM25 MRR of the TREx analogue, one world setting varied at a time.

    ``grid`` maps a ``WorldConfig`` field (a page rate such as ``alias_rate``, or
    ``popularity_exponent``, ...) to its values; every other setting stays at ``config``. For each
    seed the world is built with that seed. Queries: every fact (``n_queries=None``) or a seeded
    sample. Returns one row per (setting, value, seed): ``setting``, ``value``, ``seed``, ``mrr``,
    ``found``, ``n_abstracts``. Only the data is built (no model), so a sweep takes seconds a point.
    """
    settable = {f.name for f in fields(WorldConfig)} - {"seed"}
    unknown = sorted(set(grid) - settable)
    if unknown:
        raise ValueError(f"unknown sweep settings {unknown}; WorldConfig fields: {sorted(settable)}")
    rows = []
    for seed in seeds:
        for setting, values in grid.items():
            for value in values:
                world = build_world(replace(config, seed=seed, **{setting: value}))
                data = build_trex(world, n_queries=n_queries, known_share=None, seed=seed)
                res = whole_set_bm25(data, k=k, ranker=ranker)
                rows.append({"setting": setting, "value": float(value), "seed": int(seed), "mrr": res["mrr"],
                             "found": res["found"], "n_abstracts": len(data.abstracts)})
    return rows


__all__ = ["TOP_K", "PAPER_FIDELITY", "fidelity", "fidelity_table", "synth_names", "bm25_top_k", "reciprocal_ranks",
           "whole_set_bm25", "bm25_sweep"]
