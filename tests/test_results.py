"""Result files and claim rows (``tda.results``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tda.results import (NOT_TESTABLE, NOT_TESTED, VERDICTS, claim, fmt, headline, results_dir, verdict_from,
                         write_results)


def test_verdict_from_parts_and_fmt():
    assert verdict_from([True, True]) == "replicated" and verdict_from([True, False]) == "partly"
    assert verdict_from([False, False]) == "not replicated" and verdict_from([]) == "not replicated"
    assert fmt(0.4856, 0.044) == "48.6 ± 4.4" and fmt(0.5, float("nan")) == "50.0" and fmt(None) == "n/a"
    assert fmt(0.75, 0.05) == "75.0 ± 5.0" and fmt(float("nan")) == "n/a" and fmt(3.0, 1.0, scale=1) == "3.0 ± 1.0"


def test_write_results_is_plain_json_written_whole(tmp_path, monkeypatch):
    monkeypatch.setenv("TDA_RESULTS_DIR", str(tmp_path / "results"))
    assert results_dir() == tmp_path / "results"
    path = write_results("chapter", {"x": np.float64(0.5), "arr": np.arange(3), "nan": float("nan"),
                                     "nested": {1: (np.int64(2), math.inf)}})
    assert json.loads(path.read_text()) == {"x": 0.5, "arr": [0, 1, 2], "nan": None, "nested": {"1": [2, None]}}
    assert not list((tmp_path / "results").glob(".*.tmp"))


def test_claim_rows_refuse_unknown_verdicts():
    row = claim("A1", "a claim", "paper", "ours", "partly", "a rule", extra=1)
    assert row == {"id": "A1", "claim": "a claim", "paper": "paper", "ours": "ours", "verdict": "partly",
                   "rule": "a rule", "extra": 1}
    assert NOT_TESTED not in VERDICTS  # a claim that was not tested records no row
    with pytest.raises(ValueError, match="verdict must be one of"):
        claim("A1", "a claim", "paper", "ours", NOT_TESTED, "a rule")
    # a claim whose setup fails a guard is recorded, with the verdict "not testable"
    assert claim("B1", "c", "p", "the poison is 10% of training", NOT_TESTABLE, "r")["verdict"] == "not testable"


def test_headline_builder_drops_what_cannot_be_drawn():
    assert headline("m", "u", 1.5, 2.0, threshold=0.5, note="n") == {"metric": "m", "unit": "u", "paper": 2.0,
                                                                    "ours": 1.5, "threshold": 0.5, "note": "n"}
    assert headline("m", "u", float("nan"), 2.0) is None  # nothing of ours to draw
    assert headline("m", "u", 1, float("nan"), threshold=float("inf")) == {"metric": "m", "unit": "u", "paper": None,
                                                                           "ours": 1.0}
