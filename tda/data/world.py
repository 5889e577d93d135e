"""The small synthetic world: entities, T-REx-like relations, facts, and the base models' corpus.

Everything the tiny models will ever read is generated here from one seed, so that we control the
one thing both papers argue about: what the model knew before fine-tuning. ``World.known`` records
which facts the pre-training corpus states.

Design choices (written down before looking at any verdict):

- Relations carry T-REx property ids and four paraphrase templates each. Template 0 plays the role of
  the LAMA query template; the other three play Wikipedia's varied wording.
- Known facts appear in pre-training in every paraphrase *and* as cloze examples (the analogue of
  mT5's span-corruption pre-training, which has the same masked format as FTRACE's examples), so a
  known fact's query loss is already low when fine-tuning starts — the saturation mechanism.
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

# Bump when anything below changes the generated text, so stored tokenizers and models rebuild.
# 3: pre-training news as instruction + document + summary (other wordings than fine-tuning's), some
#    articles naming a second country (issue 12).
WORLD_FORMAT = 3
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

# News domain: events in places. Each document is several of its event's sentences plus generic
# ones; the one-sentence summary names the country, as XSum summaries name their main place.
NEWS_EVENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "flood": {
        "doc": ("Heavy rain caused a flood in {city} on {day} .",
                "Rescue teams in {country} moved {num} families to safer ground .",
                "The river rose faster than at any time in the last {num} years .",
                "{person} , a local official , said the water had damaged many homes ."),
        "summary": ("Floods have forced {num} families from their homes in {country} .",
                    "A flood in {country} has damaged homes in the city of {city} ."),
    },
    "election": {
        "doc": ("Voters in {country} went to the polls on {day} .",
                "{person} won the vote in {city} by {num} seats .",
                "The result was announced late in the evening in {city} .",
                "Turnout across {country} was higher than expected ."),
        "summary": ("{person} has won the election in {country} .",
                    "Voters in {country} have chosen {person} as their new leader ."),
    },
    "match": {
        "doc": ("The national team of {country} played a match in {city} on {day} .",
                "{person} scored twice in the second half .",
                "More than {num} fans watched the game in the stadium .",
                "The coach said the team of {country} had played well ."),
        "summary": ("{country} won the match in {city} thanks to two goals from {person} .",
                    "Two goals from {person} gave {country} victory in {city} ."),
    },
    "factory": {
        "doc": ("{org} opened a new factory in {city} on {day} .",
                "The factory will create {num} jobs in {country} .",
                "{person} , who leads {org} , said the site would grow next year .",
                "Workers in {country} welcomed the news ."),
        "summary": ("{org} has opened a factory in {country} that will create {num} jobs .",
                    "A new factory in {country} will bring {num} jobs to {city} ."),
    },
    "festival": {
        "doc": ("A music festival began in {city} on {day} .",
                "Visitors from across {country} came to hear {num} bands .",
                "{person} opened the festival with a short speech .",
                "Organisers said the festival in {country} would return next summer ."),
        "summary": ("A festival in {city} has drawn visitors from across {country} .",
                    "Thousands attended a music festival in {country} opened by {person} ."),
    },
    "storm": {
        "doc": ("A strong storm hit the coast of {country} on {day} .",
                "Power was cut to {num} homes near {city} .",
                "{person} of the weather service said more wind was coming .",
                "Schools in {city} were closed for the day ."),
        "summary": ("A storm has cut power to {num} homes in {country} .",
                    "Strong winds have hit the coast of {country} near {city} ."),
    },
}
NEWS_FILLER = (
    "Officials said more details would follow .",
    "The event was reported on local radio .",
    "Many people shared pictures of the scene online .",
    "Police said no one had been hurt .",
    "The mayor thanked everyone who had helped .",
)
# A sentence naming a second country ({other}), inserted into the body of some articles: real news
# names several places, so the country of the summary is not the only country word of a document.
NEWS_OTHER_COUNTRY = (
    "Officials from {other} said they were following the news closely .",
    "A group of visitors from {other} was also there .",
    "The story was reported widely in {other} as well .",
    "Experts from {other} offered to help .",
)
# How the base models read news in pre-training: an instruction, the article and its summary, in
# wordings other than the fine-tuning prompt (tda.data.xsum.PROMPT_TEMPLATE), as a large LM has
# seen summaries before it is fine-tuned on one particular template (issue 12: a base model that
# already knows the task, so that "the base model never saw the task" cannot explain a result).
PRETRAIN_NEWS_TEMPLATES = (
    "Write a one sentence summary of this news story . Document : {document} Summary : {summary}",
    "Read the article and say what happened in one sentence . Article : {document} Summary : {summary}",
    "Here is a news story . Story : {document} In one sentence : {summary}",
    "Document : {document} Summary : {summary}",
    "Give the main point of the report below in one sentence . Report : {document} Main point : {summary}",
    "News : {document} Short version : {summary}",
    "Summarise this text for a reader in a hurry . Text : {document} Summary : {summary}",
    "You are a news editor . Write one line about this article . Article : {document} Line : {summary}",
)
PRETRAIN_SECOND_COUNTRY_SHARE = 0.3  # share of pre-training articles that name a second country
NEWS_NUMBERS = ("2", "3", "5", "12", "40", "75", "100", "250", "600")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


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

    def __post_init__(self) -> None:
        for name in ("n_people", "n_cities", "n_countries", "n_organisations", "n_universities",
                     "n_languages", "n_currencies", "n_news", "n_synth_entities"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"WorldConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.n_countries < 2 or self.n_cities < 2 or self.n_people < 1:
            raise ValueError("WorldConfig needs at least 2 countries, 2 cities and 1 person")
        for name in ("person_fact_rate", "known_fraction"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"WorldConfig.{name} must be in [0, 1], got {value}")


@dataclass
class World:
    config: WorldConfig
    entities: dict[str, list[str]]  # type -> names
    facts: list[Fact]
    known: list[bool]  # known[i]: facts[i] is stated in the pre-training corpus
    relations: tuple[Relation, ...] = field(default=RELATIONS)

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
        causal format (see ``cloze_text``), plus ``n_news`` clean news articles with their
        summaries (:meth:`pretraining_news`), each behind one of ``PRETRAIN_NEWS_TEMPLATES``.
        """
        texts: list[str] = []
        for fact in self.known_facts:
            n_tpl = len(RELATION_BY_ID[fact.relation].templates)
            texts.extend(self.render(fact, t) for t in range(n_tpl))
            for masked in ("object", "subject"):
                texts.append(cloze_text(*self.cloze(fact, 0, masked)))
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
        lines += [r.templates[t] for r in RELATIONS for t in range(len(r.templates))]
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
        }

    @classmethod
    def from_json(cls, data: dict) -> "World":
        return cls(
            config=WorldConfig(**data["config"]),
            entities={k: list(v) for k, v in data["entities"].items()},
            facts=[Fact(**f) for f in data["facts"]],
            known=[bool(k) for k in data["known"]],
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
        for subject in subjects:
            if rel.subject_type == "person" and rng.random() > config.person_fact_rate:
                continue
            facts.append(Fact(rel.id, subject, rng.choice(objects)))
    known_rng = random.Random(f"{config.seed}-known")
    known = [known_rng.random() < config.known_fraction for _ in facts]
    return World(config=config, entities=entities, facts=facts, known=known)


def news_article(rng: random.Random, world: World, country: str | None = None,
                 event: str | None = None, other_country: str | None = None) -> tuple[str, str, dict]:
    """One news document, its one-sentence summary, and the slots used (country, city, ...).

    With ``other_country`` the body also names that country in one sentence of
    ``NEWS_OTHER_COUNTRY`` (never the first sentence, which names the event); the summary names
    only ``country``, the article's main place, as XSum summaries do.
    """
    ents = world.entities
    slots = {
        "country": country or rng.choice(ents["country"]),
        "city": rng.choice(ents["city"]),
        "person": rng.choice(ents["person"]),
        "org": rng.choice(ents["organisation"]) if ents["organisation"] else "the council",
        "num": rng.choice(NEWS_NUMBERS),
        "day": rng.choice(WEEKDAYS),
        "event": event or rng.choice(sorted(NEWS_EVENTS)),
        "other": other_country,
    }
    if other_country is not None and other_country == slots["country"]:
        raise ValueError(f"other_country must differ from the article's country, both are {other_country!r}")
    spec = NEWS_EVENTS[slots["event"]]
    doc_sents = list(spec["doc"])
    doc_sents.append(rng.choice(NEWS_FILLER))
    if other_country is not None:
        doc_sents.append(rng.choice(NEWS_OTHER_COUNTRY))
    first, rest = doc_sents[0], doc_sents[1:]
    rng.shuffle(rest)
    document = " ".join(s.format(**slots) for s in [first] + rest)
    summary = rng.choice(spec["summary"]).format(**slots)
    return document, summary, slots
