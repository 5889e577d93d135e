"""Score sets whose variants are table columns, shared by both parts' analyses.

A chapter scores many variants of a method (TracIn per parameter unit, per checkpoint, with or
without correction; DDA per β). A *score set* maps a display label (the ``method`` column of the
long per-query tables) to the scores, and a variant's parameters travel as :class:`Scored` columns
beside it (``units``, ``checkpoint``, ``beta``, ...). Tables and figures select rows by those
columns; nothing parses a label back into its parts.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import pandas as pd


class Scored(NamedTuple):
    """A variant's scores and its parameters (columns of the per-query table)."""

    scores: Any
    columns: Mapping[str, Any]


def unpack(value) -> tuple[Any, dict]:
    """(scores, variant columns) of a score-set value: a :class:`Scored` or bare scores (no columns)."""
    if isinstance(value, Scored):
        return value.scores, dict(value.columns)
    return value, {}


def select(per_query: pd.DataFrame, **columns) -> pd.DataFrame:
    """The rows whose columns equal the given values (a value of None keeps every row)."""
    df = per_query
    for k, v in columns.items():
        if v is not None:
            if k not in df.columns:
                raise ValueError(f"no column {k!r} in the table; columns: {list(df.columns)}")
            df = df[df[k] == v]
    return df


def with_variants(summary: pd.DataFrame, per_query: pd.DataFrame, columns: Sequence[str],
                  label: str = "method") -> pd.DataFrame:
    """``summary`` (one row per label, e.g. ``seed_summary``'s) with each label's variant columns from
    the per-query table joined on, in the summary's row order."""
    missing = [c for c in columns if c not in per_query.columns]
    if missing:
        raise ValueError(f"the per-query table has no variant column(s) {missing}")
    keys = per_query[[label, *columns]].drop_duplicates()
    if keys[label].duplicated().any():
        bad = keys[keys[label].duplicated()][label].iloc[0]
        raise ValueError(f"label {bad!r} stands for more than one variant of {list(columns)}")
    return summary.drop(columns=[c for c in columns if c in summary.columns]).merge(keys, on=label, how="left")


__all__ = ["Scored", "unpack", "select", "with_variants"]
