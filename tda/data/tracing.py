"""The XSum analogue of hallucination tracing on a faithful footing (issue 12): data with real
confounders, the documents that are hard negatives, lexical detectors, and the setup's guards.

DDA's and CEA's setup poisons a few XSum summaries (England -> China) and traces the model's
"China" outputs for England articles back to them. A reviewer's objections to an easy version of it
are the design of this module:

- *A single word must not separate poisoned from clean documents.* :func:`tracing_news` writes
  genuine documents about the target country (their summaries say "China" honestly) and articles
  that name several countries (an England article may name China in its body, a China article
  England), so "China in the summary" or "England in the article" is no label.
- *The hard negatives are measured on their own.* :func:`genuine_target` marks the clean documents
  whose summary names the target word; ``tda.metrics.hard_negative_auc`` scores a method on the
  poisoned documents against those only. :func:`lexical_detectors` gives the AUCs of two word
  detectors, a floor that any attribution method must beat to show more than word matching.
- *The setup is checked before any verdict.* :data:`GUARDS` and :func:`guard_failures`: poisoned
  documents at most 5% of the training set; genuine target-word documents at least 1.5 times the
  poisoned; the base model's loss on clean held-out summaries at most twice the fine-tuned
  model's (the base knows the task); its summaries name the article's own country at least half the
  time (:func:`names_own_country`); and, per run, ``tda.counterfactual`` (retraining without the
  poison removes the hallucinations).
"""

from __future__ import annotations

import random
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..metrics import hard_negative_auc, set_auc
from .world import World, news_article
from .xsum import FIELDS, POISONED, check_schema, contains_word, features

# Fixed before any attribution result (issue 12), checked in every run.
GUARDS = {
    "max_poisoned_share": 0.05,  # poisoned documents / training documents
    "min_genuine_ratio": 1.5,  # genuine target-word documents / poisoned documents
    "max_base_loss_ratio": 2.0,  # base model's clean held-out loss / fine-tuned model's
    # The base model's greedy summaries of clean held-out articles name the article's own country
    # (:func:`names_own_country`) at least this often. Added after the loss guard above passed on a
    # base that named it 0% of the time (it wrote memorised summaries; an LLM summariser names the
    # article's main place): the loss barely sees the one token the task turns on.
    "min_base_copy_rate": 0.5,
}
# The setup each world uses (counts, poison, model size) and the measurements behind it are in
# notebooks/params.yml (worlds -> dda); Part II's pipeline reads them (tda.experiments.dda.pipeline).


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _share(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def tracing_news(world: World, *, n_train: int = 150, n_source: int = 15, n_target: int = 18,
                 n_test_source: int = 60, n_test_other: int = 20, source: str = "England",
                 target: str = "China", source_mentions_target: float = 0.25,
                 target_mentions_source: float = 0.5, second_country_share: float = 0.3, seed: int = 0,
                 exclude: Iterable[str] | None = None):
    """The small world's XSum for hallucination tracing, with real confounders (issue 12).

    Returns a ``datasets.DatasetDict`` with ``train`` and ``test`` in the XSum schema
    (``poisoned`` all False; :func:`poison` comes next). Counts are exact:

    - ``train``: ``n_train`` documents; ``n_source`` are about ``source`` (their summary names it),
      ``n_target`` about ``target`` -- the *genuine* target-word documents, the hard negatives of
      the tracing task, since their summaries name the word that poisoned summaries name -- and
      the rest about the world's other countries, drawn uniformly.
    - Several countries per article: ``source_mentions_target`` of the source documents name the
      target country in their body, ``target_mentions_source`` of the target documents name the
      source country in theirs, and ``second_country_share`` of every other document names some
      second country (any but its own). So no single word of a document separates the documents
      that will be poisoned from the clean ones.
    - ``test``: ``n_test_source`` documents about ``source`` whose text never names ``target``
      (the prompts: a summary naming ``target`` is then an error, CEA's rule for its XSum
      canaries), and ``n_test_other`` about other countries (with them, held-out clean summaries
      measure how well a model knows the task).

    No document repeats another, and none is one of ``exclude`` (default: the documents of the
    world's pre-training news, ``World.pretraining_news``): fine-tuning and test documents come
    from a pool disjoint from what the base model read. Same arguments, same datasets. Ids are
    ``news-00000``... in the order of the rows (train, then test).

    Errors: ``source`` or ``target`` not a country of the world, or the same word; counts that
    do not fit (``n_source + n_target > n_train``); shares outside [0, 1]; a world too small to
    give that many distinct documents.
    """
    countries = list(world.entities["country"])
    for name, word in (("source", source), ("target", target)):
        if word not in countries:
            raise ValueError(f"{name} country {word!r} is not in this world; its countries are {countries}")
    if source == target:
        raise ValueError(f"source and target are both {source!r}")
    for name in ("n_train", "n_source", "n_target", "n_test_source", "n_test_other"):
        _count(name, locals()[name])
    for name in ("source_mentions_target", "target_mentions_source", "second_country_share"):
        _share(name, locals()[name])
    if n_source + n_target > n_train:
        raise ValueError(f"n_source + n_target = {n_source + n_target} documents do not fit in n_train={n_train}")
    others = [c for c in countries if c not in (source, target)]
    if not others and (n_train > n_source + n_target or n_test_other):
        raise ValueError(f"the world has no country besides {source!r} and {target!r} for the other documents")

    rng = random.Random(f"{world.config.seed}-tracing-news-{seed}")

    def second(main: str, pool: Sequence[str]) -> str | None:
        pool = [c for c in pool if c != main]
        return rng.choice(pool) if pool and rng.random() < second_country_share else None

    n_st = round(source_mentions_target * n_source)
    n_ts = round(target_mentions_source * n_target)
    plan = ([(source, target)] * n_st + [(source, "draw-others")] * (n_source - n_st)
            + [(target, source)] * n_ts + [(target, "draw-others")] * (n_target - n_ts)
            + [("draw", "draw-any")] * (n_train - n_source - n_target))
    rng.shuffle(plan)
    plan += [(source, "draw-others")] * n_test_source + [("draw-test", "draw-others")] * n_test_other

    seen = set(world.pretraining_news_documents() if exclude is None else exclude)
    rows = []
    for i, (main, other) in enumerate(plan):
        for _attempt in range(1000):
            country = rng.choice(others) if main == "draw" else \
                rng.choice([c for c in countries if c != source]) if main == "draw-test" else main
            mention = (second(country, others) if other == "draw-others" else
                       second(country, countries) if other == "draw-any" else other)
            document, summary, _ = news_article(rng, world, country=country, other_country=mention)
            if document not in seen:
                break
        else:
            raise ValueError(f"could not draw {len(plan)} distinct news documents from this world (stuck at "
                             f"document {i}); make the world larger or ask for fewer documents")
        seen.add(document)
        rows.append({"document": document, "summary": summary, "id": f"news-{i:05d}", POISONED: False})

    from datasets import Dataset, DatasetDict

    def make(part: list[dict]):
        return Dataset.from_dict({name: [r[name] for r in part] for name in FIELDS + (POISONED,)}, features=features())

    test = rows[n_train:]
    rng.shuffle(test)
    return DatasetDict({"train": make(rows[:n_train]), "test": make(test)})


def genuine_target(dataset, target: str = "China") -> np.ndarray:
    """Per row: a clean (not poisoned) document whose summary names ``target`` -- the hard
    negatives of tracing, honest documents that say what the poisoned ones say."""
    check_schema(dataset)
    flags = dataset[POISONED] if POISONED in dataset.column_names else [False] * len(dataset)
    return np.array([contains_word(s, target) and not p for s, p in zip(dataset["summary"], flags)], dtype=bool)


def lexical_detectors(dataset, source: str = "England", target: str = "China") -> dict[str, dict[str, float]]:
    """Set-level AUC (over all training documents) and hard-negative AUC (poisoned against
    :func:`genuine_target` documents) of two word detectors that read the training data only:
    ``"target in summary"`` (1 if the summary names ``target``) and ``"target in summary, source in
    document"`` (CEA's rule for its canaries, as a score). A 0/1 detector that fires on every
    target-word summary scores exactly ``1 - f/2`` over all documents, ``f`` the share of clean
    documents it fires on, and 0.5 on the hard negatives."""
    poisoned = np.asarray(dataset[POISONED], dtype=bool)
    genuine = genuine_target(dataset, target)
    if not poisoned.any():
        raise ValueError("no poisoned document: the detectors' AUC needs positives")
    if not genuine.any():
        raise ValueError(f"no clean document's summary names {target!r}: there are no hard negatives")
    summaries, documents = list(dataset["summary"]), list(dataset["document"])
    detectors = {
        f"{target} in summary": [contains_word(s, target) for s in summaries],
        f"{target} in summary, {source} in document": [contains_word(s, target) and contains_word(d, source)
                                                        for s, d in zip(summaries, documents)],
    }
    out = {}
    for name, fires in detectors.items():
        score = np.asarray(fires, dtype=np.float64)
        out[name] = {"auc": set_auc(score, poisoned),
                     "hard_negative_auc": float(hard_negative_auc(score, poisoned, genuine)[0])}
    return out


def names_own_country(references: Sequence[str], generated: Sequence[str], countries: Sequence[str]) -> np.ndarray:
    """Per article: 1.0 if the generated summary names a country its reference summary names (the
    article's own country), 0.0 if not, NaN where the reference names no country. Its mean over
    clean held-out articles is the base model's copy rate (``GUARDS["min_base_copy_rate"]``)."""
    if len(references) != len(generated):
        raise ValueError(f"{len(references)} reference summaries but {len(generated)} generated ones")
    out = np.full(len(references), np.nan)
    for i, (ref, gen) in enumerate(zip(references, generated)):
        own = [c for c in countries if contains_word(ref, c)]
        if own:
            out[i] = float(any(contains_word(gen, c) for c in own))
    return out


def guard_failures(n_train: int, n_poisoned: int, n_genuine_target: int, base_loss_clean: float,
                   finetuned_loss_clean: float, guards: Mapping[str, float] = GUARDS,
                   base_copy_rate: float | None = None) -> list[str]:
    """The guards a run's setup fails, each as a sentence with its numbers (empty: all hold).
    ``base_copy_rate`` None (not measured, e.g. a real source without a country list) skips its guard."""
    fails = []
    if n_poisoned > guards["max_poisoned_share"] * n_train:
        fails.append(f"{n_poisoned} poisoned documents are {n_poisoned / n_train:.1%} of the {n_train} training "
                     f"documents, more than {guards['max_poisoned_share']:.0%}")
    if n_genuine_target < guards["min_genuine_ratio"] * n_poisoned:
        fails.append(f"{n_genuine_target} genuine target-word documents are fewer than "
                     f"{guards['min_genuine_ratio']:g} x the {n_poisoned} poisoned")
    if base_loss_clean > guards["max_base_loss_ratio"] * finetuned_loss_clean:
        fails.append(f"the base model's clean held-out loss {base_loss_clean:.3f} is more than "
                     f"{guards['max_base_loss_ratio']:g} x the fine-tuned model's {finetuned_loss_clean:.3f}: "
                     "the base does not know the task")
    if base_copy_rate is not None and not base_copy_rate >= guards["min_base_copy_rate"]:
        fails.append(f"the base model names the article's own country in {base_copy_rate:.0%} of its summaries of "
                     f"clean held-out articles, less than {guards['min_base_copy_rate']:.0%}: it does not summarise "
                     "the article it is given")
    return fails


__all__ = ["GUARDS", "tracing_news", "genuine_target", "lexical_detectors", "names_own_country", "guard_failures"]
