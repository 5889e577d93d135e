import random

import pytest

from tda.data.world import (MASK, RELATION_BY_ID, RELATIONS, REAL_COUNTRIES, World, WorldConfig,
                            build_world, cloze_text, news_article, roman)
from tests.conftest import TINY_WORLD


def test_same_seed_same_world_other_seed_other_world():
    a, b = build_world(TINY_WORLD), build_world(TINY_WORLD)
    assert a.to_json() == b.to_json()
    c = build_world(WorldConfig(**{**vars(TINY_WORLD), "seed": 1}))
    assert c.entities["person"] != a.entities["person"]


def test_relations_are_trex_like_and_at_least_twelve():
    assert len(RELATIONS) >= 12
    for rel in RELATIONS:
        assert rel.id.startswith("P") and rel.id[1:].isdigit()
        assert len(rel.templates) >= 3
        for tpl in rel.templates:
            assert "{s}" in tpl and "{o}" in tpl


def test_subject_has_one_answer_per_relation(tiny_world):
    pairs = [(f.relation, f.subject) for f in tiny_world.facts]
    assert len(pairs) == len(set(pairs))
    for f in tiny_world.facts:
        rel = RELATION_BY_ID[f.relation]
        assert f.subject in tiny_world.entities[rel.subject_type]
        assert f.object in tiny_world.entities[rel.object_type]


def test_entity_names_are_unique_and_countries_start_with_real_ones(tiny_world):
    names = [n for v in tiny_world.entities.values() for n in v]
    assert len(names) == len(set(names))
    assert tiny_world.entities["country"][:2] == list(REAL_COUNTRIES[:2])


def test_known_facts_are_in_pretraining_and_unknown_are_not(tiny_world):
    corpus = set(tiny_world.pretraining_corpus())
    assert 0 < sum(tiny_world.known) < len(tiny_world.facts)
    for fact, known in zip(tiny_world.facts, tiny_world.known):
        stated = World.render(fact, 1) in corpus
        assert stated == known, fact
        assert tiny_world.is_known(fact) == known


def test_known_fraction_controls_share():
    w = build_world(WorldConfig(**{**vars(TINY_WORLD), "known_fraction": 0.0}))
    assert not any(w.known)
    w = build_world(WorldConfig(**{**vars(TINY_WORLD), "known_fraction": 1.0}))
    assert all(w.known)


def test_cloze_masks_the_right_entity(tiny_world):
    fact = tiny_world.facts[0]
    inputs, target = World.cloze(fact, 0, "object")
    assert MASK in inputs and fact.subject in inputs and target == fact.object
    inputs, target = World.cloze(fact, 0, "subject")
    assert MASK in inputs and fact.object in inputs and target == fact.subject
    assert cloze_text("a [MASK] .", "b").endswith("answer : b")
    with pytest.raises(ValueError, match="masked"):
        World.cloze(fact, 0, "verb")


def test_fact_key_is_ftrace_encoding(tiny_world):
    f = tiny_world.facts[0]
    assert f.key == f"{f.relation},{f.object},{f.subject}"


def test_news_summary_names_its_country(tiny_world):
    rng = random.Random(0)
    for _ in range(20):
        doc, summary, slots = news_article(rng, tiny_world, country="England")
        assert "England" in summary and "England" in doc


def test_roman():
    assert [roman(i) for i in (1, 4, 9, 14, 40, 90, 400, 1994)] == \
        ["I", "IV", "IX", "XIV", "XL", "XC", "CD", "MCMXCIV"]
    with pytest.raises(ValueError):
        roman(0)


def test_json_round_trip(tmp_path, tiny_world):
    tiny_world.save(tmp_path / "w.json")
    assert World.load(tmp_path / "w.json").to_json() == tiny_world.to_json()


@pytest.mark.parametrize("bad, match", [
    ({"known_fraction": 1.5}, "known_fraction must be in"), ({"n_people": -1}, "n_people"),
    ({"n_countries": 1}, "at least 2 countries"), ({"person_fact_rate": -0.01}, "person_fact_rate"),
    ({"n_cities": 3, "n_countries": 4}, "n_cities must be >= n_countries"),
    ({"popularity_exponent": -1.0}, "popularity_exponent"), ({"pretrain_cloze": "some"}, "pretrain_cloze"),
    ({"alias_rate": 1.5}, "WorldConfig.alias_rate must be a probability"),
    ({"comention_rate": -0.2}, "WorldConfig.comention_rate"), ({"restatements": -1}, "restatements"),
])
def test_bad_world_config(bad, match):
    with pytest.raises(ValueError, match=match):
        WorldConfig(**{**vars(TINY_WORLD), **bad})


def test_labels_aliases_and_pronouns(tiny_world):
    for person in tiny_world.entities["person"]:
        assert tiny_world.aliases[person] == [person.split()[-1]]  # the surname
        assert tiny_world.pronoun(person) in ("He", "She")
    labels = {n for names in tiny_world.entities.values() for n in names}
    for city in tiny_world.entities["city"]:
        other = tiny_world.aliases[city][0]
        assert other != city and other not in labels  # another name, never another entity's label
    assert tiny_world.pronoun(tiny_world.entities["country"][0]) == "It"
    assert tiny_world.names("Africa") == ["Africa"]  # continents have no alias
    corpus = set(tiny_world.pretraining_corpus())
    for label, others in tiny_world.aliases.items():
        assert all(f"{label} is also known as {a} ." in corpus for a in others)


def test_popularity_is_zipf_and_drives_objects_and_knowledge():
    from collections import Counter
    from dataclasses import replace
    config = replace(TINY_WORLD, n_people=400, n_cities=30, known_fraction=0.3)
    w = build_world(config)
    cities = w.entities["city"]
    weights = sorted((w.weight(c) for c in cities), reverse=True)
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    assert weights[0] / weights[1] == pytest.approx(2.0) and weights[0] / weights[9] == pytest.approx(10.0)
    births = Counter(f.object for f in w.facts if f.relation == "P19")
    top, bottom = max(cities, key=w.weight), min(cities, key=w.weight)
    assert births[top] > 5 * max(births[bottom], 1)  # famous cities are the birthplaces of more people
    fw = [w.weight(f.subject) * w.weight(f.object) for f in w.facts]
    known = [x for x, k in zip(fw, w.known) if k]
    unknown = [x for x, k in zip(fw, w.known) if not k]
    assert sum(w.known) == round(0.3 * len(w.facts))
    assert sum(known) / len(known) > 2 * sum(unknown) / len(unknown)  # popular facts are likelier known
    flat = build_world(replace(config, popularity_exponent=0.0))
    assert {flat.weight(c) for c in flat.entities["city"]} == {1.0}


def test_pretraining_reads_the_pages_of_known_facts_only(tiny_world):
    corpus = set(tiny_world.pretraining_corpus())
    known = {f.key for f in tiny_world.known_facts}
    pages = tiny_world.pages()
    # a pronoun sentence can read the same on two pages ("She is a farmer by profession ."), as in
    # real text; such a text is in pre-training when one of its pages states a known fact
    known_texts = {s.text() for s in pages if all(f.key in known for f in s.facts)}
    seen = unseen = 0
    for sentence in pages:
        in_corpus = sentence.text() in corpus
        masked_in = [cloze_text(*sentence.masked(j)) in corpus for j in range(len(sentence.mentions))]
        if all(f.key in known for f in sentence.facts):
            assert in_corpus and all(masked_in)
            seen += 1
        else:  # a sentence stating a fact the base model must not know stays out
            assert not (in_corpus or any(masked_in)) or sentence.text() in known_texts
            unseen += 1
    assert seen and unseen


def test_pretraining_cloze_in_every_template_or_the_query_template_only(tiny_world):
    from dataclasses import replace
    fact = tiny_world.known_facts[0]
    corpus = set(tiny_world.pretraining_corpus())
    for t in range(4):
        for masked in ("object", "subject"):
            assert cloze_text(*World.cloze(fact, t, masked)) in corpus
    old = set(build_world(replace(TINY_WORLD, pretrain_cloze="query")).pretraining_corpus())
    assert cloze_text(*World.cloze(fact, 0, "object")) in old
    assert cloze_text(*World.cloze(fact, 2, "object")) not in old
    unknown = next(f for f, k in zip(tiny_world.facts, tiny_world.known) if not k)
    assert not any(cloze_text(*World.cloze(unknown, t, "object")) in corpus for t in range(4))
