"""Fidelity statistics and whole-set BM25 (tda.data.fidelity): hand-worked cases and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from tda.data import ftrace as ft
from tda.data.fidelity import bm25_sweep, bm25_top_k, fidelity, synth_names, whole_set_bm25
from tda.methods import bm25
from tests.conftest import DATA_WORLD

M = "[MASK]"


def _data(abstracts: list[tuple[str, str, str]], queries: list[tuple[str, str, str]]) -> ft.FtraceData:
    """Abstracts (input, target, facts) and queries (predicate, object label, subject label)."""
    a = {k: [] for k in ft.ABSTRACT_FIELDS}
    for i, (inp, tgt, facts) in enumerate(abstracts):
        for k, v in (("inputs_pretokenized", inp), ("targets_pretokenized", tgt), ("page_uri", "p"),
                     ("masked_uri", tgt), ("masked_type", "object"), ("example_uris", f"e{i}"),
                     ("facts", facts), ("id", i)):
            a[k].append(v)
    q = {k: [] for k in ft.QUERY_FIELDS}
    for i, (p, o, s) in enumerate(queries):
        for k, v in (("inputs_pretokenized", f"{s} rel {M} ."), ("targets_pretokenized", o), ("uuid", f"q{i}"),
                     ("obj_uri", o), ("sub_uri", s), ("predicate_id", p), ("obj_surface", o), ("sub_surface", s)):
            q[k].append(v)
    return ft._finish(q, a)


HAND = _data(
    [(f"Bora Tenix is a native of {M} .", "Zuna", "P19,Zuna,Bora Tenix"),       # 0 proponent q0, both labels
     (f"He is a native of {M} .", "Zuna", "P19,Zuna,Bora Tenix"),               # 1 proponent q0, object only
     (f"Bora Tenix visited {M} .", "Zuna", ""),                                 # 2 co-mention: names both
     (f"{M} died in Malmi .", "Bora Tenix", "P20,Malmi,Bora Tenix"),            # 3 proponent q1, names q0's subject
     (f"Bora Tenixson lives in {M} .", "Malmi", ""),                            # 4 another name: names nobody
     (f"Tenix studied at {M} .", "Brel", "")],                                  # 5 the surname alone
    [("P19", "Zuna", "Bora Tenix"), ("P20", "Malmi", "Bora Tenix")])


def test_fidelity_hand_worked():
    f = fidelity(HAND)
    assert HAND.queries["proponents"] == [[0, 1], [3]]
    assert f["proponents"] == {"mean": 1.5, "median": 1.5, "max": 2.0}
    # q0: subject label in 1 of 2 proponents, object label in both; q1: both in its only proponent
    assert f["proponent_subject_label_share"] == pytest.approx((0.5 + 1.0) / 2)
    assert f["proponent_object_label_share"] == pytest.approx(1.0)
    assert f["proponent_both_labels_share"] == pytest.approx((0.5 + 1.0) / 2)
    # q0: rows 2, 3 name "Bora Tenix" outside its proponents (row 4's "Bora Tenixson" does not);
    # q1: rows 0, 2. Both entities: q0 row 2; q1 none (row 4 names Malmi, not Bora Tenix).
    assert f["non_proponents_naming_subject"] == {"mean": 2.0, "median": 2.0, "max": 2.0}
    assert f["non_proponents_naming_both"] == {"mean": 0.5, "median": 0.5, "max": 1.0}
    aliases = {"Bora Tenix": ["Bora Tenix", "Tenix"]}
    g = fidelity(HAND, names=aliases)  # the surname names the subject in rows 1? no: "He"; row 5 yes
    assert g["non_proponents_naming_subject"]["max"] == 3.0 and g["names"] == "given"
    assert fidelity(HAND, names=lambda uri: aliases.get(uri, []))["non_proponents_naming_subject"] == \
        g["non_proponents_naming_subject"]


def test_fidelity_table_rows():
    from tda.data.fidelity import PAPER_FIDELITY, fidelity_table
    rows = fidelity_table(fidelity(HAND), PAPER_FIDELITY["trex"])
    assert rows[0] == {"statistic": "proponents per query, mean", "ours": 1.5, "paper": 83.0}
    assert {r["statistic"]: r["ours"] for r in rows}["non-proponents naming both entities, per query (mean)"] == 0.5
    synth = fidelity_table(fidelity(HAND), PAPER_FIDELITY["synth"])
    assert synth[0]["paper"] == 124.0 and synth[-1]["paper"] == "1-10"


def test_whole_set_bm25_hand_worked_and_k():
    res = whole_set_bm25(HAND)
    scores = bm25(["Bora Tenix rel Zuna .", "Bora Tenix rel Malmi ."],
                  [ft.filled_text(i, t) for i, t in zip(HAND.abstracts["inputs_pretokenized"],
                                                       HAND.abstracts["targets_pretokenized"])])
    expect = []
    for j, props in enumerate(HAND.queries["proponents"]):
        order = np.argsort(-scores[j], kind="stable")
        expect.append(1.0 / (1 + min(int(np.where(order == p)[0][0]) for p in props)))
    assert res["reciprocal_ranks"] == pytest.approx(expect)
    assert res["mrr"] == pytest.approx(np.mean(expect)) and res["k"] == 250
    top1 = whole_set_bm25(HAND, k=1)
    assert top1["reciprocal_ranks"] == [1.0 if r == 1.0 else 0.0 for r in expect]
    assert top1["found"] == np.mean([r == 1.0 for r in expect])


def test_whole_set_bm25_equals_brute_force_on_the_analogue(data_world):
    data = ft.build_trex(data_world, n_queries=25, known_share=None, seed=4)
    res = whole_set_bm25(data, k=10)
    texts = [ft.filled_text(i, t) for i, t in zip(data.abstracts["inputs_pretokenized"], data.abstracts["targets_pretokenized"])]
    queries = [ft.filled_text(i, t) for i, t in zip(data.queries["inputs_pretokenized"], data.queries["targets_pretokenized"])]
    full = bm25(queries, texts)
    for j, props in enumerate(data.queries["proponents"]):
        ranked = sorted(range(len(texts)), key=lambda r: (-full[j, r], r))[:10]
        hits = [rank for rank, r in enumerate(ranked, 1) if r in set(props)]
        assert res["reciprocal_ranks"][j] == pytest.approx(1.0 / hits[0] if hits else 0.0)
    # a ranker that puts the proponents last scores 0; one that puts them first scores 1
    worst = whole_set_bm25(data, k=10, ranker=lambda q, d, k: [np.arange(len(d))[::-1][:k]] * len(q))
    assert worst["mrr"] < res["mrr"] or res["mrr"] == 0
    best = whole_set_bm25(data, k=10, ranker=lambda q, d, k: [np.asarray(p[:k]) for p in data.queries["proponents"]])
    assert best["mrr"] == 1.0
    assert [len(t) for t in bm25_top_k(queries[:3], texts, k=7)] == [7, 7, 7]


def test_bad_input_fails_clearly():
    with pytest.raises(ValueError, match="no queries"):
        whole_set_bm25(ft.FtraceData(HAND.queries.select([]), HAND.abstracts))
    with pytest.raises(ValueError, match="k must be >= 1"):
        whole_set_bm25(HAND, k=0)
    with pytest.raises(ValueError, match="not a SYNTH entity URI"):
        synth_names("Bora Tenix")
    with pytest.raises(ValueError, match="unknown sweep settings"):
        bm25_sweep(DATA_WORLD, {"alias": [0.1]})
    with pytest.raises(ValueError, match="WorldConfig.alias_rate must be a probability"):
        bm25_sweep(DATA_WORLD, {"alias_rate": [1.2]}, n_queries=5)


def test_sweep_rows_and_world_settings():
    """With every confound off, the analogue is the old world (BM25 near its ceiling); aliases
    everywhere take the labels away from BM25."""
    from dataclasses import replace
    plain = replace(DATA_WORLD, alias_rate=0, subject_alias_rate=0, pronoun_rate=0, multi_fact_rate=0, comention_rate=0, appositive_rate=0,
                    restatements=0)
    rows = bm25_sweep(plain, {"alias_rate": [0.0, 1.0], "popularity_exponent": [0.0]}, k=20)
    assert [(r["setting"], r["value"]) for r in rows] == [("alias_rate", 0.0), ("alias_rate", 1.0),
                                                          ("popularity_exponent", 0.0)]
    assert all(0.0 <= r["mrr"] <= 1.0 for r in rows)
    assert rows[0]["mrr"] > 0.9 and rows[1]["mrr"] < rows[0]["mrr"] - 0.03
    default = bm25_sweep(DATA_WORLD, {"pronoun_rate": [0.4]}, n_queries=30)
    assert default[0]["mrr"] < rows[0]["mrr"]


def test_synth_fidelity_counts_every_writing(synth_small):
    f_labels, f_all = fidelity(synth_small), fidelity(synth_small, names=synth_names)
    assert set(f_all["proponents"].values()) <= {122.0, 124.0} or f_all["proponents"]["max"] <= 124
    assert f_all["non_proponents_naming_both"]["mean"] >= f_labels["non_proponents_naming_both"]["mean"]
    assert synth_names("E12") == ["entity-12", "12-entity", "entity-XII", "XII-entity"]


@pytest.fixture(scope="module")
def synth_small(data_world):
    return ft.build_synth(data_world, n_facts=30, n_query_facts=4, seed=1)
