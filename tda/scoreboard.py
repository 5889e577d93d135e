"""The scoreboard as a reader meets it: one compact row per claim, the details folded away, one figure.

:func:`tda.claims.gather_claims` builds the rows; this module draws them, for the "What replicated"
page and the landing page:

- :func:`compact_html`: one short row per claim (claim, the paper's figure, ours, a verdict badge with
  the evidence it rests on), so every verdict fits on one screen at 1280 px;
- :func:`details_html`: the same claims with the full numbers and the rules, inside a ``<details>``
  element the reader opens when they want them;
- :func:`glance_figure`: every claim as one row of a figure — the number it turns on (its ``headline``,
  written by the claim's verdict function), the paper's beside ours as bars, coloured by the verdict — shown
  on the scoreboard page and pasted onto the landing page.

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

from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from . import plots
from .claims import INDICATIVE, NOT_RUN, badge_color
from .results import NOT_TESTABLE

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


def _number(value: float) -> str:
    """A headline number as the figure prints it: one decimal from 10 on, two below."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def row_text(row: Mapping) -> str | None:
    """What a claim's row of the figure says instead of bars (None when it has bars to draw): *not run*,
    *not testable* with its reason, or that the chapter recorded no headline number."""
    verdict = row.get("verdict") or NOT_RUN
    if verdict == NOT_RUN:
        return "not run: no chapter has tested this claim in this build"
    if verdict == NOT_TESTABLE:
        ours = _text(row.get("ours"))
        reason = ours.split("not testable here:", 1)[1].strip() if "not testable here:" in ours else ""
        return "not testable here" + (f": {shorten(reason, 62)}" if reason else "")
    if not isinstance(row.get("headline"), Mapping):
        return "no headline number recorded (see the table)"
    return None


def _bars(ax, row: Mapping, colour: str) -> None:
    """One claim's headline: the paper's number (hollow bar, top) above ours (filled in the verdict's
    colour, bottom), from zero on the row's own axis, each labelled; the rule's line dashed."""
    head = row["headline"]
    paper, ours, line = head.get("paper"), head["ours"], head.get("threshold")
    values = [v for v in (0.0, paper, ours, line) if v is not None]
    low, high = min(values), max(values)
    span = (high - low) or max(abs(high), 1.0)
    ax.set_xlim(low - (0.45 * span if low < 0 else 0.04 * span), high + 0.45 * span)
    ax.set_ylim(-0.65, 1.65)
    ax.set_axis_off()
    ax.axvline(0, color="#333333", linewidth=0.8)
    if line is not None:
        ax.axvline(line, color="#555555", linewidth=0.9, linestyle=(0, (2, 2)))
    zero = -ax.get_xlim()[0] / (ax.get_xlim()[1] - ax.get_xlim()[0])  # where 0 sits, as a fraction of the row
    for y, value, style, name in ((1, paper, {"facecolor": "white", "edgecolor": "#333333"}, "paper"),
                                  (0, ours, {"facecolor": colour, "edgecolor": colour}, "ours")):
        if value is None:  # written from zero into the wider side of the row
            ax.annotate(f"{name}: no number", (zero, y), xycoords=("axes fraction", "data"),
                        xytext=(3 if zero < 0.5 else -3, 0), textcoords="offset points", fontsize=7.5, va="center",
                        ha="left" if zero < 0.5 else "right", color="#555555")
            continue
        ax.barh(y, value, height=0.72, linewidth=0.9, label=name, **style)
        ax.annotate(f"{name} {_number(value)}", (value, y), xytext=(3 if value >= 0 else -3, 0),
                    textcoords="offset points", fontsize=7.5, va="center", ha="left" if value >= 0 else "right")


def glance_figure(rows: list[dict], title: str = "What replicated: the number each claim turns on, "
                                                 "the paper's beside ours"):
    """Every claim as one row: id and headline metric, the paper's number beside ours as bars on the
    row's own axis (units differ between claims), and the badge in the verdict's colour.

    Ours is filled in the badge's colour (:func:`tda.claims.badge_color`), the paper's hollow; a dashed
    line marks the rule's line on that number where the claim records one. A claim that was not run,
    is not testable here or recorded no headline keeps its row, with a sentence in place of bars
    (:func:`row_text`). Sized for the book's content column (about 700 px): 7.2 inches at 110 dpi.
    """
    plots.setup_style()
    n = max(len(rows), 1)
    head_h, row_h, width = 0.7, 0.56, 7.2
    height = head_h + row_h * n + 0.08
    fig = plots.plt.figure(figsize=(width, height), layout="none")
    table = fig.add_axes((0, 0, 1, 1))
    table.set_axis_off()
    table.set_xlim(0, 1)
    table.set_ylim(height, 0)  # inches from the top
    columns = {"claim": 0.008, "bars": 0.43, "verdict": 0.79}
    table.text(columns["claim"], 0.2, title, fontsize=11, fontweight="bold", va="center")
    table.text(columns["claim"], head_h - 0.14, "claim · the number it turns on", fontsize=8.5, fontweight="bold",
               va="center", color="#333333")
    table.legend(handles=[Patch(facecolor="white", edgecolor="#333333", label="paper"),
                          Patch(facecolor="#777777", label="ours (verdict colour)"),
                          Line2D([], [], color="#555555", linestyle=(0, (2, 2)), label="rule's line")],
                 loc="center left", bbox_to_anchor=(columns["bars"] - 0.01, 1 - (head_h - 0.14) / height), ncols=3,
                 fontsize=7.5, frameon=False, handlelength=1.4, handletextpad=0.4, columnspacing=0.8,
                 borderaxespad=0, borderpad=0)
    for i, row in enumerate(rows):
        top = head_h + i * row_h
        middle = top + row_h / 2
        if i % 2 == 0:
            table.axhspan(top, top + row_h, color="#f2f2f2", zorder=0)
        label = row.get("badge") or row.get("verdict") or NOT_RUN
        colour = badge_color(label)
        head = row.get("headline") if isinstance(row.get("headline"), Mapping) else {}
        table.text(columns["claim"], middle, _text(row.get("id")), fontsize=10, fontweight="bold", va="center")
        metric = f"{head['metric']} ({head['unit']})" if head else _text(row.get("claim"))
        table.text(columns["claim"] + 0.045, middle, _wrapped(metric, 40, 3), fontsize=8, va="center",
                   linespacing=1.1, color="#222222" if head else "#666666")
        text = row_text(row)
        if text is None:
            rect = (columns["bars"], 1 - (top + row_h - 0.04) / height, columns["verdict"] - columns["bars"] - 0.015,
                    (row_h - 0.08) / height)
            bars = fig.add_axes(rect, label=f"claim {row.get('id')}")
            _bars(bars, row, colour)
        else:
            table.text(columns["bars"], middle, _wrapped(text, 44, 2), fontsize=7.5, va="center", style="italic",
                       color="#555555", linespacing=1.1)
        computed = row.get("verdict")
        shifted = computed and computed != label  # the rule's own verdict goes under the badge
        table.text(columns["verdict"] + 0.008, middle - (0.1 if shifted else 0), label, fontsize=8,
                   fontweight="bold", color="white", va="center",
                   bbox={"boxstyle": "round,pad=0.3", "facecolor": colour, "edgecolor": "none"})
        if shifted:
            table.text(columns["verdict"] + 0.008, middle + 0.17, f"rule gives: {computed}", fontsize=7,
                       color="#444444", va="center")
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
