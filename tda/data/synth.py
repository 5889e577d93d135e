"""FTRACE-SYNTH, generated as the paper's code does, scaled down (``build_synth``).

- SYNTH follows ``google-research/lm_fact_tracing/synth_data`` (the paper's generator), scaled:
  entities ``1..n`` (never 0, which has no Roman numeral) written 4 ways; two templates per relation
  (default: the world's templates 0 and 1); facts drawn uniformly and rejected when their
  (relation, subject) or (relation, object) pair is taken — and, unlike the original, also when
  subject == object, and a rejected draw reserves nothing; every fact expressed in
  2 x 4 x 4 = 32 utterances; for ``n_query_facts`` facts one utterance is held out and becomes two
  queries (subject masked, object masked), the other 31 are its proponents.
- SYNTH training examples (as in the paper's code, ``num_facts_per_utterance=2``): the remaining
  utterances are shuffled and grouped in consecutive pairs; a pair is the two sentences
  concatenated (joined by a space: our templates end in " ." where the original joined with
  ","), and yields the 2 x 2 = 4 examples of the product of maskings — in each, *both* sentences
  have one entity masked (subject or object), and the target lists both answers in order. Unlike
  the original, a pair never joins two utterances of the same fact (such a pair would leak the
  masked answer; when no partner is left, the utterance stands alone). An utterance alone (the odd
  one out) yields 2 single-sentence examples. Every example of a pair lists both facts, so each
  query fact has 31 x 4 = 124 proponent examples (122 if its utterance is the odd one out) — the
  figure implied by the paper's P@10 / R@10 ratio.
"""

from __future__ import annotations

import itertools
import random
import re
import uuid as uuid_lib
from dataclasses import dataclass
from typing import Sequence

from .ftrace_schema import (ABSTRACT_FIELDS, ANSWER_SEP, QUERY_FIELDS, UUID_NAMESPACE, FtraceData, check_relations,
                            finish_data)
from .world import MASK, RELATION_BY_ID, Fact, World, roman

SYNTH_FORMS = ("entity-{n}", "{n}-entity", "entity-{r}", "{r}-entity")  # the paper's 4 ways
SYNTH_URI_RE = re.compile(r"E\d+")


def synth_uri(n: int) -> str:
    """The URI of SYNTH entity ``n`` (``"E12"``), as used in ``facts``."""
    return f"E{n}"


def synth_surface(n: int, form: int) -> str:
    """SYNTH entity ``n`` written the paper's way ``form`` (0..3): entity-12, 12-entity, entity-XII, XII-entity."""
    if not 0 <= form < len(SYNTH_FORMS):
        raise ValueError(f"form must be in 0..{len(SYNTH_FORMS) - 1}, got {form}")
    return SYNTH_FORMS[form].format(n=n, r=roman(n))


def synth_facts(n_facts: int, n_entities: int, relations: Sequence[str], seed: int = 0,
                max_draws: int | None = None, balanced: bool = False, distinct_pairs: bool = False) -> list[Fact]:
    """Random SYNTH facts over entities ``1..n_entities``, drawn as in the paper's generator.

    A draw is rejected if its (relation, subject) or (relation, object) pair is already used, or if
    subject == object. Two options keep a scaled-down SYNTH in the paper's regime (see
    ``build_synth``): ``distinct_pairs`` also rejects a second fact between the same two entities
    (either order); ``balanced`` draws subject and object uniformly among the entities that are
    in the fewest facts so far (so every entity ends in ``2 n_facts / n_entities`` facts, +-1)
    instead of among all entities. Raises ``ValueError`` when ``n_facts`` cannot be reached (the
    rule allows at most ``n_entities`` facts per relation).
    """
    relations = list(relations)
    if n_facts < 0:
        raise ValueError(f"n_facts must be >= 0, got {n_facts}")
    if n_entities < 2 and n_facts:
        raise ValueError(f"SYNTH needs at least 2 entities, got {n_entities}")
    capacity = len(relations) * n_entities
    if distinct_pairs:
        capacity = min(capacity, n_entities * (n_entities - 1) // 2)
    if n_facts > capacity:
        raise ValueError(f"{n_facts} facts asked, but with {len(relations)} relations and {n_entities} entities "
                         f"the (relation, subject)/(relation, object){'/entity-pair' if distinct_pairs else ''} rule "
                         f"allows at most {capacity}")
    max_draws = max_draws if max_draws is not None else 1000 * n_facts + 10_000
    rng = random.Random(f"{seed}-synth-facts")
    used: set[tuple[str, str, int]] = set()
    pairs: set[frozenset[int]] = set()
    degree = [0] * (n_entities + 1)
    facts: list[Fact] = []
    draws = 0
    while len(facts) < n_facts:
        draws += 1
        if draws > max_draws:
            raise ValueError(f"drew {max_draws} candidates and kept only {len(facts)} of {n_facts} facts (near "
                             f"the capacity of {capacity}, random draws can dead-end); lower n_facts or raise "
                             "n_entities")
        rel = rng.choice(relations)
        if balanced:
            # the least-used entities first; after many rejections, widen to the next degree
            floor = min(degree[1:]) + (draws - 1) // 1000
            pool = [e for e in range(1, n_entities + 1) if degree[e] <= floor]
            if len(pool) < 2:
                pool = list(range(1, n_entities + 1))
            s, o = rng.choice(pool), rng.choice(pool)
        else:
            s, o = rng.randint(1, n_entities), rng.randint(1, n_entities)
        if s == o or (rel, "s", s) in used or (rel, "o", o) in used:
            continue
        if distinct_pairs and frozenset((s, o)) in pairs:
            continue
        used.add((rel, "s", s))
        used.add((rel, "o", o))
        pairs.add(frozenset((s, o)))
        degree[s] += 1
        degree[o] += 1
        draws = 0 if balanced else draws
        facts.append(Fact(rel, synth_uri(s), synth_uri(o)))
    return facts


@dataclass(frozen=True)
class _Utterance:
    fact: Fact
    template: int
    sub_form: int
    obj_form: int

    @property
    def numbers(self) -> tuple[int, int]:
        return int(self.fact.subject[1:]), int(self.fact.object[1:])

    @property
    def surfaces(self) -> tuple[str, str]:
        s, o = self.numbers
        return synth_surface(s, self.sub_form), synth_surface(o, self.obj_form)

    @property
    def guid(self) -> str:
        return (f"{self.fact.relation}-{self.fact.subject}-{self.fact.object}"
                f"-rx{self.template}-ex{self.sub_form}-ex{self.obj_form}")

    def text(self) -> str:
        s, o = self.surfaces
        return RELATION_BY_ID[self.fact.relation].templates[self.template].format(s=s, o=o)

    def masked(self, which: str) -> tuple[str, str]:
        """(sentence with ``which`` masked, the masked surface form)."""
        s, o = self.surfaces
        tpl = RELATION_BY_ID[self.fact.relation].templates[self.template]
        if which == "subject":
            return tpl.format(s=MASK, o=o), s
        if which == "object":
            return tpl.format(s=s, o=MASK), o
        raise ValueError(f"masked must be 'subject' or 'object', got {which!r}")


def _group(utts: list[_Utterance], size: int) -> list[list[_Utterance]]:
    """Consecutive groups of ``size``, never two utterances of one fact in a group."""
    pending = list(utts)
    groups: list[list[_Utterance]] = []
    while pending:
        group = [pending.pop(0)]
        j = 0
        while len(group) < size and j < len(pending):
            if all(pending[j].fact != g.fact for g in group):
                group.append(pending.pop(j))
            else:
                j += 1
        groups.append(group)
    return groups


def build_synth(world: World, n_facts: int = 200, n_query_facts: int = 20, n_entities: int | None = None,
                relations: Sequence[str] | None = None, templates: Sequence[int] = (0, 1),
                query_masks: Sequence[str] = ("subject", "object"), facts_per_example: int = 2,
                seed: int = 0, entity_facts: float = 3.0, balanced: bool = True,
                distinct_pairs: bool = True) -> FtraceData:
    """FTRACE-SYNTH as the paper generates it, scaled down (see the module docstring).

    ``n_facts`` random facts over entities ``1..n_entities`` and the world's ``relations`` (None:
    all), each relation written in two of its ``templates``. The regime (issue 11): the paper draws
    50,000 facts over 5,000 entities, so every entity is in ~20 facts (its name alone never gives
    a fact away) and a non-proponent naming both query entities is rare (~1-10 per query against
    124 proponents). A pair of training utterances names both entities of a query when one
    utterance is about each, about ``2 (d-1)^2 / n`` hard negatives per proponent for ``d`` facts
    per entity and ``n`` facts; at our scale ``d`` cannot be 20, so by default each entity is in
    at least ``entity_facts`` = 3 facts (``n_entities = floor(2 n_facts / entity_facts)``, at most
    ``world.config.n_synth_entities``, the numbers the vocabulary covers), degrees are
    ``balanced`` (the least-used entities are drawn first, so every entity is in 3 +- 1 facts, not
    a Poisson spread with many in 1) and ``distinct_pairs`` forbids two facts between the same two
    entities (at the paper's scale a pair repeats for 0.4% of facts, here it would for ~5%, and
    each repeat gives its queries 124 hard negatives). ``n_facts >= 80`` then keeps hard negatives
    near or below 10% of proponents. ``balanced=False, distinct_pairs=False`` is the paper's draw.
    For
    ``n_query_facts`` facts one utterance is held out; it gives one query per ``query_masks``
    entry. All other utterances are grouped ``facts_per_example`` at a time (paper: 2) into
    training examples with one mask per sentence, every combination of maskings. The facts are
    new to the base model (``known`` is False): SYNTH entities never occur in pre-training.
    """
    relation_ids = check_relations(relations)
    limit = world.config.n_synth_entities
    if not entity_facts > 0:
        raise ValueError(f"entity_facts must be > 0, got {entity_facts}")
    n_entities = min(limit, max(2, int(2 * n_facts // entity_facts))) if n_entities is None else int(n_entities)
    if n_entities > limit:
        raise ValueError(f"{n_entities} SYNTH entities asked, but the world's vocabulary covers "
                         f"entity numbers 1..{limit} (WorldConfig.n_synth_entities)")
    templates = list(dict.fromkeys(int(t) for t in templates))
    n_tpl = min(len(RELATION_BY_ID[r].templates) for r in relation_ids)
    if not templates or any(not 0 <= t < n_tpl for t in templates):
        raise ValueError(f"templates must be indices in 0..{n_tpl - 1}, got {templates}")
    if not 0 <= n_query_facts <= n_facts:
        raise ValueError(f"n_query_facts must be in 0..n_facts={n_facts}, got {n_query_facts}")
    bad = [m for m in query_masks if m not in ("subject", "object")]
    if bad or not query_masks:
        raise ValueError(f"query_masks must be a non-empty subset of ('subject', 'object'), got {query_masks}")
    if facts_per_example < 1:
        raise ValueError(f"facts_per_example must be >= 1, got {facts_per_example}")

    facts = synth_facts(n_facts, n_entities, relation_ids, seed=seed, balanced=balanced, distinct_pairs=distinct_pairs)
    rng = random.Random(f"{seed}-synth-data")
    forms = range(len(SYNTH_FORMS))
    by_fact = [[_Utterance(f, t, sf, of) for t in templates for sf in forms for of in forms] for f in facts]

    held_out: list[_Utterance] = []
    for i in sorted(rng.sample(range(len(facts)), n_query_facts)):
        held_out.append(by_fact[i].pop(rng.randrange(len(by_fact[i]))))
    rng.shuffle(held_out)
    train = [u for group in by_fact for u in group]
    rng.shuffle(train)

    rows: list[dict] = []
    for g, group in enumerate(_group(train, facts_per_example)):
        fact_str = ";".join(dict.fromkeys(u.fact.key for u in group))
        for masks in itertools.product(("subject", "object"), repeat=len(group)):
            parts = [u.masked(m) for u, m in zip(group, masks)]
            uris = [u.fact.subject if m == "subject" else u.fact.object for u, m in zip(group, masks)]
            rows.append({
                "inputs_pretokenized": " ".join(p[0] for p in parts),
                "targets_pretokenized": ANSWER_SEP.join(p[1] for p in parts),
                "page_uri": f"synth-example-{g}", "masked_uri": ",".join(uris),
                "masked_type": ",".join(masks),
                "example_uris": ",".join(f"{u.guid}-s{0 if m == 'subject' else 1}" for u, m in zip(group, masks)),
                "facts": fact_str,
            })
    rng.shuffle(rows)
    a = {k: [r[k] for r in rows] for k in ABSTRACT_FIELDS if k != "id"}
    a["id"] = list(range(len(rows)))

    q: dict[str, list] = {k: [] for k in list(QUERY_FIELDS) + ["masked_type", "known"]}
    for u in held_out:
        s_surf, o_surf = u.surfaces
        for m in query_masks:
            inputs, target = u.masked(m)
            for k, v in (("inputs_pretokenized", inputs), ("targets_pretokenized", target),
                         ("uuid", str(uuid_lib.uuid5(UUID_NAMESPACE, f"synth:{seed}:{u.guid}:{m}"))),
                         ("obj_uri", u.fact.object), ("sub_uri", u.fact.subject),
                         ("predicate_id", u.fact.relation), ("obj_surface", o_surf), ("sub_surface", s_surf),
                         ("masked_type", m), ("known", False)):
                q[k].append(v)
    return finish_data(q, a)



__all__ = ["SYNTH_FORMS", "SYNTH_URI_RE", "synth_uri", "synth_surface", "synth_facts", "build_synth"]
