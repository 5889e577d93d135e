"""The small world's news: event templates, articles with a one-sentence summary, and the
wordings the base models read news in during pre-training (issue 12: a base model that already knows
the task). ``tda.data.world`` builds its pre-training corpus from these, ``tda.data.xsum`` and
``tda.data.tracing`` their XSum-like data sets; ``tda.data.world`` re-exports every name."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .world import World

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


__all__ = ["NEWS_EVENTS", "NEWS_FILLER", "NEWS_OTHER_COUNTRY", "PRETRAIN_NEWS_TEMPLATES",
           "PRETRAIN_SECOND_COUNTRY_SHARE", "NEWS_NUMBERS", "WEEKDAYS", "news_article"]
