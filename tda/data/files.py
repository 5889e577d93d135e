"""Reading local data files (JSON lines, parquet) with errors that name the file and the record.

The real-data loaders (:mod:`tda.data.ftrace`, :mod:`tda.data.xsum`) check their own schemas;
what they share is here: finding a part's files in a folder (one format per folder, never the same
data twice), parsing a JSON-lines file line by line, opening a parquet file and checking that it has
the fields a loader needs, and locating a value that Arrow cannot store. Each raises the loader's
own error class.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa

# The suffixes the loaders read. ".json" is JSON lines too (one object per line), like ".jsonl".
DATA_SUFFIXES = (".parquet", ".jsonl", ".json")


def folder_files(folder: Path, error: type[Exception], what: str, pattern: str = "*") -> list[Path]:
    """The data files of ``folder`` whose names match ``pattern``, sorted by name ([] when none).

    A folder holding the data in more than one format (``queries.jsonl`` beside ``queries.parquet``,
    or shards of both) raises ``error`` naming the files: read as shards, a converted copy would
    load every record twice, and which copy is current cannot be told from the files.
    """
    found = sorted(p for p in Path(folder).glob(pattern) if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    suffixes = sorted({p.suffix.lower() for p in found})
    if len(suffixes) > 1:
        raise error(f"{folder} holds the {what} in more than one format ({', '.join(suffixes)}): "
                    f"{', '.join(p.name for p in found)}. Read together they would be separate shards, so a "
                    f"copy in another format would load every record twice; keep one format there "
                    f"(move or delete the other files), or pass the files to read explicitly")
    return found


def check_distinct(paths: Sequence[Path], error: type[Exception], what: str) -> None:
    """Raise ``error`` when a list of files names one file twice, or one file in two formats.

    ``a.jsonl`` and ``a.parquet`` in one folder are the same part converted, not two shards.
    """
    seen: dict[Path, Path] = {}
    stems: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    for path in paths:
        real = Path(path).resolve()
        if real in seen:
            raise error(f"the {what} files name {path} twice (also as {seen[real]}); every record "
                        "would be read twice: list each file once")
        seen[real] = Path(path)
        stems[(real.parent, real.stem)].append(Path(path))
    for group in stems.values():
        if len(group) > 1:
            raise error(f"the {what} files hold one file in more than one format: "
                        f"{', '.join(str(p) for p in group)}; read together every record would load twice: "
                        "keep one of them")


def jsonl_lines(path: Path, error: type[Exception]) -> Iterator[tuple[int, int, Any]]:
    """``(record index, line number, parsed value)`` for each non-blank line of ``path``.

    A line that is not UTF-8 or not valid JSON raises ``error`` naming the file, the record and
    the line.
    """
    with open(path, "rb") as fh:
        row = 0
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}: record {row} (line {lineno})"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise error(f"{where}: not UTF-8 text ({err.reason} at byte {err.start})") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{where}: not valid JSON ({err.msg})") from None
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


def first_unstorable(values: Sequence[Any], kind: pa.DataType | None = None) -> tuple[int, str] | None:
    """``(row, reason)`` of the first value Arrow cannot store in one column (None when all can).

    For the error path of a loader: a lone surrogate in a string (``"\\ud800"`` is valid JSON but
    not UTF-8), an integer beyond 64 bits, or values of mixed types in a free-form column.
    """
    try:
        pa.array(values, type=kind)
        return None
    except (pa.ArrowException, UnicodeError, OverflowError, TypeError, ValueError):
        pass
    first: tuple[str, Any] | None = None
    for row, value in enumerate(values):
        try:
            pa.array([value], type=kind)
        except (pa.ArrowException, UnicodeError, OverflowError, TypeError, ValueError) as err:
            return row, f"cannot be stored ({type(err).__name__}: {err})"
        if value is not None and kind is None:
            family = _family(value)
            if first is None:
                first = (family, value)
            elif family != first[0]:
                return row, (f"is {type(value).__name__} {value!r:.60}, but an earlier record holds "
                             f"{type(first[1]).__name__} {first[1]!r:.60}; a column holds one type")
    return 0, "cannot be stored as one column"


def _family(value: Any) -> str:
    """The kind of a JSON value as Arrow sees it (ints and floats mix; the others do not)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__
