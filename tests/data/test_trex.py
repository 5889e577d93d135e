"""The TREx analogue (tda.data.trex)."""

from __future__ import annotations

import pytest

from tda.data import ftrace as ft
from tda.data.world import World, cloze_text


# ---------------------------------------------------------------------------------------------
# 2. the TREx analogue
# ---------------------------------------------------------------------------------------------
def test_trex_never_states_facts_in_the_query_template(data_world, trex):
    filled = [ft.filled_text(i, t) for i, t in zip(trex.abstracts["inputs_pretokenized"],
                                                  trex.abstracts["targets_pretokenized"])]
    template0 = {World.render(f, 0) for f in data_world.facts}
    assert not template0 & set(filled)
    query_texts = {ft.filled_text(i, t) for i, t in zip(trex.queries["inputs_pretokenized"],
                                                       trex.queries["targets_pretokenized"])}
    assert not query_texts & set(filled)
    # every world fact, known or not, is stated by at least one abstract; co-mentions state none
    stated = {ft.fact_key(*f) for facts in trex.abstracts["facts"] for f in ft.parse_facts(facts)}
    assert stated == {f.key for f in data_world.facts}
    assert "" in set(trex.abstracts["facts"])
    with pytest.raises(ValueError, match="template 0 is the query template"):
        ft.build_trex(data_world, n_queries=5, templates=(0, 1))


def test_trex_queries_and_proponents(data_world, trex):
    """Design changed in issue 11 (was: every fact in 6 examples with the queries' own names):
    proponents now come from pages, so their number varies, masked answers are the sentence's
    own surface form (label or alias), and a multi-fact abstract is a proponent of each fact."""
    q, a = trex
    assert list(a["id"]) == list(range(len(a)))
    by_key = {f.key: (f, k) for f, k in zip(data_world.facts, data_world.known)}
    parsed = [{ft.fact_key(*f) for f in ft.parse_facts(x)} for x in a["facts"]]
    for row in q:
        fact, known = by_key[ft.query_key(row)]
        assert (row["inputs_pretokenized"], row["targets_pretokenized"]) == World.cloze(fact, 0, "object")
        assert row["known"] == known
        assert row["sub_surface"] == fact.subject and row["obj_surface"] == fact.object
        assert row["proponents"] == [i for i, f in enumerate(parsed) if fact.key in f]
        assert len(row["proponents"]) >= 1
    for row in a:
        # the answer is the sentence's own wording of the masked entity: its label or an alias
        assert row["targets_pretokenized"] in data_world.names(row["masked_uri"])
        assert row["masked_type"] in ("subject", "object")
    assert any(len(f) > 1 for f in parsed)  # multi-fact sentences exist ...
    multi = next(i for i, f in enumerate(parsed) if len(f) > 1)
    every = ft.build_trex(data_world, n_queries=None, known_share=None, seed=3)
    keys = set(parsed[multi])
    for row in every.queries:  # ... and are proponents of each of their facts
        assert (ft.query_key(row) in keys) == any(
            every.abstracts[i]["inputs_pretokenized"] == a[multi]["inputs_pretokenized"] for i in row["proponents"])
    assert any(t != u for t, u in zip(a["targets_pretokenized"], a["masked_uri"]))  # aliases are used
    assert sum(q["known"]) == 8  # round(20 * 0.4)
    assert len(set(q["uuid"])) == len(q)
    # the causal format is the world's cloze_text, which pre-training used
    ex = ft.to_examples(q)
    for p, t, row in zip(ex.prompts, ex.targets, q):
        assert f"{p} {t}" == cloze_text(row["inputs_pretokenized"], row["targets_pretokenized"])


def test_trex_pronoun_subjects_have_no_subject_masked_example(data_world):
    from tda.data.pages import PageStyle
    every = ft.build_trex(data_world, n_queries=None, known_share=None, style=PageStyle(pronoun_rate=1.0))
    a = every.abstracts
    pronoun_rows = [i for i, x in enumerate(a["inputs_pretokenized"]) if x.split()[0] in ("He", "She", "It")]
    assert pronoun_rows
    for i in pronoun_rows:
        assert a[i]["masked_type"] == "object" or a[i]["facts"] == ""
        assert a[i]["masked_uri"] != a[i]["page_uri"]
    none = ft.build_trex(data_world, n_queries=None, known_share=None, style=PageStyle(pronoun_rate=0.0))
    assert not any(x.split()[0] in ("He", "She", "It") for x in none.abstracts["inputs_pretokenized"])


def test_trex_options_and_errors(data_world):
    from tda.data.pages import PageStyle
    some = ft.build_trex(data_world, n_queries=4, known_share=None, relations=["P19", "P20"], seed=0)
    assert set(some.queries["predicate_id"]) <= {"P19", "P20"}
    with pytest.raises(ValueError, match="unknown relation ids"):
        ft.build_trex(data_world, n_queries=4, relations=["P999"])
    with pytest.raises(ValueError, match="need"):
        ft.build_trex(data_world, n_queries=150, known_share=1.0)
    with pytest.raises(ValueError, match="alias_rate must be a probability"):
        ft.build_trex(data_world, n_queries=4, style=PageStyle(alias_rate=1.5))
    with pytest.raises(ValueError, match="templates must be"):
        ft.build_trex(data_world, n_queries=4, templates=(1, 7))
