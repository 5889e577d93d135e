"""Small files in the real formats, with real-world text, for tests and the first run on a new machine.

No data set can be downloaded here, and a user's first command on a GPU machine should not need
one either, so the smallest "real" case reads files written by this module:

- ``write_ftrace_sample``: FTRACE-TREx's format (``queries.jsonl`` and ``abstracts.jsonl``, T5
  sentinels ``<extra_id_0>``, Wikidata-style URIs and ``facts``), with English sentences about
  countries, capitals, languages, continents and currencies: 5 relations, 60 facts; every fact is
  stated by two sentences (each written twice, once with the subject masked and once with the
  object) and asked by one LAMA-style query. The query templates never occur among the abstracts,
  so that BM25 cannot win by matching a query's own wording (the trap DESIGN.md describes).
- ``write_xsum_sample``: XSum's format (``document``, ``summary``, ``id`` per JSON line), short
  news reports from a few topics and places, a share of them about England (the word Part II's
  poisoning replaces).

The facts are common knowledge, written for this sample; the ``Q``/``P`` identifiers have
Wikidata's form and are illustrative only. Everything is a deterministic function of ``seed``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

from ..seeds import derive_seed

# country, capital, official language, continent, currency (each with an illustrative URI)
COUNTRIES = [
    (("France", "Q142"), ("Paris", "Q90"), ("French", "Q150"), ("Europe", "Q46"), ("euro", "Q4916")),
    (("Germany", "Q183"), ("Berlin", "Q64"), ("German", "Q188"), ("Europe", "Q46"), ("euro", "Q4916")),
    (("Italy", "Q38"), ("Rome", "Q220"), ("Italian", "Q652"), ("Europe", "Q46"), ("euro", "Q4916")),
    (("Spain", "Q29"), ("Madrid", "Q2807"), ("Spanish", "Q1321"), ("Europe", "Q46"), ("euro", "Q4916")),
    (("Norway", "Q20"), ("Oslo", "Q585"), ("Norwegian", "Q9043"), ("Europe", "Q46"), ("Norwegian krone", "Q132643")),
    (("Japan", "Q17"), ("Tokyo", "Q1490"), ("Japanese", "Q5287"), ("Asia", "Q48"), ("yen", "Q8146")),
    (("India", "Q668"), ("New Delhi", "Q987"), ("Hindi", "Q1568"), ("Asia", "Q48"), ("Indian rupee", "Q80524")),
    (("Egypt", "Q79"), ("Cairo", "Q85"), ("Arabic", "Q13955"), ("Africa", "Q15"), ("Egyptian pound", "Q199462")),
    (("Kenya", "Q114"), ("Nairobi", "Q3870"), ("Swahili", "Q7838"), ("Africa", "Q15"), ("Kenyan shilling", "Q202882")),
    (("Brazil", "Q155"), ("Brasília", "Q2844"), ("Portuguese", "Q5146"), ("South America", "Q18"),
     ("real", "Q173117")),
    (("Peru", "Q419"), ("Lima", "Q2868"), ("Spanish", "Q1321"), ("South America", "Q18"), ("sol", "Q204656")),
    (("Canada", "Q16"), ("Ottawa", "Q1930"), ("English", "Q1860"), ("North America", "Q49"),
     ("Canadian dollar", "Q1104069")),
]
# relation -> (index of the subject and object in a COUNTRIES row, query template, two abstract templates)
RELATIONS = {
    "P36": (0, 1, "The capital of {s} is <extra_id_0> .",
            ("{s} is a country whose seat of government and largest city is {o} .",
             "Most national ministries of {s} have their offices in {o} , a city of museums and parks .")),
    "P37": (0, 2, "The official language of {s} is <extra_id_0> .",
            ("Most people in {s} speak {o} at home , at school and at work .",
             "Courts and newspapers in {s} use {o} , which children learn first .")),
    "P30": (0, 3, "{s} is located in <extra_id_0> .",
            ("{s} is a sovereign state in {o} with a long coastline and several neighbours .",
             "Geographers count {s} among the larger nations of {o} .")),
    "P38": (0, 4, "The currency of {s} is the <extra_id_0> .",
            ("Shops in {s} quote their prices in the {o} .",
             "The central bank of {s} prints banknotes of the {o} .")),
    "P17": (1, 0, "{s} is a city in the country of <extra_id_0> .",
            ("{s} lies in {o} and attracts millions of visitors every year .",
             "The old town of {s} is one of the best known places in {o} .")),
}

NEWS_PLACES = ["England", "Scotland", "Wales", "France", "Ireland", "Italy", "Spain", "Germany"]
NEWS_TOPICS = [
    ("{p} won their opening match {a}-{b} on {d} , with two late goals from the bench .",
     "The coach said the team had trained hard for months and deserved the result .",
     "{p} won their opening match of the season."),
    ("Heavy rain flooded roads across {p} on {d} , and several railway lines were closed .",
     "Forecasters expect the storm to move north over the coming days .",
     "Floods closed roads and railway lines across {p}."),
    ("A new factory opened in {p} on {d} and will employ {a}00 people within two years .",
     "Local leaders welcomed the investment after a decade of job losses .",
     "A factory employing hundreds of people has opened in {p}."),
    ("Voters in {p} went to the polls on {d} in an election that was closer than expected .",
     "Turnout was higher than at the last vote , officials said .",
     "Voters in {p} took part in a close election."),
    ("Doctors in {p} reported on {d} that waiting times at hospitals fell for the {a}th month .",
     "The health minister praised staff but warned that winter would be hard .",
     "Hospital waiting times in {p} have fallen again."),
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _facts() -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """(relation, (subject, uri), (object, uri)) for every fact of the sample, in a fixed order."""
    return [(rel, row[si], row[oi]) for rel, (si, oi, _, _) in RELATIONS.items() for row in COUNTRIES]


def ftrace_records(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The sample's ``(queries, abstracts)`` records in FTRACE-TREx's fields (abstracts shuffled by ``seed``)."""
    queries, abstracts = [], []
    sentence_no = {rel: 2 * i for i, rel in enumerate(RELATIONS)}  # a sentence's number on its page
    for rel, (subj, s_uri), (obj, o_uri) in _facts():
        facts = f"{rel},{o_uri},{s_uri}"
        queries.append({"inputs_pretokenized": RELATIONS[rel][2].format(s=subj),
                        "targets_pretokenized": f"<extra_id_0> {obj}", "uuid": f"sample-{rel}-{s_uri}",
                        "obj_uri": o_uri, "sub_uri": s_uri, "predicate_id": rel, "obj_surface": obj,
                        "sub_surface": subj})
        for k, template in enumerate(RELATIONS[rel][3]):
            for masked, (answer, uri) in (("subject", (subj, s_uri)), ("object", (obj, o_uri))):
                text = template.format(s="<extra_id_0>" if masked == "subject" else subj,
                                       o="<extra_id_0>" if masked == "object" else obj)
                uris = f"{s_uri}-{sentence_no[rel] + k}-{o_uri}-{s_uri}-{int(masked == 'subject')}"
                abstracts.append({"inputs_pretokenized": text, "targets_pretokenized": f"<extra_id_0> {answer}",
                                  "page_uri": s_uri, "masked_uri": uri, "masked_type": masked,
                                  "example_uris": uris, "facts": facts})
    random.Random(derive_seed(seed, "sample-abstracts")).shuffle(abstracts)
    for i, row in enumerate(abstracts):
        row["id"] = i
    return queries, abstracts


def _write_jsonl(path: Path, rows: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


def write_ftrace_sample(folder: str | Path, seed: int = 0) -> Path:
    """Write ``queries.jsonl`` and ``abstracts.jsonl`` (FTRACE-TREx's format) into ``folder``; returns it.

    ``tda.data.ftrace.load_ftrace(folder)`` reads it: 60 queries, 240 abstracts, every query with
    4 proponents (two sentences, each masked twice).
    """
    folder = Path(folder)
    queries, abstracts = ftrace_records(seed)
    _write_jsonl(folder / "queries.jsonl", queries)
    _write_jsonl(folder / "abstracts.jsonl", abstracts)
    return folder


def xsum_records(n_docs: int = 40, seed: int = 0, england_share: float = 0.4) -> list[dict]:
    """``n_docs`` news reports in XSum's fields; about ``england_share`` of them are about England."""
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    rng = random.Random(derive_seed(seed, "sample-news"))
    rows = []
    for i in range(n_docs):
        place = "England" if rng.random() < england_share else rng.choice(NEWS_PLACES[1:])
        first, second, summary = rng.choice(NEWS_TOPICS)
        fill = {"p": place, "a": rng.randint(2, 9), "b": rng.randint(0, 1), "d": rng.choice(DAYS)}
        rows.append({"document": f"{first.format(**fill)} {second.format(**fill)}",
                     "summary": summary.format(**fill), "id": f"{30000000 + i}"})
    return rows


def write_xsum_sample(path: str | Path, n_docs: int = 40, seed: int = 0) -> Path:
    """Write ``n_docs`` news reports as XSum JSON lines at ``path`` (read by ``tda.data.xsum.load_xsum``)."""
    return _write_jsonl(Path(path), xsum_records(n_docs, seed))


__all__ = ["COUNTRIES", "RELATIONS", "ftrace_records", "write_ftrace_sample", "xsum_records", "write_xsum_sample"]
