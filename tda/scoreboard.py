"""The scoreboard as a reader meets it: one compact row per claim, the details folded away, one figure.

:func:`tda.claims.gather_claims` builds the rows; this module draws them, for the "What replicated"
page and the landing page:

- :func:`compact_html`: one short row per claim (claim, the paper's figure, ours, a verdict badge with
  the evidence it rests on), so every verdict fits on one screen at 1280 px;
- :func:`details_html`: the same claims with the full numbers and the rules, inside a ``<details>``
  element the reader opens when they want them;
- :func:`glance_figure`: every claim as one line of a figure — the paper's figure beside ours, the badge
  in the verdict's colour — shown on the scoreboard page and pasted onto the landing page.

Everything here renders any row :func:`~tda.claims.gather_claims` returns: any verdict string (an
unlisted one gets a dark-grey badge), any claim id, missing numbers (shown as "—", never "nan").
"""

from __future__ import annotations

import html
import math
import re
import textwrap
from pathlib import Path
from typing import Mapping

from . import plots
from .claims import INDICATIVE, NOT_RUN, badge_color

MISSING = "—"
SHORT_LIMIT = 110  # characters of the paper's / our figure in a compact row (the full text is in the details)
# Trailing provenance tags ("[2nd]", "[paper]") and a trailing parenthesis that restates the evidence
# ("(TREx analogue, fine-tune-learned queries, 1 seeds)"): the compact row shows the evidence apart.
_TRAILING_TAG = re.compile(r"\s*(\[[^\[\]]*\]|\([^()]*\))\s*$")
CSS_CLASS = "tda-scoreboard"
DETAILS_CLASS = "tda-scoreboard-details"
# The figure's file beside the results: the landing page (book/intro.md) shows executed/results/scoreboard.png.
FIGURE_NAME = "scoreboard.png"


def _text(value) -> str:
    """A cell's text: ``None``, NaN and empty as "—"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    text = str(value).strip()
    return text if text and text.lower() != "nan" else MISSING


def shorten(text, limit: int = SHORT_LIMIT) -> str:
    """The headline of a paper's or our figure: trailing tags and parentheses dropped, cut at a word."""
    text = _text(text)
    while True:
        stripped = _TRAILING_TAG.sub("", text)
        if stripped == text or not stripped:
            break
        text = stripped
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def evidence_text(evidence: Mapping | None) -> str:
    """``"quick world · 1 seed · 15 queries"``; the parts not recorded are left out ("—" if none is)."""
    evidence = evidence or {}
    parts = []
    if evidence.get("world"):
        parts.append(f"{evidence['world']} world")
    for key, one, many in (("seeds", "seed", "seeds"), ("queries", "query", "queries")):
        n = evidence.get(key)
        if isinstance(n, int):
            parts.append(f"{n} {one if n == 1 else many}")
    return " · ".join(parts) or MISSING


def _badge_span(label: str) -> str:
    return (f'<span class="tda-badge" style="background-color: {badge_color(label)}">'
            f"{html.escape(label)}</span>")


def _chapter_link(source: str) -> str:
    return f'<a href="{html.escape(source)}.html">{html.escape(source)}</a>' if source else MISSING


def _verdict_cell(row: Mapping) -> str:
    label = row.get("badge") or row.get("verdict") or NOT_RUN
    lines = [_badge_span(label)]
    if label != row.get("verdict") and row.get("verdict"):
        lines.append(f'<span class="tda-small">rule gives: {html.escape(row["verdict"])}</span>')
    if row.get("verdict") != NOT_RUN:
        lines.append(f'<span class="tda-small">{html.escape(evidence_text(row.get("evidence")))}</span>')
    return "<br>".join(lines)


def compact_html(rows: list[dict]) -> str:
    """One compact row per claim: id and statement, the paper's figure, ours, badge and evidence."""
    head = "".join(f"<th>{h}</th>" for h in ("claim", "paper", "ours", "verdict"))
    body = []
    for row in rows:
        study = html.escape(_text(row.get("study")))
        cid = f'<b>{html.escape(_text(row.get("id")))}</b>'
        if row.get("source"):  # the id leads to the chapter that tested the claim
            cid = f'<a href="{html.escape(row["source"])}.html">{cid}</a>'
        claim = (f'{cid} <span class="tda-small">{study}</span><br>'
                 f'{html.escape(_text(row.get("claim")))}')
        body.append(f'<tr data-claim="{html.escape(_text(row.get("id")))}"><td>{claim}</td>'
                    f"<td>{html.escape(shorten(row.get('paper')))}</td>"
                    f"<td>{html.escape(shorten(row.get('ours')))}</td><td>{_verdict_cell(row)}</td></tr>")
    return (f'<table class="{CSS_CLASS}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def details_html(rows: list[dict], summary: str = "The rules and the full numbers, claim by claim") -> str:
    """Every claim with its full figures, the rule and the chapter, folded in a ``<details>`` element."""
    head = "".join(f"<th>{h}</th>" for h in ("claim", "paper's result", "our result", "rule",
                                              "verdict (rule)", "evidence", "chapter"))
    body = "".join(
        f'<tr><td><b>{html.escape(_text(r.get("id")))}</b></td><td>{html.escape(_text(r.get("paper")))}</td>'
        f'<td>{html.escape(_text(r.get("ours")))}</td><td>{html.escape(_text(r.get("rule")))}</td>'
        f'<td>{html.escape(_text(r.get("verdict")))}</td><td>{html.escape(evidence_text(r.get("evidence")))}</td>'
        f'<td>{_chapter_link(r.get("source") or "")}</td></tr>' for r in rows)
    return (f'<details class="{DETAILS_CLASS}"><summary>{html.escape(summary)}</summary>'
            f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>')


def summary_sentence(rows: list[dict]) -> str:
    """``"Of the 9 claims, 3 replicated, 1 partly, ..."``: the badges counted, in order of first appearance."""
    counts: dict[str, int] = {}
    for row in rows:
        label = row.get("badge") or row.get("verdict") or NOT_RUN
        counts[label] = counts.get(label, 0) + 1
    words = {"partly": "replicated partly", "not replicated": "did not replicate", NOT_RUN: "were not run",
             INDICATIVE: "have an indicative verdict only (quick profile)"}
    parts = [f"{n} {words.get(label, label)}" for label, n in counts.items()]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Of the {len(rows)} claims, {listed}."


def _wrapped(text: str, width: int, lines: int) -> str:
    out = textwrap.wrap(text, width) or [MISSING]
    if len(out) > lines:
        out = out[:lines]
        out[-1] = out[-1][: width - 2].rstrip(" ,;") + " …"
    return "\n".join(out)


def glance_figure(rows: list[dict], title: str = "What replicated: the paper's figure beside ours"):
    """Every claim as one line: id, the paper's figure, ours, and a badge in the verdict's colour.

    Sized for the book's content column (about 700 px): 7.2 inches at the book's 110 dpi, so that its
    7.5-point text is shown at about 10 px; the figures are abridged to three lines each (:func:`shorten`).
    """
    n = max(len(rows), 1)
    fig, ax = plots.figure(width=7.2, height=0.75 + 0.5 * n)
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(n - 0.5, -1.0)
    columns = {"claim": 0.0, "paper": 0.065, "ours": 0.415, "verdict": 0.77}
    for name, x in columns.items():
        ax.text(x, -0.75, name, fontsize=8.5, fontweight="bold", va="center")
    for i, row in enumerate(rows):
        if i % 2 == 0:
            ax.axhspan(i - 0.5, i + 0.5, color="#f2f2f2", zorder=0)
        label = row.get("badge") or row.get("verdict") or NOT_RUN
        ax.text(0.0, i, _text(row.get("id")), fontsize=9, fontweight="bold", va="center")
        for column in ("paper", "ours"):
            ax.text(columns[column], i, _wrapped(shorten(row.get(column), 115), 39, 3), fontsize=7.5, va="center",
                    linespacing=1.15)
        computed = row.get("verdict")
        shifted = computed and computed != label  # the rule's own verdict goes under the badge
        ax.text(columns["verdict"] + 0.008, i - (0.14 if shifted else 0), label, fontsize=7.5, fontweight="bold",
                color="white", va="center",
                bbox={"boxstyle": "round,pad=0.3", "facecolor": badge_color(label), "edgecolor": "none"})
        if shifted:
            ax.text(columns["verdict"] + 0.008, i + 0.28, f"rule gives: {computed}", fontsize=6.5, color="#444444",
                    va="center")
    ax.set_title(title, loc="left", fontsize=10)
    return fig


def save_figure(fig, folder: str | Path, name: str = FIGURE_NAME) -> Path:
    """Write ``fig`` to ``<folder>/<name>`` as PNG, whole or not at all (a temporary file renamed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = folder / f".{name}.tmp"
    fig.savefig(tmp, format="png", bbox_inches="tight")
    tmp.rename(path)
    return path
