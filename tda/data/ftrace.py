"""FTRACE datasets: the real loader, the TREx analogue, the SYNTH generator, candidate sets, slices.

Every builder here returns ``FtraceData`` — a ``queries`` and an ``abstracts``
``datasets.Dataset`` with the field names of the real ``ekinakyurek/ftrace`` data — so that
every method and metric runs unchanged on the real data and on the small world's analogues.

Schema (real fields, then what this module adds):

- queries: ``inputs_pretokenized``, ``targets_pretokenized``, ``uuid``, ``obj_uri``, ``sub_uri``,
  ``predicate_id``, ``obj_surface``, ``sub_surface``; plus ``proponents`` (list of *row indices*
  into the ``abstracts`` dataset returned alongside, derived from ``facts``). The synthetic builders
  add ``known`` (the base model read the fact in pre-training) and SYNTH adds ``masked_type``.
- abstracts: ``inputs_pretokenized``, ``targets_pretokenized``, ``page_uri``, ``masked_uri``,
  ``masked_type``, ``example_uris``, ``facts`` (``"P,obj,subj;P,obj,subj"``), ``id`` (int or
  string: the hub card lists a string, its example shows an int; in our builders an int equal to the
  row index; nothing here uses it, so it need not be unique).

Mask conventions. The real data is T5 span corruption: the input holds ``<extra_id_0>`` and the
target reads ``"<extra_id_0> Frankfurt"``. The small world writes ``[MASK]`` in the input and the
bare answer as the target (so that ``to_examples`` gives exactly the world's ``cloze_text``
format, ``"<masked sentence> answer : <entity>"``, which the base models saw in pre-training).
An input with two masks (a SYNTH training pair) lists its answers in mask order joined by
``ANSWER_SEP`` (``" , "``). ``answers`` and ``filled_text`` read both conventions.

Design choices:

- TREx analogue: queries are the object-masked cloze of relation template 0 (the LAMA-like query
  template) written with the entities' labels; abstracts are the sentences of the world's pages
  (``tda.data.pages``: aliases, pronoun subjects, 1-3 facts per sentence, appositives,
  co-mentions, popularity), every world fact (known or not) stated at least once, each entity
  mention masked in turn. Template 0 never appears among the abstracts, so BM25 cannot win by
  matching the query's own wording (DESIGN.md's trap). The abstracts are also the fine-tuning
  set. Entity labels serve as URIs (no name contains ``,`` or ``;``), so ``facts`` reads like
  ``World``'s ``Fact.key``.
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
- Candidate sets (the re-ranking evaluation): all proponents + BM25 top-k + up to m same-answer
  examples + r random examples, deduplicated and returned in a seeded random order so that no
  method can profit from where the proponents sit. BM25 fills *each* mask with its own answer (the
  original code filled only ``<extra_id_0>``); an abstract has "the same answer" when any of its
  answers equals the query's (case-insensitive).
- "Correct" (query slices) = every answer token is the argmax under teacher forcing (EOS not
  required). For the answer tokens this is the same as greedy decoding reproducing the answer:
  if each teacher-forced argmax equals the gold token, greedy decoding feeds back exactly the gold
  prefix, and conversely.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import uuid as uuid_lib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from ..locations import hub_name
from ..methods.bm25_index import BM25Index
from ..progress import progress
from .files import check_distinct, first_missing, first_unstorable, folder_files, jsonl_lines, parquet_table
from .pages import ABSTRACT_TEMPLATES, PageStyle, write_pages
from .world import ANSWER_MARK, MASK, RELATION_BY_ID, RELATIONS, Fact, World, roman

HUB_NAME = "ekinakyurek/ftrace"
ANSWER_SEP = " , "  # joins the answers of a multi-mask example, in mask order

# Field name -> Python type (or the types it may have), in the real data's order.
QUERY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "inputs_pretokenized": str, "targets_pretokenized": str, "uuid": str, "obj_uri": str,
    "sub_uri": str, "predicate_id": str, "obj_surface": str, "sub_surface": str,
}
ABSTRACT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "inputs_pretokenized": str, "targets_pretokenized": str, "page_uri": str, "masked_uri": str,
    "masked_type": str, "example_uris": str, "facts": str, "id": (int, str),
}
INT64_MAX = 2**63 - 1
DERIVED_FIELDS = ("proponents",)  # recomputed by every loader and builder, never trusted from a file

SENTINEL_RE = re.compile(r"<extra_id_\d+>")
MASK_RE = re.compile(re.escape(MASK) + r"|<extra_id_\d+>")
SYNTH_FORMS = ("entity-{n}", "{n}-entity", "entity-{r}", "{r}-entity")  # the paper's 4 ways
_UUID_NS = uuid_lib.UUID("5f0b7f56-8f3e-4c57-9a53-3c1b6f7c2a10")


class FtraceFormatError(ValueError):
    """A malformed FTRACE file or record; the message names the file, the record and the field."""


class FtraceData(NamedTuple):
    """The two halves of an FTRACE dataset: queries and the attribution set (abstracts)."""

    queries: Any  # datasets.Dataset
    abstracts: Any  # datasets.Dataset


# ---------------------------------------------------------------------------------------------
# facts, masks and answers
# ---------------------------------------------------------------------------------------------
def fact_key(predicate: str, obj: str, subj: str) -> str:
    """FTRACE's encoding of one fact: ``"predicate,object,subject"``."""
    return f"{predicate},{obj},{subj}"


def parse_facts(facts: str) -> list[tuple[str, str, str]]:
    """Parse an abstract's ``facts`` string into ``(predicate, object, subject)`` triples.

    ``""`` is no facts. Anything else must be ``;``-joined items of exactly three non-empty
    ``,``-separated parts; otherwise ``ValueError`` says which item is wrong.
    """
    if not isinstance(facts, str):
        raise ValueError(f"facts must be a string, got {type(facts).__name__}")
    if not facts.strip():
        return []
    out = []
    for item in facts.split(";"):
        parts = [p.strip() for p in item.split(",")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"malformed fact {item!r} in {facts!r}: expected 'predicate,object,subject' "
                             "items joined by ';'")
        out.append((parts[0], parts[1], parts[2]))
    return out


def query_key(query: dict) -> str:
    """The fact a query asks about, in ``facts`` encoding."""
    return fact_key(query["predicate_id"], query["obj_uri"], query["sub_uri"])


def answers(inputs: str, targets: str) -> list[str]:
    """The answers of an example, one per mask in ``inputs``, in order.

    Reads T5 targets (``"<extra_id_0> a <extra_id_1> b"``) and this project's targets (the bare
    answer; answers joined by ``ANSWER_SEP`` when the input holds several masks).
    """
    if SENTINEL_RE.search(targets):
        parts = [p.strip() for p in SENTINEL_RE.split(targets)[1:]]
        while parts and not parts[-1]:
            parts.pop()  # T5 targets may close with a final sentinel
        return parts
    n_masks = len(MASK_RE.findall(inputs))
    if n_masks > 1:
        parts = [p.strip() for p in targets.split(ANSWER_SEP)]
        if len(parts) != n_masks:
            raise ValueError(f"{n_masks} masks but {len(parts)} answers (joined by {ANSWER_SEP!r}) in "
                             f"{inputs!r} -> {targets!r}")
        return parts
    return [targets.strip()]


def answer_text(inputs: str, targets: str) -> str:
    """The answer(s) as one plain string: T5 sentinels removed, several answers joined by ``ANSWER_SEP``."""
    return ANSWER_SEP.join(answers(inputs, targets))


def filled_text(inputs: str, targets: str) -> str:
    """The input with each mask replaced by its gold answer (what BM25 indexes, as in the paper)."""
    parts = iter(answers(inputs, targets))
    return MASK_RE.sub(lambda m: next(parts, m.group(0)), inputs)


# ---------------------------------------------------------------------------------------------
# datasets and proponents
# ---------------------------------------------------------------------------------------------
def proponents_of(queries, abstracts) -> list[list[int]]:
    """For each query, the abstract row indices whose ``facts`` contain the query's fact (ascending)."""
    index: dict[str, list[int]] = defaultdict(list)
    for row, facts in enumerate(abstracts["facts"]):
        for key in dict.fromkeys(fact_key(*f) for f in parse_facts(facts)):
            index[key].append(row)
    return [list(index.get(fact_key(p.strip(), o.strip(), s.strip()), ()))
            for p, o, s in zip(queries["predicate_id"], queries["obj_uri"], queries["sub_uri"])]


def _kind_of(kind: type | tuple[type, ...], values: list) -> type:
    """The one type a column of a field that admits several is stored as (str if any value is)."""
    if not isinstance(kind, tuple):
        return kind
    return str if str in kind and any(isinstance(v, str) for v in values) else kind[0]


def _dataset(columns: dict[str, list], schema: dict[str, type | tuple[type, ...]]):
    """A Dataset with explicit types for the schema's fields (so empty lists stay typed)."""
    import pyarrow as pa
    from datasets import Dataset, Features, List, Value

    feats = {}
    for name, values in columns.items():
        if name in schema:
            feats[name] = Value("string") if _kind_of(schema[name], values) is str else Value("int64")
        elif name == "proponents":
            feats[name] = List(Value("int64"))
        elif name == "known":
            feats[name] = Value("bool")
        else:
            feats[name] = Features.from_arrow_schema(pa.table({name: values}).schema)[name]
    return Dataset.from_dict(columns, features=Features(feats))


def _finish(query_cols: dict[str, list], abstract_cols: dict[str, list]) -> FtraceData:
    abstracts = _dataset(abstract_cols, ABSTRACT_FIELDS)
    query_cols = {k: v for k, v in query_cols.items() if k not in DERIVED_FIELDS}
    query_cols["proponents"] = proponents_of(query_cols, abstract_cols)
    return FtraceData(_dataset(query_cols, QUERY_FIELDS), abstracts)


# ---------------------------------------------------------------------------------------------
# 1. the real data (hub or local files)
# ---------------------------------------------------------------------------------------------
class _Origin:
    """Where each row came from, for error messages (file, record number, JSONL line)."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, int, list[int] | None]] = []  # (file, first global row, lines)

    def add(self, name: str, start: int, lines: list[int] | None = None) -> None:
        self.parts.append((name, start, lines))

    def where(self, row: int) -> str:
        for name, start, lines in reversed(self.parts):
            if row >= start:
                local = row - start
                line = f" (line {lines[local]})" if lines is not None else ""
                return f"{name}: record {local}{line}"
        return f"record {row}"


def _files(spec, what: str) -> list[Path]:
    """The files of a part: a path, a list of shards, or a folder of shards (all of one format)."""
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    paths: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            found = folder_files(p, FtraceFormatError, what)
            if not found:
                raise FileNotFoundError(f"no .parquet or .jsonl files for the {what} in {p}")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"{what} file {p} does not exist")
    if not paths:
        raise FileNotFoundError(f"no {what} files given")
    check_distinct(paths, FtraceFormatError, what)
    return paths


def _read_jsonl(path: Path, fields: dict[str, type]) -> tuple[list[dict], list[int]]:
    records, lines = [], []
    for row, lineno, rec in jsonl_lines(path, FtraceFormatError):
        where = f"{path}: record {row} (line {lineno})"
        if not isinstance(rec, dict):
            raise FtraceFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        missing = first_missing(fields, rec)
        if missing:
            raise FtraceFormatError(f"{where}: missing field {missing!r}")
        records.append(rec)
        lines.append(lineno)
    return records, lines


def _read_files(paths: list[Path], fields: dict[str, type]) -> tuple[dict[str, list], _Origin]:
    """Columns of all files, concatenated in order; extra columns of the first file pass through."""
    columns: dict[str, list] | None = None
    origin, n = _Origin(), 0
    for path in paths:
        if path.suffix == ".parquet":
            table = parquet_table(path, FtraceFormatError)
            missing = first_missing(fields, table.column_names)
            if missing:
                raise FtraceFormatError(f"{path}: record 0: missing field {missing!r} "
                                        f"(columns: {table.column_names})")
            data, lines = table.to_pydict(), None
        elif path.suffix in (".jsonl", ".json"):
            records, lines = _read_jsonl(path, fields)
            keys = list(records[0]) if records else list(fields)
            data = {k: [r.get(k) for r in records] for k in keys}
        else:
            raise FtraceFormatError(f"{path}: unknown file type {path.suffix!r} (use .parquet or .jsonl)")
        rows = len(next(iter(data.values()))) if data else 0
        if rows == 0:
            raise FtraceFormatError(f"{path}: no records (the file is empty); remove it or give a file "
                                    "with records")
        if columns is None:
            columns = {k: [] for k in list(fields) + [k for k in data if k not in fields]}
        for k in columns:
            columns[k].extend(data.get(k, [None] * rows))
        origin.add(str(path), n, lines)
        n += rows
    assert columns is not None
    return columns, origin


def _type_of(value: Any) -> type | None:
    """``str`` or ``int`` for a value of that kind (bools are not ints here), else None."""
    if isinstance(value, str):
        return str
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int
    return None


def _validate(columns: dict[str, list], fields: dict[str, type | tuple[type, ...]], origin: _Origin) -> None:
    for name, kind in fields.items():
        kinds = kind if isinstance(kind, tuple) else (kind,)
        first: tuple[int, type] | None = None  # a field of several types holds one of them throughout
        for row, value in enumerate(columns[name]):
            if value is None:
                raise FtraceFormatError(f"{origin.where(row)}: field {name!r} is missing (null)")
            got = _type_of(value)
            if got not in kinds:
                raise FtraceFormatError(f"{origin.where(row)}: field {name!r} should be "
                                        f"{' or '.join(k.__name__ for k in kinds)}, "
                                        f"got {type(value).__name__} {value!r:.60}")
            if got is int and not -INT64_MAX - 1 <= value <= INT64_MAX:
                raise FtraceFormatError(f"{origin.where(row)}: field {name!r}: {value} does not fit in "
                                        "64 bits")
            if first is None:
                first = (row, got)
            elif got is not first[1]:
                raise FtraceFormatError(f"{origin.where(row)}: field {name!r} is {got.__name__} {value!r:.60}, "
                                        f"but {first[1].__name__} in {origin.where(first[0])}; use one type "
                                        "for the whole field")
    if "facts" in fields:
        for row, facts in enumerate(columns["facts"]):
            try:
                parse_facts(facts)
            except ValueError as err:
                raise FtraceFormatError(f"{origin.where(row)}: field 'facts': {err}") from None
    if "id" in fields and columns["id"] and not isinstance(columns["id"][0], str):
        columns["id"] = [int(v) for v in columns["id"]]


def _load_part(spec, fields: dict[str, type | tuple[type, ...]], what: str) -> tuple[dict[str, list], _Origin]:
    columns, origin = _read_files(_files(spec, what), fields)
    for name in DERIVED_FIELDS:
        columns.pop(name, None)
    _validate(columns, fields, origin)
    return columns, origin


def _locate_unstorable(columns: dict[str, list], fields: dict, origin: _Origin) -> None:
    """Raise FtraceFormatError at the first value Arrow cannot store (the error path of a load)."""
    import pyarrow as pa

    for name, values in columns.items():
        kind = None
        if name in fields:
            kind = pa.string() if _kind_of(fields[name], values) is str else pa.int64()
        found = first_unstorable(values, kind)
        if found is not None:
            row, reason = found
            raise FtraceFormatError(f"{origin.where(row)}: field {name!r} {reason}")


def _finish_checked(parts: dict[str, tuple[dict[str, list], _Origin]]) -> FtraceData:
    """``_finish``, with a value that cannot be stored reported at its file, record and field."""
    try:
        return _finish(parts["queries"][0], parts["abstracts"][0])
    except Exception as err:
        for (columns, origin), fields in ((parts["abstracts"], ABSTRACT_FIELDS), (parts["queries"], QUERY_FIELDS)):
            try:
                _locate_unstorable(columns, fields, origin)
            except FtraceFormatError as located:
                raise located from err
        raise


def load_ftrace(source: str | Path | None = HUB_NAME, *, abstracts=None, queries=None,
                split: str = "train", cache_dir: str | None = None) -> FtraceData:
    """Read FTRACE-TREx (or anything in its format) into the project schema.

    Sources, in order of precedence:

    - ``abstracts=`` and ``queries=``: local ``.parquet`` or ``.jsonl`` files (a path, a list of
      shards, or a folder of them) with the real fields;
    - ``source`` a local folder: ``queries.*``/``abstracts.*`` files or ``queries/``/``abstracts/``
      subfolders (the Hugging Face repository's layout);
    - ``source`` a hub name (default ``"ekinakyurek/ftrace"``): configs ``queries`` and
      ``abstracts`` of ``split``, via ``datasets.load_dataset`` (needs a network).

    Every record is checked: a missing field, a null, a wrong type, a malformed ``facts`` string or
    a value that cannot be stored raises ``FtraceFormatError`` naming the file, the record number
    and the field. ``id`` may be an int or a string (one type throughout); ids are not required to
    be unique (nothing here uses them). ``proponents`` (row indices into the returned abstracts, in
    file order) is derived from ``facts`` and never read from the file; other extra columns pass
    through.

    Files are never read twice: a folder holding a part in more than one format (``queries.jsonl``
    beside ``queries.parquet``, ``queries/`` beside ``queries.jsonl``, or shards of two formats), a
    file listed twice, or one file listed in two formats raises ``FtraceFormatError`` naming the
    files (keep one). An empty file raises it too.
    """
    if (abstracts is None) != (queries is None):
        raise ValueError("give both abstracts= and queries= (local files), or neither")
    if abstracts is None:
        folder = Path(source) if source is not None else None
        if folder is not None and folder.is_dir():
            def part(name: str):
                found = folder_files(folder, FtraceFormatError, name, f"{name}.*")
                if (folder / name).is_dir():
                    if found:
                        raise FtraceFormatError(f"{folder} holds both {folder / name}/ and "
                                                f"{', '.join(p.name for p in found)}: the {name} twice? "
                                                "keep one of them")
                    return folder / name
                if not found:
                    raise FileNotFoundError(f"{folder} holds neither {name}/ nor {name}.parquet/.jsonl")
                return found
            abstracts, queries = part("abstracts"), part("queries")
        elif source is None:
            raise ValueError("no source: give a hub name, a local folder, or abstracts= and queries=")
        else:  # a hub name, or a missing local path refused at once (tda.locations' rules)
            return _load_hub(hub_name(source, "FTRACE folder"), split, cache_dir)
    parts = {"abstracts": _load_part(abstracts, ABSTRACT_FIELDS, "abstracts"),
             "queries": _load_part(queries, QUERY_FIELDS, "queries")}
    return _finish_checked(parts)


def _load_hub(name: str, split: str, cache_dir: str | None) -> FtraceData:
    """The hub path of ``load_ftrace`` (not exercised offline)."""
    from datasets import load_dataset

    parts = {}
    for config, fields in (("abstracts", ABSTRACT_FIELDS), ("queries", QUERY_FIELDS)):
        ds = load_dataset(name, config, split=split, cache_dir=cache_dir)
        label = f"{name}[{config}/{split}]"
        missing = [k for k in fields if k not in ds.column_names]
        if missing:
            raise FtraceFormatError(f"{label}: record 0: missing field {missing[0]!r}")
        columns = ds.to_dict()
        for d in DERIVED_FIELDS:
            columns.pop(d, None)
        origin = _Origin()
        origin.add(label, 0)
        _validate(columns, fields, origin)
        parts[config] = (columns, origin)
    return _finish_checked(parts)


def save_ftrace(data: FtraceData, folder: str | Path, fmt: str = "parquet") -> tuple[Path, Path]:
    """Write ``queries.<fmt>`` and ``abstracts.<fmt>`` (parquet or jsonl) in the real format.

    ``proponents`` is left out (it is derived on load); other columns are written as they are.
    Returns the two paths; ``load_ftrace`` reads the folder back.
    """
    if fmt not in ("parquet", "jsonl"):
        raise ValueError(f"fmt must be 'parquet' or 'jsonl', got {fmt!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, ds in (("queries", data.queries), ("abstracts", data.abstracts)):
        ds = ds.remove_columns([c for c in DERIVED_FIELDS if c in ds.column_names])
        path = folder / f"{name}.{fmt}"
        if fmt == "parquet":
            ds.to_parquet(str(path))
        else:
            with open(path, "w", encoding="utf-8") as f:
                for row in ds:
                    f.write(json.dumps(row) + "\n")
        out.append(path)
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------
# 2. FTRACE-TREx analogue from the small world
# ---------------------------------------------------------------------------------------------
def check_relations(relations: Iterable[str] | None, known: Iterable[str] | None = None) -> list[str]:
    """Relation ids, checked against ``known`` (default: the world's relations); None means all."""
    known = list(known) if known is not None else [r.id for r in RELATIONS]
    if relations is None:
        return known
    if isinstance(relations, str):
        relations = [relations]
    relations = list(dict.fromkeys(relations))
    unknown = [r for r in relations if r not in known]
    if unknown:
        raise ValueError(f"unknown relation ids {unknown}; known: {', '.join(known)}")
    if not relations:
        raise ValueError("relations is empty")
    return relations


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
                     ("uuid", str(uuid_lib.uuid5(_UUID_NS, f"trex:{fact.key}"))),
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
    return _finish(q, a)


# ---------------------------------------------------------------------------------------------
# 3. FTRACE-SYNTH
# ---------------------------------------------------------------------------------------------
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
                         ("uuid", str(uuid_lib.uuid5(_UUID_NS, f"synth:{seed}:{u.guid}:{m}"))),
                         ("obj_uri", u.fact.object), ("sub_uri", u.fact.subject),
                         ("predicate_id", u.fact.relation), ("obj_surface", o_surf), ("sub_surface", s_surf),
                         ("masked_type", m), ("known", False)):
                q[k].append(v)
    return _finish(q, a)


# ---------------------------------------------------------------------------------------------
# 4. candidate sets for re-ranking
# ---------------------------------------------------------------------------------------------
@dataclass
class Candidates:
    """Per-query candidate sets (abstract row indices) for the re-ranking evaluation.

    ``query_rows[j]`` is the query row whose candidates are ``indices[j]``; queries without any
    proponent are left out only with ``on_missing="skip"`` and counted in ``skipped``.
    """

    query_rows: list[int]
    indices: list[list[int]]
    skipped: int = 0
    skipped_rows: list[int] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.query_rows)

    def labels(self, queries) -> list[list[bool]]:
        """For each kept query, whether each candidate is one of its proponents."""
        props = list(queries["proponents"])
        out = []
        for row, cands in zip(self.query_rows, self.indices):
            p = set(props[row])
            out.append([c in p for c in cands])
        return out

    def sizes(self) -> list[int]:
        return [len(c) for c in self.indices]


def check_candidates(candidates: Candidates, queries) -> None:
    """Raise ``ValueError`` if a candidate set lacks a proponent of its query, has none, or repeats one."""
    props = list(queries["proponents"])
    for row, cands in zip(candidates.query_rows, candidates.indices):
        p = set(props[row])
        if not p:
            raise ValueError(f"query row {row} has no proponent: its MRR would be 0 by construction")
        lost = p - set(cands)
        if lost:
            raise ValueError(f"the candidate set of query row {row} lost {len(lost)} of its {len(p)} "
                             f"proponents (e.g. abstract row {min(lost)})")
        if len(set(cands)) != len(cands):
            raise ValueError(f"the candidate set of query row {row} has duplicates")


def bm25_tokens(inputs: str, targets: str) -> list[str]:
    """BM25's view of an example: the mask filled by the gold answer, split on whitespace."""
    return filled_text(inputs, targets).split()


def candidate_sets(queries, abstracts, k: int = 100, m: int = 100, r: int = 100, seed: int = 0,
                   on_missing: str = "error") -> Candidates:
    """Candidate sets as in the paper's re-ranking evaluation.

    Each set is the union of: all proponents; the BM25 top-``k`` over the whole attribution set
    (``rank_bm25.BM25Plus`` defaults, whitespace tokens, query and abstracts with the mask filled by
    the gold answer; scored by the sparse ``BM25Index``, whose scores are rank_bm25's bit for bit,
    taken in ``np.argsort(-scores, kind="stable")`` order: ties by ascending abstract row); up to
    ``m`` abstracts (seeded sample) with the query's answer among their answers (lower-cased);
    ``r`` random abstracts — deduplicated, in a seeded random order.

    A query with no proponent raises ``ValueError`` (``on_missing="error"``, the default) or is
    dropped and counted in ``Candidates.skipped`` (``on_missing="skip"``). A proponent index outside
    the abstracts always raises.
    """
    if on_missing not in ("error", "skip"):
        raise ValueError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    for name, v in (("k", k), ("m", m), ("r", r)):
        if int(v) != v or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v}")
    n_abs = len(abstracts)
    props = [list(p) for p in queries["proponents"]]
    uuids = list(queries["uuid"])
    for row, p in enumerate(props):
        bad = [i for i in p if not 0 <= i < n_abs]
        if bad:
            raise ValueError(f"query row {row} ({uuids[row]}) names abstract row {bad[0]}, but there are "
                             f"{n_abs} abstracts: queries and abstracts do not belong together")
    missing = [row for row, p in enumerate(props) if not p]
    if missing and on_missing == "error":
        raise ValueError(f"{len(missing)} of {len(props)} queries have no proponent (first: row {missing[0]}, "
                         f"uuid {uuids[missing[0]]}); their MRR would be 0 by construction. Pass "
                         "on_missing='skip' to drop and count them.")
    keep = [row for row, p in enumerate(props) if p]

    a_in, a_tg = list(abstracts["inputs_pretokenized"]), list(abstracts["targets_pretokenized"])
    q_in, q_tg = list(queries["inputs_pretokenized"]), list(queries["targets_pretokenized"])
    top_bm25: dict[int, list[int]] = {}
    if k > 0 and n_abs:
        index = BM25Index([bm25_tokens(i, t) for i, t in zip(a_in, a_tg)], desc="BM25 index of the abstracts")
        rows, _ = index.top_k([bm25_tokens(q_in[row], q_tg[row]) for row in keep], k, desc="BM25 top-k")
        top_bm25 = {row: top.tolist() for row, top in zip(keep, rows)}
    by_answer: dict[str, list[int]] = defaultdict(list)
    if m > 0:
        for row, (i, t) in enumerate(zip(a_in, a_tg)):
            for ans in dict.fromkeys(x.lower() for x in answers(i, t)):
                by_answer[ans].append(row)

    indices = []
    for row in progress(keep, desc="candidate sets"):
        rng = random.Random(f"{seed}:{row}:{uuids[row]}")
        cands = list(props[row])
        cands += top_bm25.get(row, [])
        if m > 0:
            same = by_answer.get(answer_text(q_in[row], q_tg[row]).lower(), [])
            cands += same if len(same) <= m else rng.sample(same, m)
        if r > 0:
            cands += rng.sample(range(n_abs), min(r, n_abs))
        cands = list(dict.fromkeys(int(c) for c in cands))
        rng.shuffle(cands)
        indices.append(cands)
    result = Candidates(query_rows=keep, indices=indices, skipped=len(missing) if on_missing == "skip" else 0,
                        skipped_rows=missing if on_missing == "skip" else [],
                        params={"k": k, "m": m, "r": r, "seed": seed})
    check_candidates(result, queries)
    return result


# ---------------------------------------------------------------------------------------------
# 5. query slices and losses;  6. datasets -> Examples
# ---------------------------------------------------------------------------------------------
def to_examples(ds, seq2seq: bool = False, mask_token: str | None = None):
    """A queries or abstracts dataset as ``tda.task.Examples``.

    Causal (default): prompt ``f"{inputs_pretokenized} answer :"`` and target the plain answer
    (T5 sentinels removed; several answers joined by ``ANSWER_SEP``) — on the small world exactly
    the ``cloze_text`` format of pre-training. ``seq2seq=True``: the raw fields (T5 format).
    ``mask_token`` replaces every mask (``[MASK]`` or ``<extra_id_N>``) in the prompt.
    """
    from ..task import Examples

    inputs, targets = list(ds["inputs_pretokenized"]), list(ds["targets_pretokenized"])
    if seq2seq:
        prompts = inputs
    else:
        prompts = [f"{i} {ANSWER_MARK}" for i in inputs]
        targets = [answer_text(i, t) for i, t in zip(inputs, targets)]
    if mask_token is not None:
        prompts = [MASK_RE.sub(mask_token, p) for p in prompts]
    return Examples(prompts, targets)


def answer_correct(model, task, examples, batch_size: int = 64, include_eos: bool = False) -> list[bool]:
    """Whether each example's target tokens are all the model's argmax under teacher forcing.

    Equivalent to greedy decoding reproducing the target (see the module docstring). EOS is not
    required unless ``include_eos``. An example with no target token counts as wrong.
    """
    import torch

    from ..task import IGNORE

    eos = task.tokenizer.eos_token_id
    out: list[bool] = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = task.encode(examples.subset(range(start, min(start + batch_size, len(examples)))))
            logits = task.logits(model, batch)
            labels = batch["labels"]
            if not getattr(task, "is_seq2seq", False):
                logits, labels = logits[:, :-1], labels[:, 1:]
            pred = logits.argmax(-1)
            mask = labels != IGNORE
            if not include_eos:
                mask &= labels != eos
            ok = ((pred == labels) | ~mask).all(1) & mask.any(1)
            out.extend(bool(x) for x in ok)
    return out


def query_losses(model, task, queries, batch_size: int = 64) -> list[float]:
    """Each query's mean target-token loss at ``model`` (``tda.task.losses``)."""
    from ..task import losses

    examples = to_examples(queries, seq2seq=getattr(task, "is_seq2seq", False))
    return [float(x) for x in losses(model, task, examples, batch_size=batch_size)]


SYNTH_URI_RE = re.compile(r"E\d+")


def acceptable_answers(queries) -> list[list[str]]:
    """Per query, the answers that count as correct: its own target first, then, for a SYNTH query
    (``masked_type`` column, ``E<n>`` URIs), the masked entity's other three writings.

    A SYNTH query is a held-out utterance: the training set holds the other three writings of
    its answer in exactly its context (same template, same writing of the other entity) and never
    the held-out one, so a model that learned the fact answers in a writing it was shown; demanding
    the held-out writing would count almost every learned SYNTH fact as not learned.
    """
    targets = [answer_text(i, t) for i, t in zip(queries["inputs_pretokenized"], queries["targets_pretokenized"])]
    if "masked_type" not in queries.column_names:
        return [[t] for t in targets]
    out = []
    for target, obj, sub, masked in zip(targets, queries["obj_uri"], queries["sub_uri"], queries["masked_type"]):
        uri = obj if masked == "object" else sub
        if not SYNTH_URI_RE.fullmatch(uri):
            out.append([target])
            continue
        n = int(uri[1:])
        out.append([target] + [w for w in (synth_surface(n, f) for f in range(len(SYNTH_FORMS))) if w != target])
    return out


def queries_correct(model, task, queries, batch_size: int = 64) -> list[bool]:
    """Whether the model answers each query with one of its ``acceptable_answers`` (teacher-forced
    argmax of every answer token, i.e. greedy decoding writes that answer)."""
    from ..task import Examples

    seq2seq = getattr(task, "is_seq2seq", False)
    examples = to_examples(queries, seq2seq=seq2seq)
    ok = answer_correct(model, task, examples, batch_size)
    if seq2seq:
        return ok
    options = acceptable_answers(queries)
    for k in range(1, max(len(o) for o in options) if options else 1):
        rows = [i for i, o in enumerate(options) if len(o) > k and not ok[i]]
        if rows:
            alt = Examples([examples.prompts[i] for i in rows], [options[i][k] for i in rows])
            for i, good in zip(rows, answer_correct(model, task, alt, batch_size)):
                ok[i] = ok[i] or good
    return ok


def synth_top_entity(model, task, queries, entities: Sequence[str] | None = None, batch_size: int = 512) -> list[bool]:
    """Whether the model ranks each SYNTH query's answer entity first among ``entities`` (default:
    every entity the queries name), by the likelihood of its best-scored writing.

    The paper's SYNTH facts are learned when the model has bound the two entities, whatever it
    writes; a tiny model often picks the right entity and then mixes its writings ("XXII -
    XXVIII"), which exact or any-writing greedy checks count as wrong. This is the closed-vocabulary
    check LAMA uses (rank the candidates, take the top one), with EOS left out of the likelihood.
    """
    import numpy as np

    from ..task import Examples, losses

    if "masked_type" not in queries.column_names:
        raise ValueError("synth_top_entity needs SYNTH queries (a 'masked_type' column and E<n> URIs)")
    answers_ = [o if m == "object" else s for o, s, m in zip(queries["obj_uri"], queries["sub_uri"], queries["masked_type"])]
    if entities is None:
        entities = sorted(set(answers_) | set(queries["obj_uri"]) | set(queries["sub_uri"]), key=lambda u: int(u[1:]))
    entities = list(entities)
    for uri in list(entities) + answers_:
        if not SYNTH_URI_RE.fullmatch(uri):
            raise ValueError(f"{uri!r} is not a SYNTH entity URI (E<number>)")
    writings = {u: [synth_surface(int(u[1:]), f) for f in range(len(SYNTH_FORMS))] for u in entities}
    attribution = task.without_eos() if hasattr(task, "without_eos") else task
    prompts = to_examples(queries).prompts
    all_p, all_t, sizes = [], [], []
    for p in prompts:
        for u in entities:
            for w in writings[u]:
                all_p.append(p)
                all_t.append(w)
    # the likelihood of a writing is its summed token log-probability: mean loss x token count
    n_tok = np.asarray([len(task.ids(t)) for t in all_t], dtype=float)
    nll = losses(model, attribution, Examples(all_p, all_t), batch_size=batch_size).numpy() * n_tok
    nll = nll.reshape(len(prompts), len(entities), len(SYNTH_FORMS)).min(2)
    best = nll.argmin(1)
    return [entities[b] == a for b, a in zip(best, answers_)]


def query_slices(queries, model_before, model_after, task, batch_size: int = 64) -> dict[str, list]:
    """The paper's query slices, one value per query row.

    "Correct" is ``queries_correct``: the query's answer, or for SYNTH any writing of its entity.
    Returns ``correct_before``, ``correct_after``, ``known`` (= correct before fine-tuning: the
    model already predicts the answer), ``learned`` (correct after and not before: the paper's
    "fine-tune-learned" slice), ``loss_before``, ``loss_after``. Note that the slice ``known`` is
    measured on the model; the TREx analogue's ``known`` *column* says whether the fact was in the
    pre-training corpus. To keep both, add these under other names (``ds.add_column``).
    """
    before = queries_correct(model_before, task, queries, batch_size)
    after = queries_correct(model_after, task, queries, batch_size)
    return {
        "correct_before": before, "correct_after": after, "known": list(before),
        "learned": [a and not b for a, b in zip(after, before)],
        "loss_before": query_losses(model_before, task, queries, batch_size),
        "loss_after": query_losses(model_after, task, queries, batch_size),
    }


def filter_queries(queries, relations: Sequence[str] | None = None, rows: Sequence[bool] | None = None):
    """Queries of some relations and/or where ``rows`` (a per-row mask, e.g. a slice) is true.

    Unknown relation ids (not among the dataset's ``predicate_id``s) raise ``ValueError``.
    ``proponents`` stay valid: they index the abstracts, which are not touched.
    """
    keep = list(range(len(queries)))
    if relations is not None:
        wanted = set(check_relations(relations, known=sorted(set(queries["predicate_id"]))))
        preds = list(queries["predicate_id"])
        keep = [i for i in keep if preds[i] in wanted]
    if rows is not None:
        rows = list(rows)
        if len(rows) != len(queries):
            raise ValueError(f"rows has {len(rows)} values for {len(queries)} queries")
        keep = [i for i in keep if rows[i]]
    return queries.select(keep)


# ---------------------------------------------------------------------------------------------
# 7. summary for the "Building FTRACE" notebook
# ---------------------------------------------------------------------------------------------
def summarize(data: FtraceData, n_examples: int = 3) -> dict:
    """Sizes, relation counts, proponents per query and a few rows of an FTRACE dataset.

    Returns a JSON-able dict: ``n_queries``, ``n_abstracts``, ``n_relations``,
    ``query_relations`` and ``abstract_relations`` (relation id -> count; an abstract counts once
    per fact it states), ``proponents_per_query`` (the full list — heavy-tailed in the real data),
    ``proponents`` (mean, median, min, max, queries without any), ``known_share`` (if the queries
    have a ``known`` column, else None), ``example_queries`` and ``example_abstracts`` (the first
    ``n_examples`` rows, proponents shortened to their count).
    """
    queries, abstracts = data
    counts = [len(p) for p in queries["proponents"]]
    abs_rel: Counter = Counter()
    for facts in abstracts["facts"]:
        abs_rel.update(f[0] for f in parse_facts(facts))
    q_rel = Counter(queries["predicate_id"])

    def rows(ds) -> list[dict]:
        out = []
        for row in ds.select(range(min(n_examples, len(ds)))):
            row = dict(row)
            if "proponents" in row:
                row["proponents"] = f"{len(row['proponents'])} rows"
            out.append(row)
        return out

    known = queries["known"] if "known" in queries.column_names else None
    return {
        "n_queries": len(queries), "n_abstracts": len(abstracts),
        "n_relations": len(set(q_rel) | set(abs_rel)),
        "query_relations": dict(sorted(q_rel.items())), "abstract_relations": dict(sorted(abs_rel.items())),
        "proponents_per_query": counts,
        "proponents": {"mean": float(mean(counts)) if counts else 0.0,
                       "median": float(median(counts)) if counts else 0.0,
                       "min": min(counts, default=0), "max": max(counts, default=0),
                       "without": sum(c == 0 for c in counts)},
        "known_share": float(mean(bool(k) for k in known)) if known is not None and len(known) else None,
        "example_queries": rows(queries), "example_abstracts": rows(abstracts),
    }


__all__ = [
    "HUB_NAME", "ANSWER_SEP", "QUERY_FIELDS", "ABSTRACT_FIELDS", "FtraceFormatError", "FtraceData",
    "fact_key", "parse_facts", "query_key", "answers", "answer_text", "filled_text", "proponents_of",
    "load_ftrace", "save_ftrace", "check_relations", "build_trex", "synth_uri", "synth_surface",
    "synth_facts", "build_synth", "Candidates", "check_candidates", "bm25_tokens", "candidate_sets",
    "to_examples", "answer_correct", "acceptable_answers", "queries_correct", "synth_top_entity", "query_losses", "query_slices",
    "filter_queries", "summarize",
]
