"""The FTRACE schema: facts, masks, answers, summaries (tda.data.ftrace_schema)."""

from __future__ import annotations

import json

import pytest

from tda.data import ftrace as ft
from tda.data.world import RELATION_BY_ID


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def test_parse_facts_and_answers():
    assert ft.parse_facts("P361,Q48,Q771405;P30,Q48,Q771405") == [("P361", "Q48", "Q771405"),
                                                                  ("P30", "Q48", "Q771405")]
    assert ft.parse_facts("") == []
    for bad in ("P1,Q2", "P1,Q2,Q3;", "P1,,Q3", "P1,Q2,Q3,Q4"):
        with pytest.raises(ValueError, match="malformed fact"):
            ft.parse_facts(bad)
    # T5 format (real data), world format, and a two-mask SYNTH pair
    assert ft.answers("Paul Ehrlich used to work in <extra_id_0> .", "<extra_id_0> Frankfurt") == ["Frankfurt"]
    assert ft.filled_text("Paul Ehrlich used to work in <extra_id_0> .", "<extra_id_0> Frankfurt") == \
        "Paul Ehrlich used to work in Frankfurt ."
    assert ft.filled_text("[MASK] was born in Rome .", "Ann Lee") == "Ann Lee was born in Rome ."
    pair = ("entity-3 died in [MASK] . [MASK] lies in 4-entity .", "XII-entity , entity-7")
    assert ft.answers(*pair) == ["XII-entity", "entity-7"]
    assert ft.filled_text(*pair) == "entity-3 died in XII-entity . entity-7 lies in 4-entity ."
    with pytest.raises(ValueError, match="2 masks but 1 answers"):
        ft.answers("[MASK] and [MASK]", "only-one")


# ---------------------------------------------------------------------------------------------
# 7. summary
# ---------------------------------------------------------------------------------------------
def test_summarize(trex, synth):
    s = ft.summarize(trex, n_examples=2)
    assert s["n_queries"] == 20 and s["n_abstracts"] == len(trex.abstracts)
    assert s["proponents_per_query"] == [len(p) for p in trex.queries["proponents"]]
    assert min(s["proponents_per_query"]) >= 1
    assert s["known_share"] == pytest.approx(0.4)
    assert sum(s["query_relations"].values()) == 20
    assert sum(s["abstract_relations"].values()) == sum(len(ft.parse_facts(f)) for f in trex.abstracts["facts"])
    assert len(s["example_queries"]) == 2
    assert s["example_queries"][0]["proponents"] == f"{len(trex.queries[0]['proponents'])} rows"
    json.dumps(s)  # JSON-able, for the notebook's glue/output file
    s = ft.summarize(synth)
    assert set(s["proponents_per_query"]) <= {122, 124} and s["known_share"] == 0.0
    assert set(s["query_relations"]) <= set(RELATION_BY_ID)
