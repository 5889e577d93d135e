"""FTRACE data: the real loader, and the one import for every FTRACE helper.

``from tda.data import ftrace as ft`` gives everything Part I uses, from the modules that hold it:

- ``tda.data.ftrace_schema``: the schema (field names, ``FtraceData``), masks and answers, facts
  and proponents, ``summarize``;
- this module: the real data's loader and writer (``load_ftrace``, ``save_ftrace``), which read
  ``ekinakyurek/ftrace`` (hub or local parquet/JSONL) into that schema with errors that name the
  file, the record and the field;
- ``tda.data.trex``: the TREx analogue of the small world (``build_trex``);
- ``tda.data.synth``: FTRACE-SYNTH as the paper's generator writes it (``build_synth``);
- ``tda.data.candidates``: the re-ranking candidate sets (``candidate_sets``);
- ``tda.data.slices``: queries as model examples, correctness and the paper's query slices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..locations import hub_name
from .candidates import Candidates, bm25_tokens, candidate_sets, check_candidates
from .files import check_distinct, first_missing, first_unstorable, folder_files, jsonl_lines, parquet_table
from .ftrace_schema import (ABSTRACT_FIELDS, ANSWER_SEP, DERIVED_FIELDS, INT64_MAX, MASK_RE, QUERY_FIELDS,
                            SENTINEL_RE, FtraceData, answer_text, answers, check_relations, fact_key, filled_text,
                            parse_facts, proponents_of, query_key, summarize)
from .ftrace_schema import column_kind as _kind_of, finish_data as _finish
from .slices import (acceptable_answers, answer_checks, answer_correct, filter_queries, is_synth, paper_slices,
                     queries_correct, query_losses, query_slices, synth_entity_ranks, synth_top_entity, to_examples)
from .synth import SYNTH_FORMS, SYNTH_URI_RE, build_synth, synth_facts, synth_surface, synth_uri
from .trex import build_trex

HUB_NAME = "ekinakyurek/ftrace"


class FtraceFormatError(ValueError):
    """A malformed FTRACE file or record; the message names the file, the record and the field."""


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



__all__ = [
    "HUB_NAME", "ANSWER_SEP", "QUERY_FIELDS", "ABSTRACT_FIELDS", "DERIVED_FIELDS", "INT64_MAX", "SENTINEL_RE", "MASK_RE",
    "SYNTH_FORMS", "SYNTH_URI_RE", "FtraceFormatError", "FtraceData",
    "fact_key", "parse_facts", "query_key", "answers", "answer_text", "filled_text", "proponents_of",
    "load_ftrace", "save_ftrace", "check_relations", "build_trex", "synth_uri", "synth_surface",
    "synth_facts", "build_synth", "Candidates", "check_candidates", "bm25_tokens", "candidate_sets",
    "to_examples", "answer_correct", "acceptable_answers", "queries_correct", "synth_top_entity", "query_losses", "query_slices",
    "filter_queries", "summarize", "synth_entity_ranks", "is_synth", "answer_checks", "paper_slices",
]
