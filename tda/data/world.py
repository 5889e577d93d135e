"""The small synthetic world: entities, T-REx-like relations, facts, and the base models' corpus.

Everything the tiny models will ever read is generated here from one seed, so that we control the
one thing both papers argue about: what the model knew before fine-tuning. ``World.known`` records
which facts the pre-training corpus states.

Design choices (written down before looking at any verdict):

- Relations carry T-REx property ids and four paraphrase templates each. Template 0 plays the role of
  the LAMA query template; the other three play Wikipedia's varied wording.
- Every entity has a canonical *label* (what LAMA queries write, as Wikidata labels) and, for most
  types, an *alias* (what Wikipedia sentences often write instead; ``World.aliases``): a person's
  surname (Wikipedia names a person in full once, then by surname), a city's other name (as
  Bombay/Mumbai), a country's long form ("Republic of ..."), an organisation's short name, a
  university's other word order, a language's "... language", a currency's short name. Persons
  also get a pronoun ("He"/"She"; other subjects "It") for the pages of ``tda.data.pages``.
- Popularity is heavy-tailed (``popularity_exponent``): within each type, entity weights follow
  Zipf's law, ``rank ** -s`` normalised to mean 1, the shape of how often entities are named or
  linked on the web and in Wikipedia (s = 1 is Zipf's classic exponent). Objects of facts are drawn
  in proportion to these weights (famous cities are the birthplaces and seats of more entities),
  and the facts the base model reads in pre-training are drawn in proportion to the product of the
  subject's and the object's weight (popular facts are more often written, so likelier to be in
  mT5's pre-training corpus). ``popularity_exponent=0`` gives the old uniform world.
- Known facts appear in pre-training in every paraphrase *and* as cloze examples (the analogue of
  mT5's span-corruption pre-training, which has the same masked format as FTRACE's examples), so a
  known fact's query loss is already low when fine-tuning starts — the saturation mechanism. By
  default (``pretrain_cloze="pages"``) pre-training also reads the world's Wikipedia sentences
  (``tda.data.pages``) that state only known facts, plain and in cloze format, as mT5 read
  Wikipedia, the source of FTRACE's abstracts: fine-tuning then meets the known facts' abstracts
  in a text and format it has already fitted. ``"templates"`` / ``"query"`` are the smaller
  corpora (see ``World.pretraining_corpus``). Pre-training also states each alias once
  ("<label> is also known as <alias> ."), as the web names its entities several ways.
- The world's Wikipedia is written by ``tda.data.pages`` in the config's ``PageStyle`` (aliases,
  pronoun subjects, multi-fact sentences, appositives, co-mentions, restatements); the rates and
  their reasons are documented on ``PageStyle``.
- Country names include real ones (England, China, ...) so that Part II reads like the paper's
  England -> China poisoning; the rest of the names are pronounceable and made up.
- The world also fixes every surface form later chapters may use (FTRACE-SYNTH's ``entity-N`` names
  and Roman numerals, news vocabulary), so one tokenizer trained on ``vocabulary_text`` covers all.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .style import PageStyle

# Bump when anything below changes the generated text, so stored tokenizers and models rebuild.
# 3: pages, labels and aliases, pre-training cloze from pages (issue 11).
# 4: pre-training news as instruction + document + summary (other wordings than fine-tuning's), some
#    articles naming a second country (issue 12).
WORLD_FORMAT = 4
MASK = "[MASK]"
ANSWER_MARK = "answer :"  # joins a cloze sentence and its answer in causal-LM format

REAL_COUNTRIES = (
    "England", "China", "France", "Japan", "Brazil", "Egypt", "India", "Kenya",
    "Mexico", "Norway", "Spain", "Wales", "Scotland", "Italy", "Germany", "Canada",
)
CONTINENTS = ("Africa", "Asia", "Europe", "Oceania", "Antarctica", "America")
OCCUPATIONS = (
    "painter", "farmer", "singer", "lawyer", "physician", "poet", "engineer", "actor",
    "architect", "sculptor", "journalist", "diplomat", "chemist", "novelist", "composer",
)
CURRENCY_SUFFIXES = ("dollar", "mark", "crown", "pound", "franc")
PRONOUNS = ("He", "She", "It")
PRETRAIN_CLOZE = ("pages", "templates", "query")  # persons get He or She; every other subject It
ALIAS_INTRO = "is also known as"
ORG_SUFFIXES = ("Group", "Company", "Records", "Motors", "Press", "Bank")
UNIVERSITY_PREFIX = "University of"

_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s",
           "st", "t", "tr", "v", "z", "sh", "th", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "x", "nd")


@dataclass(frozen=True)
class Relation:
    """A T-REx-like relation: property id, types of its two ends, and paraphrase templates."""

    id: str
    name: str
    subject_type: str
    object_type: str
    templates: tuple[str, ...]  # "{s}" and "{o}" mark subject and object


RELATIONS: tuple[Relation, ...] = (
    Relation("P19", "place of birth", "person", "city", (
        "{s} was born in {o} .", "{s} is a native of {o} .",
        "The birthplace of {s} is {o} .", "{o} is where {s} was born .")),
    Relation("P20", "place of death", "person", "city", (
        "{s} died in {o} .", "{s} passed away in {o} .",
        "{o} is where {s} died .", "The place of death of {s} was {o} .")),
    Relation("P27", "country of citizenship", "person", "country", (
        "{s} is a citizen of {o} .", "{s} holds the citizenship of {o} .",
        "{s} has a passport from {o} .", "The nationality of {s} is that of {o} .")),
    Relation("P103", "native language", "person", "language", (
        "The native language of {s} is {o} .", "{s} grew up speaking {o} .",
        "{s} speaks {o} as a mother tongue .", "{o} is the first language of {s} .")),
    Relation("P106", "occupation", "person", "occupation", (
        "{s} works as a {o} .", "{s} is a {o} by profession .",
        "The occupation of {s} is {o} .", "{s} made a living as a {o} .")),
    Relation("P108", "employer", "person", "organisation", (
        "{s} works for {o} .", "{s} is employed by {o} .",
        "{o} is the employer of {s} .", "{s} joined the staff of {o} .")),
    Relation("P69", "educated at", "person", "university", (
        "{s} was educated at the {o} .", "{s} studied at the {o} .",
        "{s} is a graduate of the {o} .", "The {o} is the alma mater of {s} .")),
    Relation("P36", "capital", "country", "city", (
        "The capital of {s} is {o} .", "{o} is the capital city of {s} .",
        "{s} has its seat of government in {o} .", "The government of {s} sits in {o} .")),
    Relation("P37", "official language", "country", "language", (
        "The official language of {s} is {o} .", "In {s} the official language is {o} .",
        "{o} is spoken officially in {s} .", "{s} uses {o} as its official language .")),
    Relation("P30", "continent", "country", "continent", (
        "{s} is located in the continent of {o} .", "{s} lies in {o} .",
        "{s} is a country in {o} .", "{o} is the continent of {s} .")),
    Relation("P38", "currency", "country", "currency", (
        "The currency of {s} is the {o} .", "In {s} people pay with the {o} .",
        "The {o} is the money used in {s} .", "{s} issues the {o} as its currency .")),
    Relation("P131", "located in", "city", "country", (
        "{s} is a city in {o} .", "{s} is located in {o} .",
        "{s} lies within {o} .", "{o} contains the city of {s} .")),
    Relation("P159", "headquarters location", "organisation", "city", (
        "The headquarters of {s} are in {o} .", "{s} is based in {o} .",
        "{s} has its head office in {o} .", "{o} hosts the head office of {s} .")),
    Relation("P17", "country", "organisation", "country", (
        "{s} is a company from {o} .", "{s} was founded in {o} .",
        "{s} operates mainly in {o} .", "{o} is the home country of {s} .")),
)
RELATION_BY_ID = {r.id: r for r in RELATIONS}

# The news (event templates, articles, pre-training wordings) has its own module; its names are
# re-exported here, where the pre-training corpus uses them.
from .news import (NEWS_EVENTS, NEWS_FILLER, NEWS_NUMBERS, NEWS_OTHER_COUNTRY,  # noqa: E402,F401
                   PRETRAIN_NEWS_TEMPLATES, PRETRAIN_SECOND_COUNTRY_SHARE, WEEKDAYS, news_article)


@dataclass(frozen=True)
class Fact:
    relation: str  # a relation id, e.g. "P19"
    subject: str
    object: str

    @property
    def key(self) -> str:
        """The FTRACE ``facts`` encoding of one fact: ``predicate,object,subject``."""
        return f"{self.relation},{self.object},{self.subject}"


@dataclass
class WorldConfig:
    """Sizes of the small world. Defaults are the book's default profile."""

    seed: int = 0
    n_people: int = 160
    n_cities: int = 60
    n_countries: int = 24  # the first ones are REAL_COUNTRIES
    n_organisations: int = 30
    n_universities: int = 12
    n_languages: int = 14
    n_currencies: int = 10
    person_fact_rate: float = 0.5  # chance that a person has a fact for each person relation
    known_fraction: float = 0.5  # share of facts the base model reads in pre-training
    n_news: int = 300  # clean news articles in the pre-training corpus
    n_synth_entities: int = 300  # FTRACE-SYNTH entity numbers 1..n get vocabulary entries
    popularity_exponent: float = 1.0  # Zipf exponent of entity popularity (0: uniform); see the module docstring
    pretrain_cloze: str = "pages"  # what pre-training reads of known facts, see World.pretraining_corpus
    # how the world's Wikipedia writes its facts (PageStyle: defaults and reasons there)
    alias_rate: float = PageStyle.alias_rate
    subject_alias_rate: float = PageStyle.subject_alias_rate
    pronoun_rate: float = PageStyle.pronoun_rate
    multi_fact_rate: float = PageStyle.multi_fact_rate
    comention_rate: float = PageStyle.comention_rate
    appositive_rate: float = PageStyle.appositive_rate
    restatements: float = PageStyle.restatements
    query_wording_rate: float = PageStyle.query_wording_rate
    max_facts_per_sentence: int = PageStyle.max_facts_per_sentence

    def __post_init__(self) -> None:
        for name in ("n_people", "n_cities", "n_countries", "n_organisations", "n_universities",
                     "n_languages", "n_currencies", "n_news", "n_synth_entities"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"WorldConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.n_countries < 2 or self.n_cities < 2 or self.n_people < 1:
            raise ValueError("WorldConfig needs at least 2 countries, 2 cities and 1 person")
        if self.n_cities < self.n_countries:
            raise ValueError(f"WorldConfig has {self.n_cities} cities for {self.n_countries} countries: relation P36 "
                             "(capital) gives every country its own city, so n_cities must be >= n_countries")
        for name in ("person_fact_rate", "known_fraction"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {value}")
        if not 0.0 <= float(self.popularity_exponent) <= 4.0:
            raise ValueError(f"WorldConfig.popularity_exponent must be in [0, 4], got {self.popularity_exponent}")
        if self.pretrain_cloze not in PRETRAIN_CLOZE:
            raise ValueError(f"WorldConfig.pretrain_cloze must be one of {PRETRAIN_CLOZE}, got {self.pretrain_cloze!r}")
        try:
            PageStyle.of(self)
        except ValueError as err:
            raise ValueError(str(err).replace("PageStyle.", "WorldConfig.")) from None


@dataclass
class World:
    config: WorldConfig
    entities: dict[str, list[str]]  # type -> names
    facts: list[Fact]
    known: list[bool]  # known[i]: facts[i] is stated in the pre-training corpus
    relations: tuple[Relation, ...] = field(default=RELATIONS)
    aliases: dict[str, list[str]] = field(default_factory=dict)  # label -> other names (may be empty)
    popularity: dict[str, float] = field(default_factory=dict)  # label -> Zipf weight (mean 1 per type)
    pronouns: dict[str, str] = field(default_factory=dict)  # label -> "He" | "She" | "It"

    def names(self, entity: str) -> list[str]:
        """Every way the world writes an entity: its label first, then its aliases."""
        return [entity] + list(self.aliases.get(entity, ()))

    def pronoun(self, entity: str) -> str:
        return self.pronouns.get(entity, "It")

    def weight(self, entity: str) -> float:
        """The entity's popularity weight (1.0 if the world has none recorded)."""
        return float(self.popularity.get(entity, 1.0))

    @property
    def style(self) -> PageStyle:
        """How this world's Wikipedia writes its facts (the config's page rates)."""
        return PageStyle.of(self.config)

    def pages(self) -> list:
        """The world's Wikipedia: every page's sentences (``tda.data.pages.write_pages``)."""
        return _pages.write_pages(self)

    # ---- facts as text -------------------------------------------------------------------
    @staticmethod
    def render(fact: Fact, template: int = 0) -> str:
        """The fact stated in one of its relation's paraphrases."""
        return RELATION_BY_ID[fact.relation].templates[template].format(s=fact.subject, o=fact.object)

    @staticmethod
    def cloze(fact: Fact, template: int = 0, masked: str = "object") -> tuple[str, str]:
        """(sentence with the masked entity replaced by MASK, the masked entity)."""
        if masked not in ("object", "subject"):
            raise ValueError(f"masked must be 'object' or 'subject', got {masked!r}")
        tpl = RELATION_BY_ID[fact.relation].templates[template]
        if masked == "object":
            return tpl.format(s=fact.subject, o=MASK), fact.object
        return tpl.format(s=MASK, o=fact.object), fact.subject

    @property
    def known_facts(self) -> list[Fact]:
        return [f for f, k in zip(self.facts, self.known) if k]

    def is_known(self, fact: Fact) -> bool:
        """Whether the pre-training corpus states this fact."""
        return fact.key in {f.key for f in self.known_facts}

    # ---- corpora -------------------------------------------------------------------------
    def pretraining_corpus(self) -> list[str]:
        """Texts of the base models' pre-training, in a fixed seeded order.

        Known facts in every paraphrase and as object- and subject-masked cloze examples in
        causal format (``cloze_text``), each alias once, and ``n_news`` clean news articles.
        ``pretrain_cloze`` says which cloze examples: ``"query"`` the query template's only (the
        corpus before issue 11); ``"templates"`` every template's; ``"pages"`` (default) every
        template's and, as mT5 read Wikipedia in span-corruption format, every sentence of the
        world's pages that states only known facts (co-mentions included, as they state none),
        plain and with each entity mention masked in turn — the very text and format of the
        FTRACE abstracts of known facts.
        The ``n_news`` clean news articles come with their summaries (:meth:`pretraining_news`),
        each behind one of ``PRETRAIN_NEWS_TEMPLATES``.
        """
        texts: list[str] = []
        for fact in self.known_facts:
            n_tpl = len(RELATION_BY_ID[fact.relation].templates)
            texts.extend(self.render(fact, t) for t in range(n_tpl))
            cloze_templates = (0,) if self.config.pretrain_cloze == "query" else range(n_tpl)
            for t in cloze_templates:
                for masked in ("object", "subject"):
                    texts.append(cloze_text(*self.cloze(fact, t, masked)))
        if self.config.pretrain_cloze == "pages":
            known = {f.key for f in self.known_facts}
            for sentence in self.pages():
                if all(f.key in known for f in sentence.facts):  # co-mentions state no fact: always
                    texts.append(sentence.text())
                    texts.extend(cloze_text(*sentence.masked(j)) for j in range(len(sentence.mentions)))
        for label, others in self.aliases.items():
            texts.extend(f"{label} {ALIAS_INTRO} {alias} ." for alias in others)
        wording = random.Random(f"{self.config.seed}-news-wording")
        for doc, summary, _ in self.pretraining_news():
            texts.append(wording.choice(PRETRAIN_NEWS_TEMPLATES).format(document=doc, summary=summary))
        random.Random(f"{self.config.seed}-shuffle").shuffle(texts)
        return texts

    def pretraining_news(self) -> list[tuple[str, str, dict]]:
        """The ``n_news`` clean articles of the pre-training corpus as (document, summary, slots).

        Countries are drawn uniformly; ``PRETRAIN_SECOND_COUNTRY_SHARE`` of the articles name a
        second country in their body. Fine-tuning data must come from a disjoint pool of documents
        (``tda.data.tracing.tracing_news`` leaves these out).
        """
        rng = random.Random(f"{self.config.seed}-news-pretrain")
        countries = self.entities["country"]
        out = []
        for _ in range(self.config.n_news):
            country = rng.choice(countries)
            other = None
            if rng.random() < PRETRAIN_SECOND_COUNTRY_SHARE:
                other = rng.choice([c for c in countries if c != country])
            out.append(news_article(rng, self, country=country, other_country=other))
        return out

    def pretraining_news_documents(self) -> set[str]:
        """The documents of the pre-training news (what fine-tuning data must not repeat)."""
        return {doc for doc, _, _ in self.pretraining_news()}

    def vocabulary_text(self) -> list[str]:
        """Every word any chapter may write, so one word-level tokenizer covers all of them."""
        lines = [" ".join(names) for names in self.entities.values()]
        lines += [" ".join(a) for a in self.aliases.values() if a] + [" ".join(PRONOUNS), ALIAS_INTRO]
        lines += [r.templates[t] for r in RELATIONS for t in range(len(r.templates))]
        lines += _pages.vocabulary_lines()
        lines += [" ".join(s for ev in NEWS_EVENTS.values() for part in ev.values() for s in part)]
        lines += list(NEWS_FILLER) + [s.format(other="") for s in NEWS_OTHER_COUNTRY]
        lines += [t.format(document="", summary="") for t in PRETRAIN_NEWS_TEMPLATES]
        lines += [" ".join(WEEKDAYS), " ".join(REAL_COUNTRIES)]
        lines += [f"{MASK} {ANSWER_MARK} Document : Summary : Summarise the news article in one "
                  "sentence . You are an expert at summarising news . entity - ,"]
        n = max(self.config.n_synth_entities, 1)
        lines += [" ".join(roman(i) for i in range(1, n + 1)), " ".join(str(i) for i in range(n + 1))]
        lines += [" ".join(NEWS_NUMBERS)]
        return lines

    # ---- persistence ---------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "config": asdict(self.config),
            "entities": self.entities,
            "facts": [asdict(f) for f in self.facts],
            "known": self.known,
            "aliases": self.aliases,
            "popularity": self.popularity,
            "pronouns": self.pronouns,
        }

    @classmethod
    def from_json(cls, data: dict) -> "World":
        return cls(
            config=WorldConfig(**data["config"]),
            entities={k: list(v) for k, v in data["entities"].items()},
            facts=[Fact(**f) for f in data["facts"]],
            known=[bool(k) for k in data["known"]],
            aliases={k: list(v) for k, v in data.get("aliases", {}).items()},
            popularity={k: float(v) for k, v in data.get("popularity", {}).items()},
            pronouns=dict(data.get("pronouns", {})),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "World":
        return cls.from_json(json.loads(Path(path).read_text()))


def cloze_text(inputs: str, target: str) -> str:
    """A cloze example as causal-LM text: ``<masked sentence> answer : <entity>``."""
    return f"{inputs} {ANSWER_MARK} {target}"


def roman(n: int) -> str:
    """Roman numeral of a positive integer (FTRACE-SYNTH writes entities as ``entity-XIV``)."""
    if n <= 0:
        raise ValueError(f"roman numerals need a positive integer, got {n}")
    out = []
    for value, sym in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                       (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out.append(sym)
            n -= value
    return "".join(out)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(syllables)).capitalize()


def _unique_words(rng: random.Random, n: int, taken: set[str], syllables=(2, 3)) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        w = _word(rng, rng.choice(syllables))
        if w not in taken and w.lower() not in taken:
            taken.add(w)
            words.append(w)
    return words


def build_world(config: WorldConfig | None = None, **overrides) -> World:
    """Generate the world for a config (or ``WorldConfig(**overrides)``); same seed, same world."""
    if config is None:
        config = WorldConfig(**overrides)
    elif overrides:
        raise TypeError("pass either a WorldConfig or keyword overrides, not both")
    rng = random.Random(config.seed)
    taken: set[str] = set(REAL_COUNTRIES) | {w.lower() for w in OCCUPATIONS}
    first = _unique_words(rng, max(config.n_people // 2, 1), taken, (2,))
    last = _unique_words(rng, max(config.n_people // 2, 1), taken, (2, 3))
    people: list[str] = []
    seen_people: set[str] = set()
    while len(people) < config.n_people:
        name = f"{rng.choice(first)} {rng.choice(last)}"
        if name not in seen_people:
            seen_people.add(name)
            people.append(name)
    n_real = min(config.n_countries, len(REAL_COUNTRIES))
    countries = list(REAL_COUNTRIES[:n_real]) + _unique_words(rng, config.n_countries - n_real, taken)
    entities = {
        "person": people,
        "city": _unique_words(rng, config.n_cities, taken),
        "country": countries,
        "organisation": [f"{w} {rng.choice(ORG_SUFFIXES)}"
                         for w in _unique_words(rng, config.n_organisations, taken)],
        "university": [f"{UNIVERSITY_PREFIX} {w}" for w in _unique_words(rng, config.n_universities, taken)],
        "language": [w + rng.choice(("ish", "ese", "ian", "ic"))
                     for w in _unique_words(rng, config.n_languages, taken, (2,))],
        "currency": [f"{w.lower()} {rng.choice(CURRENCY_SUFFIXES)}"
                     for w in _unique_words(rng, config.n_currencies, taken, (2,))],
        "continent": list(CONTINENTS),
        "occupation": list(OCCUPATIONS),
    }
    popularity = {name: w for kind, names in entities.items()
                  for name, w in zip(names, zipf_weights(len(names), config.popularity_exponent,
                                                         random.Random(f"{config.seed}-popularity-{kind}")))}
    aliases, pronouns = _aliases(entities, taken, random.Random(f"{config.seed}-aliases"))
    facts: list[Fact] = []
    for rel in RELATIONS:
        subjects = entities[rel.subject_type]
        objects = entities[rel.object_type]
        if not subjects or not objects:
            continue
        if rel.id == "P36":  # a capital belongs to one country: draw cities without replacement
            cities = rng.sample(objects, min(len(objects), len(subjects)))
            facts += [Fact(rel.id, s, o) for s, o in zip(subjects, cities)]
            continue
        weights = [popularity[o] for o in objects]
        for subject in subjects:
            if rel.subject_type == "person" and rng.random() > config.person_fact_rate:
                continue
            facts.append(Fact(rel.id, subject, rng.choices(objects, weights)[0]))
    fact_weights = [popularity[f.subject] * popularity[f.object] for f in facts]
    n_known = round(config.known_fraction * len(facts))
    chosen = weighted_sample(fact_weights, n_known, random.Random(f"{config.seed}-known"))
    known = [i in chosen for i in range(len(facts))]
    return World(config=config, entities=entities, facts=facts, known=known, aliases=aliases,
                 popularity=popularity, pronouns=pronouns)


def zipf_weights(n: int, exponent: float, rng: random.Random) -> list[float]:
    """``n`` popularity weights ``rank ** -exponent`` over a seeded random ranking, mean 1."""
    if n <= 0:
        return []
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    raw = [r ** -float(exponent) for r in ranks]
    scale = n / sum(raw)
    return [w * scale for w in raw]


def weighted_sample(weights: list[float], k: int, rng: random.Random) -> set[int]:
    """``k`` distinct indices drawn without replacement with probability proportional to weight
    (Efraimidis and Spirakis: the ``k`` largest keys ``u ** (1 / w)``)."""
    if not 0 <= k <= len(weights):
        raise ValueError(f"cannot draw {k} of {len(weights)} items")
    keys = [(rng.random() ** (1.0 / w) if w > 0 else 0.0, i) for i, w in enumerate(weights)]
    return {i for _, i in sorted(keys, reverse=True)[:k]}


def _aliases(entities: dict[str, list[str]], taken: set[str],
             rng: random.Random) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each entity's other names and pronoun (see the module docstring for the kinds)."""
    aliases: dict[str, list[str]] = {}
    for name in entities["person"]:
        aliases[name] = [name.split()[-1]]  # the surname, as Wikipedia's later mentions
    for name, other in zip(entities["city"], _unique_words(rng, len(entities["city"]), taken)):
        aliases[name] = [other]  # another name of the city
    for name in entities["country"]:
        aliases[name] = [f"Republic of {name}"]
    for name in entities["organisation"]:
        aliases[name] = [name.rsplit(" ", 1)[0]]  # the short name, without "Group", "Bank", ...
    for name in entities["university"]:
        aliases[name] = [f"{name[len(UNIVERSITY_PREFIX) + 1:]} University"]
    for name in entities["language"]:
        aliases[name] = [f"{name} language"]
    for name in entities["currency"]:
        aliases[name] = [name.split()[0]]
    pronouns = {name: rng.choice(PRONOUNS[:2]) for name in entities["person"]}
    return aliases, pronouns


# pages.py builds on this module's names (MASK, RELATION_BY_ID, Fact, World), so it is imported
# once they exist; World's methods use it at call time.
from . import pages as _pages  # noqa: E402
