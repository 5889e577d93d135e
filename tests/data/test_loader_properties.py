"""Property tests of the real-data loaders: a malformed file never loads silently.

Random records of the real schemas (FTRACE queries and abstracts, XSum), as JSON lines and as
parquet, are damaged at random: fields missing, null, of a wrong type or holding a string that
cannot be stored (a lone surrogate); broken or non-object JSON lines and blank lines; duplicate ids;
empty files; malformed ``facts``. An independent oracle lists every (record, field) the damage
touches. Then each file either loads and equals its records (the oracle found nothing), or the
load raises the loader's own format error whose message names the file, a damaged record and its
field (the loaders check in their own order, so any damaged one will do).

Bounded: a fixed number of examples per case, derandomized, so the run is reproducible and takes
seconds.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tda.data import ftrace as ft
from tda.data import xsum

SETTINGS = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---- valid records of the real schemas --------------------------------------------------------------
TEXT = st.text(max_size=6)
URIS = st.sampled_from(["Q1", "Q2", "Q3", "Q4"])
PREDICATES = st.sampled_from(["P17", "P36", "P937"])
FACTS = st.lists(st.tuples(PREDICATES, URIS, URIS), max_size=2).map(
    lambda triples: ";".join(",".join(t) for t in triples))


def ftrace_record(part: str, id_kind: str):
    if part == "queries":
        return st.fixed_dictionaries({
            "inputs_pretokenized": TEXT, "targets_pretokenized": TEXT, "uuid": TEXT, "obj_uri": URIS,
            "sub_uri": URIS, "predicate_id": PREDICATES, "obj_surface": TEXT, "sub_surface": TEXT})
    ids = st.integers(0, 10**6) if id_kind == "int" else st.text(min_size=1, max_size=5)
    return st.fixed_dictionaries({
        "inputs_pretokenized": TEXT, "targets_pretokenized": TEXT, "page_uri": URIS, "masked_uri": URIS,
        "masked_type": st.sampled_from(["subject", "object"]), "example_uris": TEXT, "facts": FACTS, "id": ids})


def xsum_record():
    return st.fixed_dictionaries(
        {"document": TEXT, "summary": TEXT, "id": st.one_of(st.integers(0, 99), st.text(max_size=3))},
        optional={"poisoned": st.one_of(st.booleans(), st.none()), "extra": st.one_of(st.integers(), TEXT)})


WRONG = st.one_of(st.floats(allow_nan=True), st.booleans(), st.lists(st.integers(), max_size=2),
                  st.dictionaries(st.just("k"), st.integers(), max_size=1))


# ---- the oracle ---------------------------------------------------------------------------------------
def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ftrace_problems(records: list, fields: dict, columns: list[str] | None = None) -> set:
    """Every (record, field) damaged in a FTRACE part; (record, None) for a record that is not an
    object; (None, None) for a file without records. ``columns``: a parquet file's columns."""
    problems = set()
    if columns is not None:
        problems |= {(0, f) for f in fields if f not in columns}
    if not records:
        problems.add((None, None))
    first_id_type = None
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            problems.add((i, None))
            continue
        for name, kind in fields.items():
            kinds = kind if isinstance(kind, tuple) else (kind,)
            value = rec.get(name)
            ok = (str in kinds and isinstance(value, str)) or (int in kinds and _is_int(value))
            if not ok or (isinstance(value, str) and _has_surrogate(value)) \
                    or (_is_int(value) and not -2**63 <= value < 2**63):
                problems.add((i, name))
            elif name == "facts":
                try:
                    ft.parse_facts(value)
                except ValueError:
                    problems.add((i, name))
            if name == "id" and ok:  # one type for the whole field; the first well-typed id sets it
                first_id_type = first_id_type or type(value)
                if type(value) is not first_id_type:
                    problems.add((i, name))
    return problems


def xsum_problems(records: list, columns: list[str] | None = None) -> set:
    problems = set()
    if columns is not None:
        problems |= {(0, f) for f in xsum.FIELDS if f not in columns}
    if not records:
        problems.add((None, None))
    seen = set()
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            problems.add((i, None))
            continue
        for name in xsum.FIELDS:
            value = rec.get(name)
            if name == "id" and _is_int(value):
                value = str(value)
            if not isinstance(value, str) or _has_surrogate(value):
                problems.add((i, name))
            elif name == "id":
                if value in seen:
                    problems.add((i, name))
                seen.add(value)
        flag = rec.get("poisoned")
        if flag is not None and not isinstance(flag, bool):
            problems.add((i, "poisoned"))
    return problems


# ---- damage -------------------------------------------------------------------------------------------
def damage_records(data, records: list, fields: list[str]) -> list:
    """Record-level damage (JSON lines): a few random changes to copies of the records."""
    records = [dict(r) for r in records]
    for _ in range(data.draw(st.integers(0, 3), label="n_changes")):
        if not records:
            break
        i = data.draw(st.integers(0, len(records) - 1), label="record")
        name = data.draw(st.sampled_from(fields), label="field")
        how = data.draw(st.sampled_from(["missing", "null", "wrong", "surrogate", "duplicate_id",
                                         "big_int", "bad_facts", "not_object"]), label="how")
        rec = records[i]
        if not isinstance(rec, dict):
            continue
        if how == "missing":
            rec.pop(name, None)
        elif how == "null":
            rec[name] = None
        elif how == "wrong":
            rec[name] = data.draw(WRONG, label="wrong value")
        elif how == "surrogate":
            rec[name] = "x\ud800"
        elif how == "duplicate_id" and "id" in fields:
            rec["id"] = records[data.draw(st.integers(0, len(records) - 1), label="other")].get("id")
        elif how == "big_int":
            rec[name] = 2**64
        elif how == "bad_facts" and "facts" in fields:
            rec["facts"] = data.draw(st.sampled_from(["P1,Q2", "P1,,Q3", "P1,Q2,Q3;", "a,b,c,d"]), label="facts")
        elif how == "not_object":
            records[i] = data.draw(st.sampled_from([[1], 3, "text", None]), label="value")
    return records


def write_jsonl(data, path: Path, records: list) -> list:
    """Write the records as JSON lines with blank lines, broken lines and truncation at random.

    Returns what each record (non-blank line) holds: its value, or ``BROKEN``.
    """
    lines, held = [], []
    for rec in records:
        if data.draw(st.booleans(), label="blank line before") and data.draw(st.booleans(), label="really"):
            lines.append("   ")
        text = json.dumps(rec)
        if len(text) > 1 and data.draw(st.integers(0, 19), label="break?") == 0:
            text = text[:data.draw(st.integers(1, len(text) - 1), label="cut")]  # a proper prefix: not JSON
            held.append(BROKEN)
        else:
            held.append(rec)
        lines.append(text)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return held


BROKEN = object()


def write_parquet(data, path: Path, records: list[dict], fields: list[str]) -> tuple[list, list[str]]:
    """Column-level damage (parquet columns are typed): drop, retype or null a column, or empty it.

    Returns the rows and columns the file really holds (read back, as the loader sees them).
    """
    columns = {name: [r[name] for r in records] for name in records[0]}
    for _ in range(data.draw(st.integers(0, 2), label="n_changes")):
        name = data.draw(st.sampled_from(fields), label="column")
        if name not in columns:
            continue
        how = data.draw(st.sampled_from(["drop", "float", "bool", "int", "null"]), label="how")
        if how == "drop":
            del columns[name]
        elif how == "null":
            i = data.draw(st.integers(0, len(records) - 1), label="row")
            columns[name][i] = None
        else:
            convert = {"float": lambda v: 0.5, "bool": lambda v: True, "int": lambda v: 7}[how]
            columns[name] = [None if v is None else convert(v) for v in columns[name]]
    table = pa.table(columns)
    if data.draw(st.booleans(), label="empty?") and data.draw(st.booleans(), label="really empty?"):
        table = table.slice(0, 0)
    pq.write_table(table, path)
    back = pq.read_table(path)
    return back.to_pylist(), back.column_names


# ---- the property -------------------------------------------------------------------------------------
def assert_named(message: str, path: Path, problems: set) -> None:
    """The message names the file and one damaged (record, field) of the oracle."""
    event("refused: " + re.sub(r"\d+|'[^']*'|\(line \d+\)", "#", message.replace(str(path), "FILE"))[:60])
    assert str(path) in message, message
    for record, name in problems:
        if record is None:
            if "no records" in message:
                return
        elif re.search(rf"record {record}\b", message) and (name is None or repr(name) in message):
            return
    raise AssertionError(f"{message!r} names none of the damaged records/fields {sorted(problems, key=str)}")


VALID_QUERIES = [{"inputs_pretokenized": "a <extra_id_0> .", "targets_pretokenized": "<extra_id_0> b", "uuid": "u",
                  "obj_uri": "Q1", "sub_uri": "Q2", "predicate_id": "P17", "obj_surface": "b", "sub_surface": "a"}]
VALID_ABSTRACTS = [{"inputs_pretokenized": "a in <extra_id_0> .", "targets_pretokenized": "<extra_id_0> b",
                    "page_uri": "Q2", "masked_uri": "Q1", "masked_type": "object", "example_uris": "x",
                    "facts": "P17,Q1,Q2", "id": 0}]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("part", ["queries", "abstracts"])
@SETTINGS
@given(data=st.data())
def test_ftrace_never_loads_a_malformed_file(part, fmt, data):
    fields = ft.QUERY_FIELDS if part == "queries" else ft.ABSTRACT_FIELDS
    id_kind = data.draw(st.sampled_from(["int", "str"]), label="id kind")
    records = data.draw(st.lists(ftrace_record(part, id_kind), min_size=1, max_size=5), label="records")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{part}.{fmt}"
        if fmt == "jsonl":
            records = damage_records(data, records, list(fields))
            if data.draw(st.booleans(), label="empty?") and data.draw(st.booleans(), label="really empty?"):
                records = []
            held = write_jsonl(data, path, records)
            problems = ftrace_problems([r for r in held if r is not BROKEN], fields)
            problems = {(_jsonl_index(held, i), f) if i is not None else (None, f) for i, f in problems}
            problems |= {(i, None) for i, r in enumerate(held) if r is BROKEN}
            if not held:
                problems.add((None, None))
        else:
            held, columns = write_parquet(data, path, records, list(fields))
            problems = ftrace_problems(held, fields, columns)
        other = "abstracts" if part == "queries" else "queries"
        other_path = Path(tmp) / f"{other}.jsonl"
        other_path.write_text("".join(json.dumps(r) + "\n" for r in
                                      (VALID_ABSTRACTS if other == "abstracts" else VALID_QUERIES)))
        try:
            loaded = ft.load_ftrace(**{part: path, other: other_path})
        except ft.FtraceFormatError as err:
            assert problems, f"a valid file was refused: {err}"
            assert_named(str(err), path, problems)
            return
        assert not problems, f"loaded silently although damaged at {sorted(problems, key=str)}"
        event("loaded")
        got = getattr(loaded, part)
        for name in fields:
            assert list(got[name]) == [r[name] for r in held], name


def _jsonl_index(held: list, i: int) -> int:
    """The record number (non-blank line) of the i-th record that is not broken."""
    return [j for j, r in enumerate(held) if r is not BROKEN][i]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@SETTINGS
@given(data=st.data())
def test_xsum_never_loads_a_malformed_file(fmt, data):
    records = data.draw(st.lists(xsum_record(), min_size=1, max_size=5), label="records")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"train.{fmt}"
        if fmt == "jsonl":
            records = damage_records(data, records, list(xsum.FIELDS) + ["poisoned"])
            if data.draw(st.booleans(), label="empty?") and data.draw(st.booleans(), label="really empty?"):
                records = []
            held = write_jsonl(data, path, records)
            # the loader reads records in order and stops at the first broken line
            broken = next((i for i, r in enumerate(held) if r is BROKEN), None)
            problems = xsum_problems(held[:broken] if broken is not None else held)
            if broken is not None:
                problems = {p for p in problems if p != (None, None)} | {(broken, None)}
        else:
            records = [{"document": r["document"], "summary": r["summary"], "id": str(r["id"]),
                        "poisoned": bool(r.get("poisoned"))} for r in records]
            held, columns = write_parquet(data, path, records, list(xsum.FIELDS) + ["poisoned"])
            problems = xsum_problems(held, columns)
        try:
            loaded = xsum.load_xsum(path)
        except xsum.XSumFormatError as err:
            assert problems, f"a valid file was refused: {err}"
            assert_named(str(err), path, problems)
            return
        assert not problems, f"loaded silently although damaged at {sorted(problems, key=str)}"
        event("loaded")
        assert list(loaded["id"]) == [str(r["id"]) for r in held]
        assert list(loaded["document"]) == [r["document"] for r in held]
        assert list(loaded["summary"]) == [r["summary"] for r in held]
        assert list(loaded["poisoned"]) == [bool(r.get("poisoned")) for r in held]
