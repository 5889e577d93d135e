"""The world's Wikipedia (tda.data.pages): each PageStyle rate does what it says, and only that."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tda.data.pages import APPOSITIVES, COMENTIONS, PageStyle, write_pages
from tda.data.world import WorldConfig
from tda.data.world import MASK, RELATION_BY_ID, PRONOUNS, build_world
from tests.conftest import DATA_WORLD


@pytest.fixture(scope="module")
def pages(data_world):
    return write_pages(data_world)


def test_every_fact_is_stated_and_every_sentence_is_consistent(data_world, pages):
    stated = {f for s in pages for f in s.facts}
    assert stated == set(data_world.facts)
    for s in pages:
        assert s.text().count("{") == 0 and s.text().endswith(" .")
        for j, m in enumerate(s.mentions):
            assert m.surface in data_world.names(m.entity)
            inputs, target = s.masked(j)
            assert inputs.count(MASK) == 1 and target == m.surface
        if s.facts:  # a fact sentence: every fact's entities are mentioned (the subject maybe as a pronoun)
            entities = {m.entity for m in s.mentions}
            for f in s.facts:
                assert f.object in entities
                assert f.subject in entities or (f.subject == s.page and s.text().split()[0] in PRONOUNS)
        else:  # a co-mention: the subject (or its pronoun) and the object of one of its facts
            assert s.mentions[-1].entity in {f.object for f in data_world.facts if f.subject == s.page}
    with pytest.raises(IndexError):
        pages[0].masked(len(pages[0].mentions))


def test_first_sentence_names_the_subject_by_its_label(pages):
    for s in pages:
        if s.position == 0:
            assert s.mentions[0].entity == s.page and s.mentions[0].surface == s.page


def test_rates_at_their_extremes(data_world):
    none = write_pages(data_world, PageStyle(alias_rate=0, subject_alias_rate=0, pronoun_rate=0, multi_fact_rate=0, comention_rate=0,
                                             appositive_rate=0, restatements=0))
    assert all(m.surface == m.entity for s in none for m in s.mentions)
    assert all(len(s.facts) == 1 for s in none)  # one fact per sentence, no appositive, no co-mention
    assert len(none) == len(data_world.facts)  # and no restatement
    full = write_pages(data_world, PageStyle(alias_rate=1, subject_alias_rate=1, pronoun_rate=1, multi_fact_rate=1, comention_rate=1,
                                             appositive_rate=1, restatements=0))
    for s in full:
        for m in s.mentions:
            first_naming = s.position == 0 and m.entity == s.page and m.role == "subject"
            if data_world.aliases.get(m.entity) and not first_naming:
                assert m.surface in data_world.aliases[m.entity]
        if s.position > 0:
            assert s.text().split()[0] in PRONOUNS  # every later sentence continues with a pronoun
            assert all(m.entity != s.page or m.role == "object" for m in s.mentions)
    fact_sentences = [s for s in full if s.facts]
    assert len([s for s in full if not s.facts]) == len(fact_sentences)  # one co-mention per fact sentence
    own = [[f for f in s.facts if f.subject == s.page] for s in fact_sentences]
    assert max(len(x) for x in own) == 3 and min(len(x) for x in own) >= 1
    # subjects with >= 2 facts never get a single-fact sentence while 2+ facts are left: count check
    assert sum(len(x) for x in own) == len(data_world.facts)
    appositive = [f for s in fact_sentences for f in s.facts if f.subject != s.page]
    assert appositive and all(f.relation in APPOSITIVES for f in appositive)


def test_changing_one_rate_changes_only_what_it_governs(data_world, pages):
    """Each decision has its own random stream: the alias rate rewrites surfaces, not sentences."""
    base = PageStyle()
    other = write_pages(data_world, replace(base, alias_rate=0.9))
    assert [(s.pattern, s.facts, [m.entity for m in s.mentions]) for s in other] == \
           [(s.pattern, s.facts, [m.entity for m in s.mentions]) for s in pages]
    assert [m.surface for s in other for m in s.mentions] != [m.surface for s in pages for m in s.mentions]
    assert write_pages(data_world) == pages  # deterministic


def test_query_wording_only_when_asked(data_world, pages):
    def query_pattern(s):
        return RELATION_BY_ID[s.facts[0].relation].templates[0].replace("{s}", "{0}").replace("{o}", "{1}")

    assert not any(s.pattern == query_pattern(s) for s in pages if s.facts)
    every = write_pages(data_world, PageStyle(query_wording_rate=1.0, multi_fact_rate=0, appositive_rate=0,
                                              comention_rate=0, pronoun_rate=0))
    assert all(s.pattern == query_pattern(s) for s in every)


def test_popularity_makes_restatements_heavy_tailed():
    world = build_world(replace(DATA_WORLD, n_people=120, n_cities=30))
    flat = build_world(replace(DATA_WORLD, n_people=120, n_cities=30, popularity_exponent=0.0))
    style = PageStyle(restatements=1.0)

    def longest_page(w):
        counts: dict[str, int] = {}
        for s in write_pages(w, style):
            counts[s.page] = counts.get(s.page, 0) + 1
        return max(counts.values()), sorted(counts.values())[len(counts) // 2]

    top, med = longest_page(world)
    top_flat, med_flat = longest_page(flat)
    assert top / med > 2 * top_flat / med_flat


@pytest.mark.parametrize("bad, match", [
    ({"alias_rate": -0.1}, "alias_rate must be a probability"),
    ({"pronoun_rate": 1.01}, "pronoun_rate must be a probability"),
    ({"multi_fact_rate": "half"}, "multi_fact_rate must be a probability"),
    ({"comention_rate": 2}, "comention_rate"),
    ({"appositive_rate": float("nan")}, "appositive_rate"),
    ({"restatements": -1}, "restatements must be a finite number"),
    ({"restatements": float("inf")}, "restatements"),
    ({"max_facts_per_sentence": 4}, "max_facts_per_sentence"),
])
def test_bad_styles_fail_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        PageStyle(**bad)


def test_world_config_carries_the_style_and_rejects_bad_rates(data_world):
    assert data_world.style == PageStyle.of(DATA_WORLD) == PageStyle()
    assert write_pages(data_world) == write_pages(data_world, PageStyle())
    with pytest.raises(ValueError, match="WorldConfig.pronoun_rate must be a probability"):
        WorldConfig(**{**vars(DATA_WORLD), "pronoun_rate": 1.5})
    other = build_world(replace(DATA_WORLD, alias_rate=0.0, subject_alias_rate=0.0))
    assert all(m.surface == m.entity for s in other.pages() for m in s.mentions)
    subjects_only = build_world(replace(DATA_WORLD, alias_rate=0.0, subject_alias_rate=1.0))
    for s in subjects_only.pages():
        for m in s.mentions:
            is_later_subject = m.entity == s.page and m.role == "subject" and s.position > 0
            assert (m.surface != m.entity) == (is_later_subject and bool(subjects_only.aliases.get(m.entity)))


def test_style_from_dict_and_templates(data_world):
    assert PageStyle.from_dict({"alias_rate": 0.5}).alias_rate == 0.5
    assert PageStyle.from_dict(None) == PageStyle()
    with pytest.raises(ValueError, match="unknown PageStyle settings"):
        PageStyle.from_dict({"alias": 0.5})
    with pytest.raises(ValueError, match="template 0 is the query template"):
        write_pages(data_world, templates=(0, 1))
    only2 = write_pages(data_world, templates=(2,), style=PageStyle(pronoun_rate=1.0))
    stated = {f for s in only2 for f in s.facts}
    assert stated == set(data_world.facts)  # a relation without a subject-initial wording keeps its name
    assert COMENTIONS and all(c.startswith("{s} ") for c in COMENTIONS)
