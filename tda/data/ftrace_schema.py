"""The FTRACE schema: field names, masks and answers, facts and proponents, typed datasets.

Every FTRACE builder and loader (``tda.data.ftrace``, ``tda.data.trex``, ``tda.data.synth``)
returns ``FtraceData`` — a ``queries`` and an ``abstracts`` ``datasets.Dataset`` with the field
names of the real ``ekinakyurek/ftrace`` data — so that every method and metric runs unchanged on
the real data and on the small world's analogues.

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
"""

from __future__ import annotations

import re
import uuid as uuid_lib
from collections import Counter, defaultdict
from statistics import mean, median
from typing import Any, Iterable, NamedTuple

from .world import MASK, RELATIONS

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
# the namespace of the synthetic builders' query uuids (uuid5 of the fact)
UUID_NAMESPACE = uuid_lib.UUID("5f0b7f56-8f3e-4c57-9a53-3c1b6f7c2a10")


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


def column_kind(kind: type | tuple[type, ...], values: list) -> type:
    """The one type a column of a field that admits several is stored as (str if any value is)."""
    if not isinstance(kind, tuple):
        return kind
    return str if str in kind and any(isinstance(v, str) for v in values) else kind[0]


def typed_dataset(columns: dict[str, list], schema: dict[str, type | tuple[type, ...]]):
    """A Dataset with explicit types for the schema's fields (so empty lists stay typed)."""
    import pyarrow as pa
    from datasets import Dataset, Features, List, Value

    feats = {}
    for name, values in columns.items():
        if name in schema:
            feats[name] = Value("string") if column_kind(schema[name], values) is str else Value("int64")
        elif name == "proponents":
            feats[name] = List(Value("int64"))
        elif name == "known":
            feats[name] = Value("bool")
        else:
            feats[name] = Features.from_arrow_schema(pa.table({name: values}).schema)[name]
    return Dataset.from_dict(columns, features=Features(feats))


def finish_data(query_cols: dict[str, list], abstract_cols: dict[str, list]) -> FtraceData:
    abstracts = typed_dataset(abstract_cols, ABSTRACT_FIELDS)
    query_cols = {k: v for k, v in query_cols.items() if k not in DERIVED_FIELDS}
    query_cols["proponents"] = proponents_of(query_cols, abstract_cols)
    return FtraceData(typed_dataset(query_cols, QUERY_FIELDS), abstracts)


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


# ---------------------------------------------------------------------------------------------
# summary for the "Building FTRACE" notebook
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


__all__ = ["ANSWER_SEP", "QUERY_FIELDS", "ABSTRACT_FIELDS", "INT64_MAX", "DERIVED_FIELDS", "SENTINEL_RE", "MASK_RE",
           "UUID_NAMESPACE", "FtraceData", "fact_key", "parse_facts", "query_key", "answers", "answer_text",
           "filled_text", "proponents_of", "column_kind", "typed_dataset", "finish_data", "check_relations",
           "summarize"]
