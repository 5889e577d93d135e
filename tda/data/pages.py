"""The small world's Wikipedia: a page of sentences per subject, written the way T-REx aligns them.

FTRACE-TREx's abstracts are single sentences of Wikipedia pages, aligned by T-REx with the Wikidata
facts they state (REFERENCES.md, "How the real data and runs are built"). The properties of that
text that decide how hard fact tracing is — for BM25 above all — are reproduced here, each one a
``PageStyle`` parameter. The defaults were chosen from the real data's description, before any
attribution result was looked at; the reasons are next to each field. Where a number could not be
read from the real data (which this machine cannot download) it is marked as a judgement, and
``tda.data.fidelity.bm25_sweep`` shows how whole-set BM25 depends on it.

The rates live in the world's config (``WorldConfig``; ``World.style`` reads them as a
``PageStyle``, defined and justified in ``tda.data.style``), because the world's pre-training
corpus reads the same pages: the base model saw the Wikipedia sentences of the facts it knows,
as mT5 saw Wikipedia.

How a page is written (``write_pages``): every entity that is the subject of some fact gets a
page. Its facts are shuffled and grouped into sentences of 1-3 facts; the first sentence names
the subject by its label (Wikipedia's bold title), later ones by a pronoun, an alias or the label.
Objects are written by their label or an alias. A mentioned object that is itself the subject of
an appositive fact (a city's country, a country's continent, an organisation's seat) may carry it
as an appositive ("born in Zuna , a city in Drelia"), so popular objects' facts are stated on many
pages. Popular subjects restate their facts. Co-mention sentences name the subject and a related
entity (the object of one of its facts) and state no fact. Templates come from the relation's
paraphrases 1..3: template 0 is the query's (LAMA's) wording and appears only with
``query_wording_rate`` (default 0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .style import PageStyle
from .world import MASK, RELATION_BY_ID, Fact, World

# An object that is itself the subject of one of these relations may carry that fact as an
# appositive where it is mentioned: the phrase put before the appositive's object.
APPOSITIVES: dict[str, str] = {"P131": "a city in", "P30": "a country in", "P159": "a company based in"}
# Sentences that name two related entities and state no fact of Wikidata's (T-REx aligns none).
COMENTIONS = (
    "{s} is often mentioned together with {o} .",
    "{s} has close ties with {o} .",
    "{s} was discussed in a report on {o} .",
    "{s} is linked to {o} in many accounts .",
)
ABSTRACT_TEMPLATES = (1, 2, 3)  # the relations' paraphrases used by pages (0 is the query template)


@dataclass(frozen=True)
class Mention:
    """An entity named in a sentence: its URI (the world's label), its surface form, its role."""

    entity: str
    surface: str
    role: str  # "subject" (the page's subject, or a co-mention's first entity) | "object"


@dataclass(frozen=True)
class Sentence:
    """One sentence of a page: ``pattern`` holds ``{0}``, ``{1}``... where its mentions go."""

    page: str
    position: int
    pattern: str
    mentions: tuple[Mention, ...]
    facts: tuple[Fact, ...]

    def text(self) -> str:
        return self.pattern.format(*(m.surface for m in self.mentions))

    def masked(self, j: int) -> tuple[str, str]:
        """(the sentence with mention ``j`` replaced by MASK, that mention's surface form)."""
        if not 0 <= j < len(self.mentions):
            raise IndexError(f"sentence has {len(self.mentions)} mentions, asked for {j}")
        surfaces = [MASK if i == j else m.surface for i, m in enumerate(self.mentions)]
        return self.pattern.format(*surfaces), self.mentions[j].surface


def vocabulary_lines() -> list[str]:
    """Words the pages add to the world's vocabulary (appositives, co-mentions, conjunctions)."""
    return list(APPOSITIVES.values()) + [c.format(s="", o="") for c in COMENTIONS] + ["and , ."]


def _subject_initial(template: str) -> bool:
    return template.startswith("{s} ") and template.endswith(" .")


class _PageWriter:
    """Writes the pages of one world in one style.

    Each kind of decision draws from its own seeded stream (seeded by the world, not the style),
    and every draw is made whatever the rates, so that changing one rate changes only the
    decisions it governs: a sweep over ``alias_rate`` rewrites surface forms, nothing else.
    """

    def __init__(self, world: World, style: PageStyle, templates=ABSTRACT_TEMPLATES):
        self.world, self.style = world, style
        self.templates = tuple(templates)
        seed = f"{world.config.seed}-pages-{self.templates}"
        self.r_alias, self.r_pronoun, self.r_group, self.r_template, self.r_appositive, self.r_order = (
            random.Random(f"{seed}-{kind}") for kind in ("alias", "pronoun", "group", "template", "appositive", "order"))
        self.r_counts = np.random.default_rng(random.Random(f"{seed}-counts").getrandbits(63))
        self.by_subject: dict[str, list[Fact]] = {}
        for f in world.facts:
            self.by_subject.setdefault(f.subject, []).append(f)
        self.appositive = {f.subject: f for f in world.facts if f.relation in APPOSITIVES}

    # -- surface forms and wordings --------------------------------------------------------------
    def name(self, entity: str, page_subject: bool = False) -> str:
        """The entity's label, or an alias with ``alias_rate`` (``subject_alias_rate`` for the page's subject)."""
        u, pick = self.r_alias.random(), self.r_alias.random()
        aliases = self.world.aliases.get(entity)
        rate = self.style.subject_alias_rate if page_subject else self.style.alias_rate
        if aliases and u < rate:
            return aliases[int(pick * len(aliases))]
        return entity

    def allowed(self, fact: Fact, subject_initial: bool, query_wording: bool = False) -> list[str]:
        templates = (0,) if query_wording else self.templates
        tpls = [RELATION_BY_ID[fact.relation].templates[t] for t in templates]
        return [t for t in tpls if _subject_initial(t)] if subject_initial else tpls

    def wording(self, fact: Fact, subject_initial: bool) -> str:
        """A template for the fact: the query's own with ``query_wording_rate``, else one of ``templates``."""
        u, v = self.r_template.random(), self.r_template.random()
        options = self.allowed(fact, subject_initial, query_wording=True) if u < self.style.query_wording_rate else []
        options = options or self.allowed(fact, subject_initial)
        return options[int(v * len(options))]

    # -- one sentence ----------------------------------------------------------------------------
    def fact_sentence(self, page: str, position: int, facts: list[Fact]) -> Sentence:
        style = self.style
        u = self.r_pronoun.random()
        pronoun = position > 0 and u < style.pronoun_rate and all(self.allowed(f, True) for f in facts)
        mentions: list[Mention] = []
        stated = list(facts)
        if pronoun:
            subject_slot = self.world.pronoun(page)
        else:
            mentions.append(Mention(page, page if position == 0 else self.name(page, True), "subject"))
            subject_slot = "{0}"

        def object_slot(fact: Fact, at_end: bool) -> str:
            mentions.append(Mention(fact.object, self.name(fact.object), "object"))
            slot = "{%d}" % (len(mentions) - 1)
            extra = self.appositive.get(fact.object)
            if extra is None:
                return slot
            u = self.r_appositive.random()
            if u < style.appositive_rate and extra.object != page and all(m.entity != extra.object for m in mentions):
                mentions.append(Mention(extra.object, self.name(extra.object), "object"))
                slot += f" , {APPOSITIVES[extra.relation]} {{{len(mentions) - 1}}}" + ("" if at_end else " ,")
                stated.append(extra)
            return slot

        if len(facts) == 1:
            template = self.wording(facts[0], pronoun)
            head, tail = template.split("{o}")
            pattern = (head.replace("{s}", subject_slot) + object_slot(facts[0], tail == " .")
                       + tail.replace("{s}", subject_slot))
        else:
            phrases = []
            for i, fact in enumerate(facts):
                body = self.wording(fact, True)[len("{s} "):-len(" .")]
                head, tail = body.split("{o}")
                phrases.append(head + object_slot(fact, i == len(facts) - 1 and not tail) + tail)
            pattern = f"{subject_slot} " + " , ".join(phrases[:-1]) + " and " + phrases[-1] + " ."
        pattern = pattern.replace(", ,", ",").replace(", and", "and")
        return Sentence(page, position, pattern, tuple(mentions), tuple(dict.fromkeys(stated)))

    def comention(self, page: str, position: int, related: str) -> Sentence:
        u = self.r_pronoun.random()
        template = COMENTIONS[int(self.r_template.random() * len(COMENTIONS))]
        mentions: list[Mention] = []
        if u < self.style.pronoun_rate:
            subject_slot = self.world.pronoun(page)
        else:
            mentions.append(Mention(page, self.name(page, True), "subject"))
            subject_slot = "{0}"
        mentions.append(Mention(related, self.name(related), "object"))
        pattern = template.replace("{s}", subject_slot).replace("{o}", "{%d}" % (len(mentions) - 1))
        return Sentence(page, position, pattern, tuple(mentions), ())

    # -- one page ------------------------------------------------------------------------------
    def groups(self, subject: str) -> list[list[Fact]]:
        """The page's fact sentences: the facts in 1..3-fact groups, then popularity restatements."""
        style = self.style
        facts = list(self.by_subject[subject])
        self.r_group.shuffle(facts)
        out: list[list[Fact]] = []
        while facts:
            u, extra = self.r_group.random(), self.r_group.random()
            room = min(style.max_facts_per_sentence, len(facts))
            size = 2 + int(extra * (room - 1)) if u < style.multi_fact_rate and room > 1 else 1  # 2..room, equally
            while size > 1 and not all(self.allowed(f, True) for f in facts[:size]):
                size -= 1  # a conjunction needs a subject-initial wording of every fact
            out.append(facts[:size])
            facts = facts[size:]
        mean_extra = style.restatements * max(1.0, self.world.weight(subject))
        for fact in self.by_subject[subject]:
            out += [[fact]] * int(self.r_counts.poisson(mean_extra))
        return out

    def page(self, subject: str) -> list[Sentence]:
        groups = self.groups(subject)
        related = list(dict.fromkeys(f.object for f in self.by_subject[subject]))
        n_comentions = int(self.r_counts.binomial(len(groups), self.style.comention_rate))
        body: list = groups[1:] + [None] * n_comentions
        self.r_order.shuffle(body)
        sentences = [self.fact_sentence(subject, 0, groups[0])]
        for item in body:
            position = len(sentences)
            if item is None:
                sentences.append(self.comention(subject, position, related[int(self.r_order.random() * len(related))]))
            else:
                sentences.append(self.fact_sentence(subject, position, item))
        return sentences


def write_pages(world: World, style: PageStyle | None = None, templates=ABSTRACT_TEMPLATES) -> list[Sentence]:
    """Every page of the world's Wikipedia, subject after subject (the world's fact order).

    ``style`` None: the world's own (``World.style``). Deterministic in the world, the style and
    the templates. ``templates`` (default 1..3) are the
    relation paraphrases pages may use; template 0, the query's wording, is refused.
    """
    style = style if style is not None else world.style
    templates = tuple(dict.fromkeys(int(t) for t in templates))
    n_tpl = min(len(r.templates) for r in RELATION_BY_ID.values())
    if 0 in templates:
        raise ValueError("template 0 is the query template: pages must state facts in other paraphrases, "
                         "or BM25 finds the query's own wording (see DESIGN.md)")
    if not templates or any(not 1 <= t < n_tpl for t in templates):
        raise ValueError(f"templates must be a non-empty subset of 1..{n_tpl - 1}, got {list(templates)}")
    writer = _PageWriter(world, style, templates)
    subjects = list(dict.fromkeys(f.subject for f in world.facts))
    return [s for subject in subjects for s in writer.page(subject)]


__all__ = ["APPOSITIVES", "COMENTIONS", "ABSTRACT_TEMPLATES", "PageStyle", "Mention", "Sentence",
           "write_pages", "vocabulary_lines"]
