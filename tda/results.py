"""Headline numbers of each notebook, written as JSON for the claims scoreboard.

A notebook calls ``write_results("small_world", {...})``; the file lands in
``$TDA_RESULTS_DIR`` (set by ``tda.notebooks`` to ``book/executed/results``), written to a
temporary file and renamed so a reader never sees half a file. Claims are built with ``claim``
so every notebook records the same fields.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from .store import REPO_ROOT

# "not testable": the claim was run, but a guard the claim depends on failed (fixed before any
# verdict: for Part II, e.g. the poisoned documents are more than 5% of training, or retraining
# without them leaves the hallucinations in place; for Part I, issue 11's world guards), so no
# verdict on the paper's claim can be drawn here; the claim's row and its chapter say which guard
# failed and by how much.
NOT_TESTABLE = "not testable"
VERDICTS = ("replicated", "partly", "not replicated", NOT_TESTABLE)
# A verdict function's answer when its claim cannot be tested here (e.g. nothing hallucinated): the
# chapter says why and records no claim, so the scoreboard shows it as not run.
NOT_TESTED = "not tested"


def results_dir() -> Path:
    return Path(os.environ.get("TDA_RESULTS_DIR", REPO_ROOT / "book" / "executed" / "results"))


def _jsonable(value):
    """NumPy and torch scalars/arrays to plain Python; NaN to None (JSON has no NaN)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(name: str, data: dict) -> Path:
    """Write a notebook's headline numbers to ``<results_dir>/<name>.json`` atomically."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(_jsonable(data), indent=1, sort_keys=True))
    tmp.rename(path)
    return path


def claim(id: str, claim: str, paper: str, ours: str, verdict: str, rule: str, **extra) -> dict:
    """One row of the scoreboard: the paper's claim, its figure, ours, and the computed verdict."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"id": id, "claim": claim, "paper": paper, "ours": ours, "verdict": verdict, "rule": rule, **extra}


# The one number a claim turns on, on the paper's side and ours (the scoreboard's figure draws them
# side by side): ``metric`` and ``unit`` say what it is; ``paper`` is None where the paper gives no
# number; ``threshold`` (optional) is the line the claim's rule draws on this number (a necessary
# condition, not always the whole rule); ``note`` (optional) says how the paper's number was read.
HEADLINE_FIELDS = ("metric", "unit", "paper", "ours")
HEADLINE_OPTIONAL = ("threshold", "note")


def headline(metric: str, unit: str, ours: float | None, paper: float | None = None,
             threshold: float | None = None, note: str = "") -> dict | None:
    """A claim's headline number (see :data:`HEADLINE_FIELDS`), or None when ours is missing or
    not finite (nothing to draw: the scoreboard shows the row as text)."""
    def number(value):
        return None if value is None or not math.isfinite(float(value)) else float(value)

    if number(ours) is None:
        return None
    out = {"metric": metric, "unit": unit, "paper": number(paper), "ours": number(ours)}
    if number(threshold) is not None:
        out["threshold"] = number(threshold)
    if note:
        out["note"] = note
    return out


def verdict_from(parts_met: Sequence[bool]) -> str:
    """replicated if every part of a claim's rule holds, partly if some do, not replicated if none."""
    parts_met = [bool(p) for p in parts_met]
    if parts_met and all(parts_met):
        return "replicated"
    return "partly" if any(parts_met) else "not replicated"


def fmt(mean: float | None, std: float | None = None, scale: float = 100.0) -> str:
    """``"91.6 ± 1.2"`` (percent by default, as the papers' tables); a missing or NaN std (one
    seed) shows the mean alone, a missing or NaN mean ``"n/a"``."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return f"{mean * scale:.1f}"
    return f"{mean * scale:.1f} ± {std * scale:.1f}"
