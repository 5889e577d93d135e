"""The FTRACE-TREx analogue of the small world (``build_trex``).

Queries are the object-masked cloze of relation template 0 (the LAMA-like query template)
written with the entities' labels; abstracts are the sentences of the world's pages
(``tda.data.pages``: aliases, pronoun subjects, 1-3 facts per sentence, appositives,
co-mentions, popularity), every world fact (known or not) stated at least once, each entity
mention masked in turn. Template 0 never appears among the abstracts, so BM25 cannot win by
matching the query's own wording (DESIGN.md's trap). The abstracts are also the fine-tuning
set. Entity labels serve as URIs (no name contains ``,`` or ``;``), so ``facts`` reads like
``World``'s ``Fact.key``.
"""

from __future__ import annotations

import random
import uuid as uuid_lib
from typing import Sequence

from .ftrace_schema import ABSTRACT_FIELDS, QUERY_FIELDS, UUID_NAMESPACE, FtraceData, check_relations, finish_data
from .pages import ABSTRACT_TEMPLATES, PageStyle, write_pages
from .world import World


def build_trex(world: World, n_queries: int | None = 200, known_share: float | None = 0.5,
               templates: Sequence[int] = ABSTRACT_TEMPLATES, relations: Sequence[str] | None = None,
               seed: int = 0, style: PageStyle | None = None) -> FtraceData:
    """The FTRACE-TREx analogue of a world.

    Queries: ``n_queries`` facts of ``relations`` (None: every relation), a share ``known_share``
    of them known to the base model (``World.known``), chosen with ``seed``; each query is the
    object-masked cloze of template 0 written with the entities' labels (LAMA's queries use
    Wikidata labels), with ``known`` recorded. ``n_queries=None`` takes every fact of those
    relations (``known_share`` must then be None).

    Abstracts: every sentence of the world's pages (``tda.data.pages.write_pages`` in ``style``,
    None: the world's own, which its pre-training read; with the relation paraphrases
    ``templates``; template 0 is refused), each entity mention of a
    sentence masked in turn — so a sentence with a pronoun subject has no subject-masked example,
    as in T-REx — with the sentence's own surface form as the answer and every fact the sentence
    states in ``facts`` (a multi-fact sentence is a proponent of each; a co-mention sentence has
    ``facts == ""``). Examples with the same text are merged ("unionize" in FTRACE's code), their
    facts united. Rows in a seeded random order, ``id`` = row.
    """
    relation_ids = check_relations(relations)
    sentences = write_pages(world, style, templates)  # checks the templates
    for name in (n for names in world.entities.values() for n in names):
        if "," in name or ";" in name:
            raise ValueError(f"entity name {name!r} contains ',' or ';' and cannot be a URI in 'facts'")
    rng = random.Random(f"{seed}-ftrace-trex")

    # --- which facts are queried
    eligible = [i for i, f in enumerate(world.facts) if f.relation in relation_ids]
    if n_queries is None:
        if known_share is not None:
            raise ValueError("n_queries=None takes every fact; known_share must then be None")
        chosen = list(eligible)
    else:
        if n_queries < 1:
            raise ValueError(f"n_queries must be >= 1, got {n_queries}")
        if known_share is None:
            if n_queries > len(eligible):
                raise ValueError(f"{n_queries} queries asked but the world has {len(eligible)} facts "
                                 f"of relations {relation_ids}")
            chosen = rng.sample(eligible, n_queries)
        else:
            if not 0.0 <= known_share <= 1.0:
                raise ValueError(f"known_share must be in [0, 1], got {known_share}")
            n_known = round(n_queries * known_share)
            known_pool = [i for i in eligible if world.known[i]]
            new_pool = [i for i in eligible if not world.known[i]]
            if n_known > len(known_pool) or n_queries - n_known > len(new_pool):
                raise ValueError(f"{n_queries} queries with known_share={known_share} need {n_known} known and "
                                 f"{n_queries - n_known} unknown facts; the world has {len(known_pool)} and "
                                 f"{len(new_pool)} (relations {relation_ids})")
            chosen = rng.sample(known_pool, n_known) + rng.sample(new_pool, n_queries - n_known)
        rng.shuffle(chosen)

    q: dict[str, list] = {k: [] for k in list(QUERY_FIELDS) + ["known"]}
    for i in chosen:
        fact = world.facts[i]
        inputs, target = World.cloze(fact, 0, "object")
        for k, v in (("inputs_pretokenized", inputs), ("targets_pretokenized", target),
                     ("uuid", str(uuid_lib.uuid5(UUID_NAMESPACE, f"trex:{fact.key}"))),
                     ("obj_uri", fact.object), ("sub_uri", fact.subject), ("predicate_id", fact.relation),
                     ("obj_surface", fact.object), ("sub_surface", fact.subject), ("known", bool(world.known[i]))):
            q[k].append(v)

    # --- the attribution set: one example per entity mention, merged by text
    merged: dict[tuple[str, str], dict] = {}
    for si, sentence in enumerate(sentences):
        keys = [f.key for f in sentence.facts]
        for j, mention in enumerate(sentence.mentions):
            inputs, target = sentence.masked(j)
            row = merged.get((inputs, target))
            if row is None:
                merged[(inputs, target)] = {
                    "inputs_pretokenized": inputs, "targets_pretokenized": target, "page_uri": sentence.page,
                    "masked_uri": mention.entity, "masked_type": mention.role, "example_uris": [f"s{si}-m{j}"],
                    "facts": list(keys)}
            else:
                row["example_uris"].append(f"s{si}-m{j}")
                row["facts"] += [k for k in keys if k not in row["facts"]]
    rows = list(merged.values())
    for row in rows:
        row["example_uris"] = ",".join(row["example_uris"])
        row["facts"] = ";".join(row["facts"])
    rng.shuffle(rows)
    a = {k: [r[k] for r in rows] for k in ABSTRACT_FIELDS if k != "id"}
    a["id"] = list(range(len(rows)))
    return finish_data(q, a)



__all__ = ["build_trex"]
