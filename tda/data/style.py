"""How the small world's Wikipedia writes its facts: the rates of ``tda.data.pages``, with reasons.

A ``PageStyle`` is read from a ``WorldConfig`` (``PageStyle.of``; the rates are world settings,
because the world's pre-training corpus reads the same pages) and can be passed to
``tda.data.ftrace.build_trex`` or ``tda.data.fidelity.bm25_sweep`` to write the pages another way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class PageStyle:
    """How the world's Wikipedia writes its facts. Rates are probabilities in [0, 1].

    Defaults and their reasons (fixed before any attribution result; the two alias rates and the
    restatement rule were refined once, after a first training measurement showed that a single
    alias rate of 0.3 for every mention conflated two different real-data properties and that
    restatements scaled by popularity left the median page stating a fact 1.35 times, against the
    lead-and-body reason below; the first version's numbers are in the issue-11 report):

    - ``alias_rate = 0.15``: share of the *other* mentions (objects, co-mentioned entities) written
      with an alias instead of the label. In FTRACE an abstract's masked answer is the sentence's
      own surface form, not the query's label; but most Wikipedia links use the linked page's
      title as anchor text, and LAMA kept facts whose objects are common single-word labels
      (countries, cities, languages, occupations), so aliases are a minority. A judgement.
    - ``subject_alias_rate = 0.5``: share of a page subject's later (non-pronoun) mentions written
      with its alias. Wikipedia names a person in full once and by surname after (its manual of
      style, MOS:SURNAME), an organisation by its short name; cities and countries mostly keep
      their title. 0.5 stands between the two. A judgement.
    - ``pronoun_rate = 0.4``: chance that a later sentence of a page refers to its subject by a
      pronoun. T-REx links pronouns to the page's main entity, and FTRACE drops the subject-masked
      example of such a sentence; biographies after their lead sentence mostly continue with
      "He"/"She" or the surname. A judgement.
    - ``multi_fact_rate = 0.5``: chance that a fact sentence states two or three facts (equally
      likely) rather than one. T-REx aligns about 11 million triples to about 6.2 million
      sentences (Elsahar et al. 2018, recalled, not verified here), nearly two per sentence, and
      FTRACE's ``facts`` lists all of them; with appositives this gives about 1.7 facts per fact
      sentence here.
    - ``comention_rate = 0.3``: expected co-mention sentences per fact sentence of a page, each
      naming the subject and the object of one of its facts without stating any fact. Wikipedia
      names related entities in many sentences that Wikidata's triples do not cover (T-REx aligns
      only some of the entity pairs in a sentence). A judgement.
    - ``appositive_rate = 0.3``: chance that a mentioned city, country or organisation carries
      its appositive fact ("Zuna , a city in Drelia"), a common Wikipedia construction and the
      reason popular facts have many proponents (real FTRACE: mean ~83, median 7 per query).
    - ``restatements = 1.0``: mean number of extra single-fact sentences restating each fact on
      its subject's page, times ``max(1, popularity weight)``. Wikipedia's lead section summarises
      the body (its manual of style asks it to), so a page states a key fact about twice; popular
      pages are longer and repeat more. Not a probability: >= 0.
    - ``query_wording_rate = 0.0``: chance that a fact is worded with the query's own template
      (template 0, LAMA's wording). LAMA's templates are common Wikipedia wordings ("was born
      in"), so some real proponents share the query's relation words; we keep DESIGN.md's rule
      (no abstract in the query's wording, so none can repeat a filled query verbatim) and show
      its effect on BM25 in the sweep instead.
    - ``max_facts_per_sentence = 3``: FTRACE's multi-fact sentences hold a few facts, 1-3 here.
    """

    alias_rate: float = 0.15
    subject_alias_rate: float = 0.5
    pronoun_rate: float = 0.4
    multi_fact_rate: float = 0.5
    comention_rate: float = 0.3
    appositive_rate: float = 0.3
    restatements: float = 1.0
    query_wording_rate: float = 0.0
    max_facts_per_sentence: int = 3

    RATES = ("alias_rate", "subject_alias_rate", "pronoun_rate", "multi_fact_rate", "comention_rate", "appositive_rate",
             "query_wording_rate")

    def __post_init__(self) -> None:
        for name in self.RATES:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"PageStyle.{name} must be a probability in [0, 1], got {value!r}")
        if not isinstance(self.restatements, (int, float)) or not 0.0 <= float(self.restatements) < math.inf:
            raise ValueError(f"PageStyle.restatements must be a finite number >= 0, got {self.restatements!r}")
        if int(self.max_facts_per_sentence) != self.max_facts_per_sentence or not 1 <= self.max_facts_per_sentence <= 3:
            raise ValueError(f"PageStyle.max_facts_per_sentence must be 1, 2 or 3, got {self.max_facts_per_sentence!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, config) -> "PageStyle":
        """The style a world config sets."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    @classmethod
    def from_dict(cls, values: dict | None) -> "PageStyle":
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PageStyle settings {unknown}; known: {sorted(known)}")
        return cls(**values)


__all__ = ["PageStyle"]
