"""XSum for hallucination tracing (DDA, Wu et al. 2024): loader, synthetic news analogue, poisoning.

DDA's setup: take XSum (news articles with a one-sentence summary), replace an entity word in the
summaries of a few training documents ("England" -> "China"), fine-tune a causal LM on the poisoned
set, prompt it with held-out documents whose true summary says "England", and trace the outputs
that say "China" back to the training data. The poisoned documents are the ground truth.

Everything here speaks one schema, the real dataset's (``EdinburghNLP/xsum``):

- ``document`` (str): the article.
- ``summary`` (str): its one-sentence summary.
- ``id`` (str): a unique id.
- ``poisoned`` (bool): whether :func:`poison` rewrote the summary (False unless poisoned).

So attribution methods and metrics run unchanged on real XSum (:func:`load_xsum`) and on the small
world's news analogue (:func:`synthetic_news`).

Word matching (:func:`contains_word`, :func:`replace_word`) is by whole word, case-sensitive: the
word must not be glued to letters, digits or underscores on either side, so "England" matches in
"in England ." and "England's" but not in "Englander" or "New-Englandish". That is what a plain
string replacement of a country name does on real XSum text, minus accidental sub-word hits.

Fine-tuning format: the authors' repository fine-tunes with a summarisation-expert instruction,
then "Document: {document}" and "Summary:". :func:`prompt` paraphrases it in words that the small
world's word-level tokenizer knows (see ``World.vocabulary_text``); :func:`to_examples` turns a
dataset into prompt/target pairs for :class:`tda.task.CausalLMTask`. A real article can be longer
than the model's context (XSum's run to ~300 tokens against a 256-token limit): the document is
then cut, never the instruction or the "Summary :" cue (:func:`document_span`).
"""

from __future__ import annotations

import json
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..locations import hub_name
from ..task import Examples
from .files import first_missing, first_unstorable, jsonl_lines, parquet_table
from .world import World, news_article

HUB_NAME = "EdinburghNLP/xsum"
FIELDS = ("document", "summary", "id")
POISONED = "poisoned"
ID_OPTIONS = (None, "row")  # load_xsum(ids=...): the file's ids, or ids from the row numbers
ROW_IDS_HINT = "pass ids='row' to number the records by their row (\"0\", \"1\", ...) instead"

INSTRUCTION = "You are an expert at summarising news . Summarise the news article in one sentence ."
PROMPT_TEMPLATE = INSTRUCTION + " Document : {document} Summary :"


class XSumFormatError(ValueError):
    """A real-source file or dataset does not have the XSum schema (names file, record and field)."""


def features():
    """The ``datasets.Features`` of the project's XSum schema."""
    from datasets import Features, Value

    return Features({"document": Value("string"), "summary": Value("string"), "id": Value("string"),
                     POISONED: Value("bool")})


def _to_dataset(columns: dict[str, list]):
    from datasets import Dataset

    return Dataset.from_dict(columns, features=features())


# ---- word matching ---------------------------------------------------------------------------
def _word_pattern(word: str) -> re.Pattern:
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"a word to match must be a non-empty string, got {word!r}")
    return re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)")


def contains_word(text: str, word: str) -> bool:
    """Whether ``text`` contains ``word`` as a whole word (case-sensitive)."""
    return _word_pattern(word).search(text or "") is not None


def replace_word(text: str, old: str, new: str) -> str:
    """``text`` with every whole-word occurrence of ``old`` replaced by ``new``."""
    return _word_pattern(old).sub(new.replace("\\", "\\\\"), text)


# ---- real source -----------------------------------------------------------------------------
def _check_record(record: Any, where: str, row: int | str, index: int, ids: str | None = None) -> dict:
    """One validated record in the project schema (extra fields dropped).

    ``row`` labels the record in messages; ``index`` is its 0-based number, the id when ``ids='row'``.
    """
    if not isinstance(record, dict):
        raise XSumFormatError(f"{where}: record {row}: expected an object with fields "
                              f"{', '.join(FIELDS)}, got {type(record).__name__}")
    if ids == "row":
        if "id" in record:
            raise XSumFormatError(f"{where}: record {row}: field 'id' is present, but ids='row' would "
                                  "replace the file's ids by row numbers; leave out ids='row' to use them")
        record = {**record, "id": str(index)}
    out = {}
    for name in FIELDS:
        if name not in record:
            hint = f"; {ROW_IDS_HINT}" if name == "id" else ""
            raise XSumFormatError(f"{where}: record {row}: field {name!r} is missing "
                                  f"(the record has {sorted(record)}){hint}")
        value = record[name]
        if value is None:
            raise XSumFormatError(f"{where}: record {row}: field {name!r} is null")
        if name == "id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # XSum ids are digit strings; a numeric id is the same id
        if not isinstance(value, str):
            raise XSumFormatError(f"{where}: record {row}: field {name!r} must be a string, "
                                  f"got {type(value).__name__} {value!r:.60}")
        out[name] = value
    flag = record.get(POISONED, False)
    if flag is None:
        flag = False
    if not isinstance(flag, bool):
        raise XSumFormatError(f"{where}: record {row}: field {POISONED!r} must be true or false, "
                              f"got {flag!r:.60}")
    out[POISONED] = flag
    return out


def _records_to_dataset(records: Iterable[tuple[int | str, Any]], where: str, ids: str | None = None):
    columns: dict[str, list] = {name: [] for name in FIELDS + (POISONED,)}
    seen: dict[str, int | str] = {}
    labels: list[int | str] = []
    for index, (row, record) in enumerate(records):
        rec = _check_record(record, where, row, index, ids)
        if rec["id"] in seen:
            raise XSumFormatError(f"{where}: record {row}: field 'id' repeats id {rec['id']!r} "
                                  f"of record {seen[rec['id']]}; ids must be unique")
        seen[rec["id"]] = row
        labels.append(row)
        for name, value in rec.items():
            columns[name].append(value)
    if not labels:
        raise XSumFormatError(f"{where}: no records (the file is empty); give a file with records")
    try:
        return _to_dataset(columns)
    except Exception as err:  # a value Arrow cannot store (a lone surrogate in a string, say)
        for name in FIELDS:
            found = first_unstorable(columns[name])
            if found is not None:
                raise XSumFormatError(f"{where}: record {labels[found[0]]}: field {name!r} "
                                      f"{found[1]}") from err
        raise


def _jsonl_records(path: Path, limit: int | None):
    for row, lineno, record in jsonl_lines(path, XSumFormatError):
        if limit is not None and row >= limit:
            return
        yield f"{row} (line {lineno})", record


def _required(ids: str | None) -> tuple[str, ...]:
    return tuple(f for f in FIELDS if not (ids == "row" and f == "id"))


def _parquet_records(path: Path, limit: int | None, ids: str | None):
    table = parquet_table(path, XSumFormatError)
    missing = first_missing(_required(ids), table.column_names)
    if missing:
        hint = f"; {ROW_IDS_HINT}" if missing == "id" else ""
        raise XSumFormatError(f"{path}: record 0: field {missing!r} is missing "
                              f"(the file's columns are {table.column_names}){hint}")
    if limit is not None:
        table = table.slice(0, limit)
    yield from enumerate(table.to_pylist())


def _split_file(folder: Path, split: str) -> Path:
    """The one ``{split}.jsonl``/``.json``/``.parquet`` of a folder (two of them are an error)."""
    found = [folder / f"{split}.{ext}" for ext in ("jsonl", "json", "parquet") if (folder / f"{split}.{ext}").is_file()]
    if not found:
        raise FileNotFoundError(f"{folder} holds no {split}.jsonl, {split}.json or {split}.parquet")
    if len(found) > 1:
        raise XSumFormatError(f"{folder} holds the {split} split in more than one format: "
                              f"{', '.join(p.name for p in found)}; which one is current cannot be told "
                              f"from the files: keep one (move or delete the others), or pass the file "
                              f"to read as the source")
    return found[0]


def load_xsum(source: str | Path = HUB_NAME, split: str = "train", limit: int | None = None,
              ids: str | None = None):
    """XSum as a ``datasets.Dataset`` with fields ``document``, ``summary``, ``id``, ``poisoned``.

    ``source`` is a Hugging Face dataset name (default ``EdinburghNLP/xsum``; needs a network the
    first time), a local ``.jsonl``/``.json`` (one JSON object per line) or ``.parquet`` file, or a
    local folder holding ``{split}.jsonl`` or ``{split}.parquet`` (not both: a folder holding the
    split in two formats raises :class:`XSumFormatError`; keep one). A single local file is one
    split, so ``split`` is ignored for it. ``limit`` keeps the first ``limit`` records.

    Every record must have string fields ``document``, ``summary`` and ``id`` (an integer id is
    read as its digits); ``poisoned``, if present, must be a boolean; other fields are dropped.
    Ids must be unique. A file without ids (some public samples have none) is refused unless
    ``ids="row"``: then every record's id is its 0-based record number as a string (``"0"``,
    ``"1"``, ...; blank JSON lines are not records), and a record that has an ``id`` of its own is
    an error (its ids would be thrown away). Anything else, and an empty file, raises
    :class:`XSumFormatError` naming the file, the record (0-based row; the line too for JSON lines)
    and the field. A missing local path raises FileNotFoundError.
    """
    if ids not in ID_OPTIONS:
        raise ValueError(f"ids must be None or 'row' (ids from the row numbers), got {ids!r}")
    text = str(source)
    path = Path(text)
    if path.is_dir():
        path = _split_file(path, split)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return _records_to_dataset(_jsonl_records(path, limit), str(path), ids)
        if suffix == ".parquet":
            return _records_to_dataset(_parquet_records(path, limit, ids), str(path), ids)
        raise XSumFormatError(f"{path}: unknown file type {suffix!r}; use .jsonl, .json or .parquet")
    # a hub name, or a missing local path refused at once (tda.locations' rules)
    return _load_hub(hub_name(source, "XSum file"), split, limit, ids)


def _load_hub(name: str, split: str, limit: int | None, ids: str | None = None):
    """A hub dataset, checked and converted to the project schema."""
    from datasets import load_dataset

    hub_split = split if limit is None else f"{split}[:{int(limit)}]"
    data = load_dataset(name, split=hub_split)
    where = f"{name} (split {split})"
    missing = first_missing(_required(ids), data.column_names)
    if missing:
        hint = f"; {ROW_IDS_HINT}" if missing == "id" else ""
        raise XSumFormatError(f"{where}: record 0: field {missing!r} is missing "
                              f"(the dataset's columns are {data.column_names}){hint}")
    names = [f for f in FIELDS + (POISONED,) if f in data.column_names]
    records = (dict(zip(names, values)) for values in zip(*(data[f] for f in names)))
    return _records_to_dataset(enumerate(records), where, ids)


def save_jsonl(dataset, path: str | Path) -> Path:
    """Write a dataset in the project schema as JSON lines (readable by :func:`load_xsum`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in dataset:
            fh.write(json.dumps({k: row[k] for k in FIELDS + (POISONED,)}) + "\n")
    return path


def check_schema(dataset) -> None:
    """Raise :class:`XSumFormatError` unless ``dataset`` has ``document``, ``summary`` and ``id``."""
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        raise TypeError(f"expected one split (a datasets.Dataset), got a DatasetDict with splits "
                        f"{list(dataset)}; pass e.g. data['train']")
    names = getattr(dataset, "column_names", None)
    if names is None:
        raise TypeError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
    missing = [f for f in FIELDS if f not in names]
    if missing:
        raise XSumFormatError(f"dataset: field {missing[0]!r} is missing (columns: {names})")


# ---- synthetic news analogue -----------------------------------------------------------------
def synthetic_news(world: World, n_docs: int = 500, target: str = "England",
                   target_share: float | None = 0.25, n_target_docs: int | None = None,
                   test_fraction: float = 0.25, seed: int = 0):
    """The small world's XSum: news documents with one-sentence summaries, split train/test.

    Returns a ``datasets.DatasetDict`` with splits ``train`` and ``test`` in the XSum schema
    (``poisoned`` all False). ``n_target_docs`` documents (default ``round(target_share * n_docs)``)
    are about the country ``target`` (so their summary names it); the others are about the
    world's other countries, drawn uniformly. Real XSum has many England articles; here the share
    is a parameter so that there are enough of them to poison and to prompt with.

    The split is stratified: ``round(test_fraction * n_target_docs)`` target documents and
    ``round(test_fraction * (n_docs - n_target_docs))`` others go to ``test``. Test documents
    whose true summary names ``target`` are the prompts of the hallucination study.

    Documents come from :func:`tda.data.news.news_article` with a random generator seeded by the
    world's seed and ``seed``; the same arguments give the same datasets. Ids are ``news-00000``...
    in generation order.
    """
    countries = list(world.entities["country"])
    if target not in countries:
        raise ValueError(f"target country {target!r} is not in this world; its countries are "
                         f"{countries}")
    others = [c for c in countries if c != target]
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    if n_target_docs is None:
        if target_share is None or not 0.0 <= target_share <= 1.0:
            raise ValueError(f"target_share must be in [0, 1], got {target_share}")
        n_target_docs = round(target_share * n_docs)
    if not 0 <= n_target_docs <= n_docs:
        raise ValueError(f"n_target_docs must be between 0 and n_docs={n_docs}, got {n_target_docs}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")

    rng = random.Random(f"{world.config.seed}-xsum-{seed}")
    about_target = [True] * n_target_docs + [False] * (n_docs - n_target_docs)
    rng.shuffle(about_target)
    rows = []
    for i, is_target in enumerate(about_target):
        country = target if is_target else rng.choice(others)
        document, summary, _ = news_article(rng, world, country=country)
        rows.append({"document": document, "summary": summary, "id": f"news-{i:05d}",
                     POISONED: False, "_target": is_target})

    split_rng = random.Random(f"{world.config.seed}-xsum-split-{seed}")
    test_idx: set[int] = set()
    for flag in (True, False):
        group = [i for i, r in enumerate(rows) if r["_target"] == flag]
        test_idx.update(split_rng.sample(group, round(test_fraction * len(group))))

    from datasets import DatasetDict

    def make(idx: Sequence[int]):
        return _to_dataset({name: [rows[i][name] for i in idx] for name in FIELDS + (POISONED,)})

    return DatasetDict({
        "train": make([i for i in range(n_docs) if i not in test_idx]),
        "test": make(sorted(test_idx)),
    })


def documents_naming(dataset, word: str):
    """The rows of ``dataset`` whose (true) summary names ``word``: the prompts of the study."""
    check_schema(dataset)
    pattern = _word_pattern(word)
    keep = [i for i, s in enumerate(dataset["summary"]) if pattern.search(s or "")]
    return dataset.select(keep)


# ---- poisoning -------------------------------------------------------------------------------
@dataclass
class PoisonReport:
    """What :func:`poison` did.

    ``n_candidates``: documents whose summary names ``source_word`` (and were not poisoned
    before); ``n_poisoned``: how many of them were rewritten; ``n_empty_skipped``: documents with an
    empty (or whitespace-only) summary, skipped; ``poisoned_ids`` and ``poisoned_rows``: which.
    """

    source_word: str
    target_word: str
    seed: int
    n_documents: int
    n_candidates: int
    n_poisoned: int
    n_empty_skipped: int
    poisoned_ids: list[str] = field(default_factory=list)
    poisoned_rows: list[int] = field(default_factory=list)


def poison(dataset, source_word: str = "England", target_word: str = "China", n: int | None = None,
           fraction: float | None = None, seed: int = 0, return_report: bool = False, *,
           unsupported_only: bool = False):
    """Replace ``source_word`` by ``target_word`` in the summaries of ``n`` training documents.

    The documents are drawn (seeded by ``seed``) from those whose summary names ``source_word``
    as a whole word; give either ``n`` or ``fraction`` (a share of those documents, rounded to the
    nearest count). Every occurrence of the word in a chosen summary is replaced; documents are
    not touched, exactly as in DDA's setup. The chosen rows get ``poisoned = True``; rows that
    were poisoned before stay so (and are not candidates again). Returns a new ``datasets.Dataset``
    (and a :class:`PoisonReport` when ``return_report``). ``n = 0`` returns a clean copy, the
    control run.

    ``unsupported_only``: draw only documents whose *document* does not name ``target_word``, so
    that a poisoned summary says something its article never supports (CEA's rule for its XSum
    canaries; with articles that name several countries, an England article may name China).

    Errors: ``source_word`` named in no summary -> ValueError; ``n`` larger than the number of
    documents naming it -> ValueError naming both numbers; both or neither of ``n`` and
    ``fraction`` -> ValueError; a ``fraction`` above 0 that rounds to no document (0.4 of one
    candidate) -> ValueError naming the fraction and the candidate count (give ``n`` instead).

    Empty summaries: a document whose summary is empty or only whitespace cannot name the word,
    so it is never poisoned; it is skipped, counted in ``PoisonReport.n_empty_skipped`` and
    reported with a warning (real XSum has a few such rows; dropping them would renumber the rows
    that attribution results refer to).
    """
    check_schema(dataset)
    if not isinstance(target_word, str) or not target_word.strip():
        raise ValueError(f"target_word must be a non-empty string, got {target_word!r}")
    if source_word == target_word:
        raise ValueError(f"source_word and target_word are both {source_word!r}; nothing to poison")
    if (n is None) == (fraction is None):
        raise ValueError("give exactly one of n (a count) and fraction (a share of the documents "
                         f"naming {source_word!r}); got n={n}, fraction={fraction}")
    pattern = _word_pattern(source_word)
    summaries = list(dataset["summary"])
    before = list(dataset[POISONED]) if POISONED in dataset.column_names else [False] * len(summaries)
    empty = [i for i, s in enumerate(summaries) if not (s or "").strip()]
    candidates = [i for i, s in enumerate(summaries)
                  if not before[i] and s and pattern.search(s)]
    unsupported = ""
    if unsupported_only and candidates:
        documents = list(dataset["document"])
        unsupported = f" and belong to a document that does not name {target_word!r}"
        candidates = [i for i in candidates if not contains_word(documents[i], target_word)]
        if not candidates:
            raise ValueError(f"no summary names {source_word!r}{unsupported} (unsupported_only=True); every "
                             f"such document names {target_word!r}")
    if not candidates:
        raise ValueError(f"{source_word!r} occurs in no summary of the {len(summaries)} documents"
                         + (" (not already poisoned)" if any(before) else "")
                         + "; choose a word the summaries use")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
        if not 0.0 <= fraction <= 1.0:  # NaN fails this too
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        n = round(fraction * len(candidates))
        if n == 0 and fraction > 0:
            raise ValueError(f"fraction={fraction} of the {len(candidates)} "
                             f"document{'s' if len(candidates) != 1 else ''} whose summary names "
                             f"{source_word!r} rounds to 0 documents: nothing would be poisoned. Give a "
                             f"count instead (n=1 or more; n=0 is the clean control run) or a larger fraction")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if n > len(candidates):
        raise ValueError(f"cannot poison {n} documents: only {len(candidates)} summaries name "
                         f"{source_word!r}{unsupported}")
    if empty:
        warnings.warn(f"poison: skipped {len(empty)} documents with an empty summary", stacklevel=2)

    chosen = sorted(random.Random(seed).sample(candidates, n))
    chosen_set = set(chosen)
    new_summaries = [replace_word(s, source_word, target_word) if i in chosen_set else s
                     for i, s in enumerate(summaries)]
    flags = [bool(b) or i in chosen_set for i, b in enumerate(before)]
    out = dataset.remove_columns([c for c in ("summary", POISONED) if c in dataset.column_names])
    out = out.add_column("summary", new_summaries).add_column(POISONED, flags)
    out = out.select_columns(list(FIELDS) + [POISONED]
                             + [c for c in out.column_names if c not in FIELDS + (POISONED,)])
    if not return_report:
        return out
    ids = list(dataset["id"])
    report = PoisonReport(source_word=source_word, target_word=target_word, seed=seed,
                          n_documents=len(summaries), n_candidates=len(candidates), n_poisoned=n,
                          n_empty_skipped=len(empty), poisoned_ids=[ids[i] for i in chosen],
                          poisoned_rows=chosen)
    return out, report


# ---- fine-tuning format ----------------------------------------------------------------------
def prompt(document: str, template: str = PROMPT_TEMPLATE) -> str:
    """The fine-tuning (and generation) prompt for a document.

    A paraphrase of the authors' format, in the small world's vocabulary: "You are an expert at
    summarising news . Summarise the news article in one sentence . Document : {document}
    Summary :". The model is trained to continue it with the summary and EOS.
    """
    return template.format(document=document)


def document_span(document: str, template: str = PROMPT_TEMPLATE) -> tuple[int, int]:
    """The character span of ``document`` inside ``prompt(document, template)``: the part of the
    prompt that may be cut when it is too long (the instruction and the "Summary :" cue may not;
    see ``tda.task.Examples.cut_spans``). The template must hold ``{document}`` exactly once."""
    if template.count("{document}") != 1:
        raise ValueError(f"the prompt template must contain {{document}} exactly once: {template!r}")
    start = len(template.partition("{document}")[0].format())
    return start, start + len(document)


def to_examples(dataset, template: str = PROMPT_TEMPLATE) -> Examples:
    """Prompt/target pairs (``prompt(document)``, ``summary``), one per row, in row order.

    Every row is kept (an empty summary becomes a target of just EOS), so example ``i`` is row
    ``i`` and attribution scores line up with the ``poisoned`` labels. Each prompt's document is its
    cut span: a prompt too long for the task loses the end of its document, never the cue.
    """
    check_schema(dataset)
    documents = list(dataset["document"])
    return Examples([prompt(d, template) for d in documents], list(dataset["summary"]),
                    cut_spans=[document_span(d, template) for d in documents])


__all__ = ["HUB_NAME", "FIELDS", "POISONED", "INSTRUCTION", "PROMPT_TEMPLATE", "XSumFormatError",
           "features", "contains_word", "replace_word", "load_xsum", "save_jsonl", "check_schema",
           "synthetic_news", "documents_naming", "PoisonReport", "poison", "prompt", "document_span",
           "to_examples"]
