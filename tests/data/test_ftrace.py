"""FTRACE's real-format loader and writer (tda.data.ftrace)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tda.data import ftrace as ft


# ---------------------------------------------------------------------------------------------
# 1. the real format
# ---------------------------------------------------------------------------------------------
REAL_ABSTRACTS = [
    {"inputs_pretokenized": 'The name Austroasiatic comes from "<extra_id_0>".', "targets_pretokenized":
     "<extra_id_0> South Asia", "page_uri": "Q33199", "masked_uri": "Q771405", "masked_type": "subject",
     "example_uris": "Q33199-1-Q48-Q771405-1", "facts": "P361,Q48,Q771405;P30,Q48,Q771405", "id": 8},
    {"inputs_pretokenized": "Paul Ehrlich worked in <extra_id_0> for years .", "targets_pretokenized":
     "<extra_id_0> Frankfurt", "page_uri": "Q57089", "masked_uri": "Q1794", "masked_type": "object",
     "example_uris": "Q57089-3-Q1794-Q57089-0", "facts": "P937,Q1794,Q57089", "id": 9},
    {"inputs_pretokenized": "<extra_id_0> worked in Frankfurt for years .", "targets_pretokenized":
     "<extra_id_0> Paul Ehrlich", "page_uri": "Q57089", "masked_uri": "Q57089", "masked_type": "subject",
     "example_uris": "Q57089-3-Q1794-Q57089-1", "facts": "P937,Q1794,Q57089", "id": 10},
    {"inputs_pretokenized": "Asia is a continent , <extra_id_0> is part of it .", "targets_pretokenized":
     "<extra_id_0> South Asia", "page_uri": "Q48", "masked_uri": "Q771405", "masked_type": "subject",
     "example_uris": "Q48-0-Q48-Q771405-1", "facts": "P30,Q48,Q771405", "id": 11},
]
REAL_QUERIES = [
    {"inputs_pretokenized": "Paul Ehrlich used to work in <extra_id_0> .", "targets_pretokenized":
     "<extra_id_0> Frankfurt", "uuid": "5b063008-a8ba-4064-9f59-e70102bb8c50", "obj_uri": "Q1794",
     "sub_uri": "Q57089", "predicate_id": "P937", "obj_surface": "Frankfurt", "sub_surface": "Paul Ehrlich"},
    {"inputs_pretokenized": "South Asia is located in <extra_id_0> .", "targets_pretokenized": "<extra_id_0> Asia",
     "uuid": "q-2", "obj_uri": "Q48", "sub_uri": "Q771405", "predicate_id": "P30", "obj_surface": "Asia",
     "sub_surface": "South Asia"},
    {"inputs_pretokenized": "Rome is the capital of <extra_id_0> .", "targets_pretokenized": "<extra_id_0> Italy",
     "uuid": "q-3", "obj_uri": "Q38", "sub_uri": "Q220", "predicate_id": "P1376", "obj_surface": "Italy",
     "sub_surface": "Rome"},
]
REAL_PROPONENTS = [[1, 2], [0, 3], []]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_real_format_round_trip(tmp_path, fmt):
    write = write_parquet if fmt == "parquet" else write_jsonl
    # a stale proponents column in the file must be ignored and recomputed
    queries = [dict(q, proponents=[99]) for q in REAL_QUERIES]
    a = write(tmp_path / f"abstracts.{fmt}", REAL_ABSTRACTS)
    q = write(tmp_path / f"queries.{fmt}", queries)
    data = ft.load_ftrace(abstracts=a, queries=q)
    assert list(data.queries["proponents"]) == REAL_PROPONENTS
    assert list(data.abstracts["id"]) == [8, 9, 10, 11]
    for name in ft.QUERY_FIELDS:
        assert list(data.queries[name]) == [r[name] for r in REAL_QUERIES]
    for name in ft.ABSTRACT_FIELDS:
        assert list(data.abstracts[name]) == [r[name] for r in REAL_ABSTRACTS]
    # the same data from a folder in the Hugging Face layout, abstracts in two shards
    (tmp_path / "hf" / "abstracts").mkdir(parents=True)
    (tmp_path / "hf" / "queries").mkdir()
    write(tmp_path / "hf" / "abstracts" / f"ftrace-train-00000-of-00002.{fmt}", REAL_ABSTRACTS[:3])
    write(tmp_path / "hf" / "abstracts" / f"ftrace-train-00001-of-00002.{fmt}", REAL_ABSTRACTS[3:])
    write(tmp_path / "hf" / "queries" / f"ftrace-train.{fmt}", REAL_QUERIES)
    again = ft.load_ftrace(tmp_path / "hf")
    assert again.queries.to_dict() == data.queries.to_dict()
    assert again.abstracts.to_dict() == data.abstracts.to_dict()


def test_real_format_to_examples(tmp_path):
    data = ft.load_ftrace(abstracts=write_jsonl(tmp_path / "a.jsonl", REAL_ABSTRACTS),
                          queries=write_jsonl(tmp_path / "q.jsonl", REAL_QUERIES))
    ex = ft.to_examples(data.queries)
    assert ex.prompts[0] == "Paul Ehrlich used to work in <extra_id_0> . answer :"
    assert ex.targets[0] == "Frankfurt"
    raw = ft.to_examples(data.queries, seq2seq=True)
    assert raw.prompts[0] == REAL_QUERIES[0]["inputs_pretokenized"]
    assert raw.targets[0] == "<extra_id_0> Frankfurt"
    assert ft.to_examples(data.queries, mask_token="[MASK]").prompts[0] == \
        "Paul Ehrlich used to work in [MASK] . answer :"


def _bad(rows, i, **change):
    rows = [dict(r) for r in rows]
    rows[i].update(change)
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
@pytest.mark.parametrize("part,rows,pattern", [
    ("abstracts", _bad(REAL_ABSTRACTS, 2, facts="P937,Q1794"), r"record 2.*field 'facts'.*malformed fact"),
    ("abstracts", _bad(REAL_ABSTRACTS, 1, facts="P1,Q2,Q3;"), r"record 1.*field 'facts'"),
    ("abstracts", [dict(r, id=float(r["id"])) for r in REAL_ABSTRACTS], r"record 0.*field 'id' should be int or str"),
    ("queries", _bad(REAL_QUERIES, 1, predicate_id=None), r"record 1.*field 'predicate_id'"),
])
def test_real_format_errors(tmp_path, fmt, part, rows, pattern):
    write = write_parquet if fmt == "parquet" else write_jsonl
    files = {"abstracts": REAL_ABSTRACTS, "queries": REAL_QUERIES, part: rows}
    paths = {k: write(tmp_path / f"{k}.{fmt}", v) for k, v in files.items()}
    with pytest.raises(ft.FtraceFormatError, match=pattern) as err:
        ft.load_ftrace(**paths)
    assert str(paths[part]) in str(err.value)


def test_real_format_errors_jsonl_specific(tmp_path):
    a = write_jsonl(tmp_path / "abstracts.jsonl", REAL_ABSTRACTS)
    # a record without a field: file, record, line and field named
    rows = [dict(r) for r in REAL_QUERIES]
    del rows[2]["sub_uri"]
    q = write_jsonl(tmp_path / "queries.jsonl", rows)
    with pytest.raises(ft.FtraceFormatError, match=r"queries\.jsonl: record 2 \(line 3\): missing field 'sub_uri'"):
        ft.load_ftrace(abstracts=a, queries=q)
    # a line that is not JSON (after a blank line: record and line numbers differ)
    q.write_text(json.dumps(REAL_QUERIES[0]) + "\n\n{not json\n")
    with pytest.raises(ft.FtraceFormatError, match=r"queries\.jsonl: record 1 \(line 3\): not valid JSON"):
        ft.load_ftrace(abstracts=a, queries=q)
    # a parquet file without a column
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "facts"} for r in REAL_ABSTRACTS]),
                   tmp_path / "abstracts.parquet")
    with pytest.raises(ft.FtraceFormatError, match=r"abstracts\.parquet: record 0: missing field 'facts'"):
        ft.load_ftrace(abstracts=tmp_path / "abstracts.parquet", queries=write_jsonl(q, REAL_QUERIES))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ft.load_ftrace(abstracts=tmp_path / "nope.parquet", queries=q)
    with pytest.raises(ValueError, match="give both"):
        ft.load_ftrace(abstracts=a)
    with pytest.raises(FileNotFoundError, match="no FTRACE folder"):
        ft.load_ftrace(tmp_path / "missing")



@pytest.mark.parametrize("other", ["parquet", "json"])
def test_same_part_in_two_formats_is_an_error(tmp_path, other):
    """queries.jsonl beside queries.parquet used to be read as two shards: every record twice."""
    write = {"parquet": write_parquet, "json": write_jsonl}[other]
    write_jsonl(tmp_path / "abstracts.jsonl", REAL_ABSTRACTS)
    write_jsonl(tmp_path / "queries.jsonl", REAL_QUERIES)
    write(tmp_path / f"queries.{other}", REAL_QUERIES)
    with pytest.raises(ft.FtraceFormatError, match="more than one format") as err:
        ft.load_ftrace(tmp_path)
    message = str(err.value)
    assert "queries.jsonl" in message and f"queries.{other}" in message and "keep one" in message
    # the same inside a shard folder (the Hugging Face layout), and for the abstracts
    hf = tmp_path / "hf"
    for part, rows in (("abstracts", REAL_ABSTRACTS), ("queries", REAL_QUERIES)):
        (hf / part).mkdir(parents=True)
        write_jsonl(hf / part / "train-00000.jsonl", rows)
    write(hf / "abstracts" / f"train-00000.{other}", REAL_ABSTRACTS)
    with pytest.raises(ft.FtraceFormatError, match=r"abstracts.*more than one format.*keep one"):
        ft.load_ftrace(hf)
    # a part both as a folder and as a file beside it
    (hf / "abstracts" / f"train-00000.{other}").unlink()
    write_jsonl(hf / "queries.jsonl", REAL_QUERIES)
    with pytest.raises(ft.FtraceFormatError, match=r"both .*queries/.* and .*queries\.jsonl"):
        ft.load_ftrace(hf)
    (hf / "queries.jsonl").unlink()
    assert len(ft.load_ftrace(hf).queries) == len(REAL_QUERIES)
    # files given explicitly: the same file twice, or one file in two formats, is an error too
    q = tmp_path / "queries.jsonl"
    with pytest.raises(ft.FtraceFormatError, match="twice"):
        ft.load_ftrace(abstracts=tmp_path / "abstracts.jsonl", queries=[q, q])
    with pytest.raises(ft.FtraceFormatError, match="more than one format"):
        ft.load_ftrace(abstracts=tmp_path / "abstracts.jsonl", queries=[q, tmp_path / f"queries.{other}"])


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_string_ids_are_accepted(tmp_path, fmt):
    """The hub card of ekinakyurek/ftrace lists ``id`` as a string feature; ints are read too."""
    write = write_parquet if fmt == "parquet" else write_jsonl
    rows = [dict(r, id=f"a{r['id']}") for r in REAL_ABSTRACTS]
    data = ft.load_ftrace(abstracts=write(tmp_path / f"abstracts.{fmt}", rows),
                          queries=write(tmp_path / f"queries.{fmt}", REAL_QUERIES))
    assert list(data.abstracts["id"]) == ["a8", "a9", "a10", "a11"]
    assert list(data.queries["proponents"]) == REAL_PROPONENTS
    # candidate sets and examples do not care about the id's type
    cands = ft.candidate_sets(*data, k=2, m=1, r=1, seed=0, on_missing="skip")
    assert len(cands) == 2 and cands.labels(data.queries) == \
        ft.candidate_sets(*ft.load_ftrace(abstracts=write(tmp_path / f"a2.{fmt}", REAL_ABSTRACTS),
                                          queries=tmp_path / f"queries.{fmt}"),
                          k=2, m=1, r=1, seed=0, on_missing="skip").labels(data.queries)
    mixed = [dict(r) for r in REAL_ABSTRACTS]
    mixed[2]["id"] = "ten"
    a = write_jsonl(tmp_path / "mixed.jsonl", mixed)
    with pytest.raises(ft.FtraceFormatError, match=r"mixed\.jsonl: record 2 \(line 3\): field 'id'.*one type"):
        ft.load_ftrace(abstracts=a, queries=write_jsonl(tmp_path / "q.jsonl", REAL_QUERIES))


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_empty_file_is_an_error(tmp_path, fmt):
    a = write_jsonl(tmp_path / "abstracts.jsonl", REAL_ABSTRACTS)
    q = tmp_path / f"queries.{fmt}"
    if fmt == "jsonl":
        q.write_text("\n")
    else:
        pq.write_table(pa.Table.from_pylist(REAL_QUERIES).slice(0, 0), q)
    with pytest.raises(ft.FtraceFormatError, match=rf"queries\.{fmt}: no records"):
        ft.load_ftrace(abstracts=a, queries=q)


def test_save_and_load_synthetic(tmp_path, synth):
    for fmt in ("parquet", "jsonl"):
        ft.save_ftrace(synth, tmp_path / fmt, fmt=fmt)
        back = ft.load_ftrace(tmp_path / fmt)
        assert back.queries.to_dict() == synth.queries.to_dict()
        assert back.abstracts.to_dict() == synth.abstracts.to_dict()
