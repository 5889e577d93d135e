"""The shared file readers behind the real-data loaders."""

import pytest

from tda.data.files import first_missing, jsonl_lines, parquet_table


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
