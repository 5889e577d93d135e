"""Where a chapter's data comes from: the synthetic world (the default) or a real source.

A chapter's data setting is one string (or a small mapping, see :meth:`DataSource.parse`):

- ``"synthetic"`` (or None): the small world's data set, built by the pipeline as today;
- a local path: FTRACE-format files (a folder with ``queries.*`` and ``abstracts.*``) or an
  XSum-format file or folder, read by ``tda.data.ftrace.load_ftrace`` / ``tda.data.xsum.load_xsum``;
- a Hugging Face dataset name (``ekinakyurek/ftrace``, ``EdinburghNLP/xsum``), read by the same
  loaders (needs a network or the Hugging Face cache).

Local path or hub name is decided at once by ``tda.locations`` (a path that does not exist is
refused naming it). Whatever the source, the result has one schema: ``FtraceData`` (``queries``,
``abstracts``) for Part I, an XSum ``datasets.Dataset`` (``document``, ``summary``, ``id``,
``poisoned``) for Part II, so every method runs unchanged on either.

FTRACE-TREx is large (1,560,453 abstracts, 31,479 queries); :func:`restrict_ftrace` keeps a
seeded sample of queries with all their proponents and a share of the other abstracts, the
smallest real case a chapter can run before the full size.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from datasets import Dataset, DatasetDict

from ..locations import resolve
from ..seeds import derive_seed
from .ftrace import FtraceData, load_ftrace
from .xsum import contains_word, load_xsum

SYNTHETIC = "synthetic"
KINDS = (SYNTHETIC, "local", "hub")
FIELDS = ("source", "split", "limit", "ids")


class DataSourceError(ValueError):
    """A data setting that cannot be read (the message names the setting and the value)."""


@dataclass(frozen=True)
class DataSource:
    """A resolved data setting. ``kind``: "synthetic", "local" or "hub"; ``location``: the path or
    hub name (None for synthetic); ``split`` and ``limit`` (first records) apply to XSum-format
    sources; ``ids="row"`` numbers records without ids (see ``load_xsum``)."""

    kind: str = SYNTHETIC
    location: str | None = None
    split: str = "train"
    limit: int | None = None
    ids: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataSourceError(f"data source kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.kind == SYNTHETIC) != (self.location is None):
            raise DataSourceError(f"a {self.kind} data source {'takes no' if self.kind == SYNTHETIC else 'needs a'} "
                                  f"location (got {self.location!r})")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise DataSourceError(f"limit must be a positive number of records or null, got {self.limit!r}")

    @property
    def synthetic(self) -> bool:
        return self.kind == SYNTHETIC

    @classmethod
    def parse(cls, value: "str | Path | Mapping[str, Any] | DataSource | None", what: str = "data source",
              base: str | Path | None = None) -> "DataSource":
        """A setting as a ``DataSource``: None or "synthetic"; a local path or hub name; or a mapping
        ``{source: ..., split: ..., limit: ..., ids: ...}`` (params.yml's form). Relative paths are read
        from ``base`` (default the working directory) and kept absolute. A missing local path,
        or a hub name when the hub cannot be reached, raises ``tda.locations.SourceNotFoundError``
        at once, naming it."""
        if isinstance(value, DataSource):
            return value
        options: dict[str, Any] = {}
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(FIELDS))
            if unknown:
                raise DataSourceError(f"{what}: unknown field(s) {unknown}; the fields are {', '.join(FIELDS)}")
            options = {k: v for k, v in value.items() if k != "source"}
            value = value.get("source")
        if value is None or (isinstance(value, str) and value.strip().lower() == SYNTHETIC):
            if options.get("limit") is not None:
                raise DataSourceError(f"{what}: limit applies to a real source, not the synthetic world")
            return cls(SYNTHETIC, None, **{k: v for k, v in options.items() if k != "limit"})
        if not isinstance(value, (str, Path)):
            raise DataSourceError(f"{what} must be 'synthetic', a local path or a hub name, got "
                                  f"{type(value).__name__} {value!r}")
        location = resolve(value, what, base=base)
        text = str(location.path.resolve()) if location.is_local else location.name
        return cls(location.kind, text, **options)

    def describe(self) -> dict:
        """The setting as plain values (for store keys and results)."""
        return asdict(self)


def load_ftrace_source(source: "DataSource | str | None", synthetic: Callable[[], FtraceData]) -> FtraceData:
    """Part I's data: ``synthetic()`` (the pipeline's own builder) for the synthetic world, else
    ``load_ftrace`` on the local files or hub dataset. Same ``FtraceData`` schema either way."""
    source = DataSource.parse(source, "FTRACE data source")
    if source.synthetic:
        return synthetic()
    if source.limit is not None:
        raise DataSourceError("limit is not defined for FTRACE data (it would cut proponents away): use "
                              "restrict_ftrace(data, n_queries, n_abstracts, seed)")
    return load_ftrace(Path(source.location) if source.kind == "local" else source.location, split=source.split)


def load_xsum_source(source: "DataSource | str | None", synthetic: Callable[[], Any]):
    """Part II's documents: ``synthetic()`` (the pipeline's synthetic news) for the synthetic world,
    else ``load_xsum`` on the local file/folder or hub dataset with the source's split, limit and ids."""
    source = DataSource.parse(source, "XSum data source")
    if source.synthetic:
        return synthetic()
    where = Path(source.location) if source.kind == "local" else source.location
    return load_xsum(where, split=source.split, limit=source.limit, ids=source.ids)


def load_xsum_splits(source: "DataSource | str | None", synthetic: Callable[[], Any], *, test_fraction: float = 0.25,
                     word: str = "England", seed: int = 0):
    """Part II's train and test documents as a ``DatasetDict`` (``train``, ``test``), as
    ``synthetic_news`` returns them: ``synthetic()`` for the synthetic world; for a real source its
    own ``test`` split where it has one (a hub dataset, or a folder with ``test.*``), else a seeded,
    stratified hold-out of ``test_fraction`` of the documents whose summary names ``word`` and of
    the others (a single file). The source's ``limit`` applies to each split read."""
    source = DataSource.parse(source, "XSum data source")
    if source.synthetic:
        return synthetic()
    where = Path(source.location) if source.kind == "local" else source.location
    train = load_xsum(where, split=source.split, limit=source.limit, ids=source.ids)
    has_test = source.kind == "hub" or (Path(source.location).is_dir() and any(
        (Path(source.location) / f"test.{ext}").is_file() for ext in ("jsonl", "json", "parquet")))
    if has_test:
        return DatasetDict(train=train, test=load_xsum(where, split="test", limit=source.limit, ids=source.ids))
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    rng = random.Random(derive_seed(seed, "xsum-hold-out"))
    naming = [i for i, summary in enumerate(train["summary"]) if contains_word(summary, word)]
    named = set(naming)
    others = [i for i in range(len(train)) if i not in named]
    test = set(rng.sample(naming, round(test_fraction * len(naming))))
    test |= set(rng.sample(others, round(test_fraction * len(others))))
    return DatasetDict(train=train.select([i for i in range(len(train)) if i not in test]),
                       test=train.select(sorted(test)))


def restrict_ftrace(data: FtraceData, n_queries: int, n_abstracts: int | None = None, seed: int = 0) -> FtraceData:
    """A seeded sample of ``n_queries`` queries that have proponents, all their proponents, and other
    abstracts drawn at random up to ``n_abstracts`` in all (None: keep every abstract).

    Abstracts keep their file order; ``proponents`` are recomputed as row indices into the kept
    abstracts. Raises ValueError when fewer queries have proponents than asked for, or when the
    proponents alone exceed ``n_abstracts``.
    """
    queries, abstracts = data
    with_props = [i for i, p in enumerate(queries["proponents"]) if p]
    if n_queries < 1 or n_queries > len(with_props):
        raise ValueError(f"n_queries must be between 1 and {len(with_props)} (the queries that have proponents), "
                         f"got {n_queries}")
    rng = random.Random(derive_seed(seed, "restrict-ftrace"))
    picked = sorted(rng.sample(with_props, n_queries))
    needed = sorted({int(j) for i in picked for j in queries[i]["proponents"]})
    keep = set(needed)
    if n_abstracts is not None:
        if n_abstracts < len(needed):
            raise ValueError(f"the {n_queries} queries have {len(needed)} proponents, more than n_abstracts="
                             f"{n_abstracts}: raise n_abstracts or sample fewer queries")
        others = [j for j in range(len(abstracts)) if j not in keep]
        keep.update(rng.sample(others, min(n_abstracts - len(needed), len(others))))
    else:
        keep = set(range(len(abstracts)))
    rows = sorted(keep)
    new_index = {old: new for new, old in enumerate(rows)}
    columns = queries.select(picked).to_dict()
    columns["proponents"] = [[new_index[int(j)] for j in props] for props in columns["proponents"]]
    return FtraceData(Dataset.from_dict(columns, features=queries.features), abstracts.select(rows))


__all__ = ["SYNTHETIC", "DataSource", "DataSourceError", "load_ftrace_source", "load_xsum_source", "load_xsum_splits",
           "restrict_ftrace"]
