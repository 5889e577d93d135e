"""Reading local data files (JSON lines, parquet) with errors that name the file and the record.

The real-data loaders (:mod:`tda.data.ftrace`, :mod:`tda.data.xsum`) check their own schemas;
what they share is here: parsing a JSON-lines file line by line, and opening a parquet file and
checking that it has the fields a loader needs. Each raises the loader's own error class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator


def jsonl_lines(path: Path, error: type[Exception]) -> Iterator[tuple[int, int, Any]]:
    """``(record index, line number, parsed value)`` for each non-blank line of ``path``.

    A line that is not valid JSON raises ``error`` naming the file, the record and the line.
    """
    with open(path, encoding="utf-8") as fh:
        row = 0
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}: record {row} (line {lineno}): not valid JSON ({err.msg})") from None
            yield row, lineno, value
            row += 1


def parquet_table(path: Path, error: type[Exception]):
    """A parquet file as a pyarrow table; an unreadable file raises ``error`` naming it."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a broken file
        raise error(f"{path}: not a readable parquet file ({err})") from None


def first_missing(fields: Iterable[str], present: Iterable[str]) -> str | None:
    """The first of ``fields`` that is not in ``present`` (None when all are)."""
    have = set(present)
    return next((name for name in fields if name not in have), None)
