"""Score sets whose variants are columns (``tda.experiments.variants``)."""

import numpy as np
import pandas as pd
import pytest

from tda.experiments.variants import Scored, select, unpack, with_variants


def test_unpack_select_and_join_variant_columns():
    assert unpack(Scored([1.0], {"beta": 0.4})) == ([1.0], {"beta": 0.4}) and unpack([2.0]) == ([2.0], {})
    per_query = pd.DataFrame({"method": ["beta=0", "beta=0", "beta=0.4", "BM25"], "beta": [0.0, 0.0, 0.4, np.nan],
                              "auc": [0.5, 0.6, 0.9, 0.7]})
    assert list(select(per_query, beta=0.4)["method"]) == ["beta=0.4"]
    assert len(select(per_query, beta=None)) == 4  # None keeps every row
    with pytest.raises(ValueError, match="no column 'units'"):
        select(per_query, units="all")
    summary = pd.DataFrame({"method": ["BM25", "beta=0.4", "beta=0"], "auc mean": [0.7, 0.9, 0.55]})
    joined = with_variants(summary, per_query, ["beta"])
    assert list(joined["method"]) == ["BM25", "beta=0.4", "beta=0"]  # the summary's order
    assert joined["beta"].tolist()[1:] == [0.4, 0.0] and np.isnan(joined["beta"].iloc[0])
    clash = pd.concat([per_query, pd.DataFrame({"method": ["beta=0"], "beta": [1.0], "auc": [0.1]})])
    with pytest.raises(ValueError, match="stands for more than one variant"):
        with_variants(summary, clash, ["beta"])
