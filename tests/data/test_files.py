"""The shared file readers behind the real-data loaders."""

import pytest

from tda.data.files import check_distinct, first_missing, first_unstorable, folder_files, jsonl_lines, parquet_table


class Bad(ValueError):
    pass


def test_jsonl_lines_count_records_and_lines_apart(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n  \n[2]\n{"a": \n', encoding="utf-8")
    lines = jsonl_lines(path, Bad)
    assert next(lines) == (0, 1, {"a": 1})
    assert next(lines) == (1, 4, [2])  # blank lines are skipped, not counted as records
    with pytest.raises(Bad, match=r"x\.jsonl: record 2 \(line 5\): not valid JSON"):
        next(lines)


def test_parquet_table_names_an_unreadable_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(Bad, match=r"broken\.parquet: not a readable parquet file"):
        parquet_table(path, Bad)


def test_first_missing_keeps_the_fields_order():
    assert first_missing(["id", "summary", "document"], {"document": 1}) == "id"
    assert first_missing(["id"], ["id", "extra"]) is None


def test_jsonl_lines_names_a_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    lines = jsonl_lines(path, Bad)
    assert next(lines) == (0, 1, {"a": 1})
    with pytest.raises(Bad, match=r"latin1\.jsonl: record 1 \(line 2\): not UTF-8"):
        next(lines)


def test_folder_files_refuses_two_formats(tmp_path):
    for name in ("a.jsonl", "b.jsonl", "notes.txt"):
        (tmp_path / name).write_text("{}\n")
    assert [p.name for p in folder_files(tmp_path, Bad, "queries")] == ["a.jsonl", "b.jsonl"]
    assert [p.name for p in folder_files(tmp_path, Bad, "queries", "b.*")] == ["b.jsonl"]
    (tmp_path / "a.parquet").write_bytes(b"")
    with pytest.raises(Bad, match=r"queries in more than one format \(\.jsonl, \.parquet\): a\.jsonl, a\.parquet, b\.jsonl"):
        folder_files(tmp_path, Bad, "queries")
    assert folder_files(tmp_path / "b.jsonl", Bad, "queries") == []  # not a folder: nothing found


def test_check_distinct(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    check_distinct([a, b], Bad, "queries")
    with pytest.raises(Bad, match="twice"):
        check_distinct([a, b, tmp_path / "." / "a.jsonl"], Bad, "queries")
    with pytest.raises(Bad, match=r"more than one format: .*a\.jsonl, .*a\.parquet"):
        check_distinct([a, tmp_path / "a.parquet"], Bad, "queries")
    check_distinct([a, tmp_path / "sub" / "a.parquet"], Bad, "queries")  # other folder: another shard


def test_first_unstorable_finds_the_row():
    import pyarrow as pa

    assert first_unstorable(["a", "b"], pa.string()) is None
    row, reason = first_unstorable(["a", "b\ud800"], pa.string())
    assert row == 1 and "cannot be stored" in reason
    assert first_unstorable([1, 2**63], pa.int64())[0] == 1
    row, reason = first_unstorable([1, 2.5, "x"])  # ints and floats mix; a string does not
    assert row == 2 and "one type" in reason
