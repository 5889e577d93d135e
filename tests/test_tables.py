"""A notebook's tables show a missing value as an em dash, and only the display changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from IPython.core.interactiveshell import InteractiveShell

from tda.tables import MISSING, book_html, use_book_tables


def test_a_notebook_table_shows_missing_values_as_a_dash_not_nan():
    shell = InteractiveShell.instance()
    assert use_book_tables(shell)
    frame = pd.DataFrame({"TREx analogue": [0.5, np.nan], "SYNTH": [pd.NA, 2]}, index=["k", "m"])
    data, _ = shell.display_formatter.format(frame)
    html = data["text/html"]
    assert "NaN" not in html and "&lt;NA&gt;" not in html and "<NA>" not in html
    assert html.count(f"<td>{MISSING}</td>") == 2 and "<td>0.5</td>" in html
    assert frame.isna().sum().sum() == 2  # the values themselves are unchanged
    styled = frame.style.to_html()
    assert "nan" not in styled.lower().replace("nan-", "") and MISSING in styled


def test_without_a_shell_nothing_is_registered():
    assert book_html(pd.DataFrame({"a": [np.nan]})).count(MISSING) == 1
