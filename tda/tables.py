"""How the book's tables show a missing value: an em dash, never ``NaN``.

A chapter's tables put rows of different kinds side by side (the TREx analogue's settings beside
SYNTH's, a checkpoint where a slice is empty), so some cells have no value. pandas prints those as
``NaN``, which reads as a failed computation. ``use_book_tables`` makes every DataFrame (and
Styler) a notebook displays as HTML show ``MISSING`` instead; the values themselves, and the
results files, are unchanged. ``tda`` calls it on import inside IPython, so every chapter gets it.
"""

from __future__ import annotations

import re
import sys

import pandas as pd

MISSING = "—"
# What pandas writes for a missing value that ``na_rep`` does not reach (pd.NA in an object column).
_MISSING_CELL = re.compile(r"<td>(NaN|nan|&lt;NA&gt;)</td>")


def book_html(frame: pd.DataFrame) -> str:
    """``frame`` as the notebook's HTML table, missing values as ``MISSING``."""
    html = frame.to_html(na_rep=MISSING, notebook=True, max_rows=pd.get_option("display.max_rows"),
                         max_cols=pd.get_option("display.max_columns"), show_dimensions=False)
    return _MISSING_CELL.sub(f"<td>{MISSING}</td>", html)


def use_book_tables(shell=None) -> bool:
    """Register ``book_html`` as the HTML form of DataFrames in ``shell`` (default: the running
    IPython, if any) and make Stylers show ``MISSING``; False when there is no shell."""
    pd.set_option("styler.format.na_rep", MISSING)
    if shell is None and "IPython" in sys.modules:
        shell = sys.modules["IPython"].get_ipython()
    if shell is None:
        return False
    shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, book_html)
    return True


__all__ = ["MISSING", "book_html", "use_book_tables"]
