"""The scoreboard's rendering (tda.scoreboard) on fixture result files shaped as the chapters write them."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex

from tda import claims as sb
from tda import scoreboard
from tda.results import claim

A1_COMPARISONS = [{"a": "BM25", "b": "TracIn", "beats": True, "diff": 0.2, "margin": 0.02, "n": 15, "se": 0.09},
                  {"a": "BM25", "b": "EMBED", "beats": False, "diff": 0.0, "margin": 0.02, "n": 15, "se": 0.0}]


A1_HEADLINE = {"metric": "BM25's MRR minus the better of TracIn's and EMBED's", "unit": "MRR points",
               "paper": 13.26, "ours": -20.0, "threshold": 2.0}


def _fixture(folder, world="quick"):
    """Result files as a quick book writes them (fields trimmed), plus a Part III claim and odd values."""
    files = {
        "ftrace_methods": {"world": world, "seeds": [0], "claims": [
            {**claim("A1", "On TREx, BM25 beats both TracIn and EMBED.",
                     "MRR (%): BM25 77.6 ± 1.5, TracIn 48.6 ± 4.4, EMBED 64.3 ± 1.3 [2nd]",
                     "MRR (%): BM25 100.0 ± 0.0, TracIn 80.0 ± 0.0, EMBED 100.0 ± 0.0 (TREx analogue, "
                     "fine-tune-learned queries, 1 seeds)", "partly", "BM25 beats a method when ... " * 12),
             "comparisons": A1_COMPARISONS, "headline": A1_HEADLINE}]},
        "dda_main": {"world": world, "seeds": [0, 1, 2], "claims": [
            claim("B1", "DDA beats TracIn, TRAK and BM25 by a wide margin on hallucination tracing (AUC).",
                  "DDA 91.6% AUC (avg. of LLaMA2, Qwen2, Mistral) [paper]; TracIn, TRAK mostly 50-60% [seed]",
                  "AUC %: DDA 32.4 ± 7.5, TracIn 76.0 ± 4.1, TRAK 54.7 ± 3.5, BM25 75.5 ± 1.8, random 46.3 ± 1.7 "
                  "(3 seeds, 18 queries)", "not replicated", "replicated if DDA's mean AUC exceeds each ...")]},
        # a later part's claims (ids not listed here), a verdict not listed, and missing numbers
        "counterfactual_x": {"world": "default", "seeds": [0], "claims": [
            {"id": "X1", "study": "a later part", "claim": "The best MRR method has the best tail-patch score.",
             "paper": "—", "ours": 0.5, "verdict": "partly", "rule": "r <tag> & co",
             "headline": {"metric": "Spearman ρ of LDS against MRR", "unit": "ρ", "paper": None, "ours": -0.4}},
            {"id": "Q1", "claim": "A claim no table lists.", "paper": float("nan"), "ours": "nan",
             "verdict": "partly", "rule": "r"}]},
    }
    for name, data in files.items():
        (folder / f"{name}.json").write_text(json.dumps(data))
    rows = sb.gather_claims(folder)
    odd = next(r for r in rows if r["id"] == "Q1")
    odd["verdict"] = odd["badge"] = "not testable"  # as Part III records it (any verdict renders)
    return rows


class _Cells(HTMLParser):
    """Rows of the first table (``<tr>`` in ``<tbody>``), each a list of cell texts; badge spans apart."""

    def __init__(self):
        super().__init__()
        self.rows, self.badges, self._in_body, self._cell, self._badge = [], [], False, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tbody" and not self.rows:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = ""
        elif tag == "span" and "tda-badge" in (attrs.get("class") or ""):
            self._badge = {"style": attrs.get("style", ""), "text": ""}

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None
        elif tag == "span" and self._badge is not None:
            self.badges.append(self._badge)
            self._badge = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._badge is not None:
            self._badge["text"] += data


def _parse(text):
    parser = _Cells()
    parser.feed(text)
    return parser


def test_compact_table_one_short_row_per_claim_with_badge_and_evidence(tmp_path):
    rows = _fixture(tmp_path)
    table = _parse(scoreboard.compact_html(rows))
    assert len(table.rows) == len(rows) == len(sb.EXPECTED_CLAIMS) + 2
    assert [r[0].split()[0] for r in table.rows] == [r["id"] for r in rows]  # claim id first, in order
    assert all(len(r) == 4 for r in table.rows)
    by_id = {r[0].split()[0]: r for r in table.rows}
    # the quick world's verdicts are indicative; the rule's verdict and the evidence are under the badge
    assert by_id["A1"][3] == f"{sb.INDICATIVE}rule gives: partlyquick world · 1 seed · 15 queries"
    assert by_id["B1"][3] == f"{sb.INDICATIVE}rule gives: not replicatedquick world · 3 seeds · 18 queries"
    assert by_id["X1"][3] == "partlydefault world · 1 seed"
    assert by_id["A2"][3] == sb.NOT_RUN  # nothing to rest on
    # the compact row carries the headline, not the provenance tags or the evidence parenthesis
    assert by_id["A1"][1] == "MRR (%): BM25 77.6 ± 1.5, TracIn 48.6 ± 4.4, EMBED 64.3 ± 1.3"
    assert by_id["A1"][2] == "MRR (%): BM25 100.0 ± 0.0, TracIn 80.0 ± 0.0, EMBED 100.0 ± 0.0"
    assert all(len(cell) <= scoreboard.SHORT_LIMIT + 2 for r in table.rows for cell in r[1:3])
    compact = scoreboard.compact_html(rows)
    assert "BM25 beats a method" not in compact  # the rule is folded away
    assert '<a href="ftrace_methods.html"><b>A1</b></a>' in compact and "<b>A2</b>" in compact  # A2: no chapter
    colours = {b["text"]: b["style"] for b in table.badges}
    assert sb.BADGE_COLORS[sb.INDICATIVE] in colours[sb.INDICATIVE]
    assert sb.VERDICT_COLORS["partly"] in colours["partly"]
    assert sb.badge_color("not testable") in colours["not testable"]


def test_no_cell_shows_nan_or_none(tmp_path):
    rows = _fixture(tmp_path)
    for text in (scoreboard.compact_html(rows), scoreboard.details_html(rows)):
        cells = [c for r in _parse(text).rows for c in r] if "<details" not in text else \
            re.findall(r"<td>(.*?)</td>", text)
        assert cells
        assert not [c for c in cells if re.search(r"\b(nan|NaN|None|null)\b", c)], cells
    by_id = {r[0].split()[0]: r for r in _parse(scoreboard.compact_html(rows)).rows}
    assert by_id["Q1"][1] == by_id["Q1"][2] == scoreboard.MISSING
    assert by_id["A2"][1] == by_id["A2"][2] == scoreboard.MISSING  # not run: no figures


def test_text_is_escaped_and_details_hold_rules_and_chapter_links(tmp_path):
    rows = _fixture(tmp_path)
    details = scoreboard.details_html(rows)
    assert details.startswith('<details class="tda-scoreboard-details"><summary>') and details.endswith("</details>")
    assert "r &lt;tag&gt; &amp; co" in details and "<tag>" not in details
    assert '<a href="ftrace_methods.html">ftrace_methods</a>' in details
    assert "BM25 beats a method when" in details and "(TREx analogue, fine-tune-learned queries, 1 seeds)" in details
    assert details.count("<tr>") == len(rows) + 1  # the header and one row per claim


@pytest.mark.parametrize("text, short", [
    ("MRR (%): BM25 77.6 ± 1.5 [2nd]", "MRR (%): BM25 77.6 ± 1.5"),
    ("full 93.5, without debias 67.9 (AUC %) [seed]", "full 93.5, without debias 67.9"),
    ("0.81", "0.81"), (None, "—"), ("", "—"), (float("nan"), "—"), ("nan", "—"),
    ("(everything in parentheses)", "(everything in parentheses)"),  # never emptied
    ("word " * 40, ("word " * 22).strip() + " …"),  # cut at a word, within the limit
])
def test_shorten(text, short):
    assert scoreboard.shorten(text) == short


def test_evidence_text_and_summary_sentence():
    quick = {"world": "quick", "seeds": 1, "queries": 15}
    assert scoreboard.evidence_text(quick) == "quick world · 1 seed · 15 queries"
    assert scoreboard.evidence_text({"world": None, "seeds": 3, "queries": None}) == "3 seeds"
    assert scoreboard.evidence_text({}) == scoreboard.evidence_text(None) == "—"
    rows = [{"badge": "replicated"}, {"badge": "replicated"}, {"badge": "partly"}, {"badge": sb.NOT_RUN},
            {"badge": "not testable"}]
    assert scoreboard.summary_sentence(rows) == ("Of the 5 claims, 2 replicated, 1 replicated partly, 1 were not run "
                                                 "and 1 not testable.")
    assert scoreboard.summary_sentence([{"badge": sb.INDICATIVE}]) == \
        "Of the 1 claims, 1 have an indicative verdict only (quick profile)."


def _facecolours(ax):
    return [to_hex(p.get_facecolor()) for p in ax.patches]


def test_glance_figure_one_row_per_claim_paper_beside_ours_in_the_verdicts_colour(tmp_path):
    rows = _fixture(tmp_path)
    fig = scoreboard.glance_figure(rows)
    try:
        table = fig.axes[0]
        texts = [t.get_text() for t in table.texts]
        # one row per claim, in order: its id, and a badge in the badge's colour
        assert [t for t in texts if t in {r["id"] for r in rows}] == [r["id"] for r in rows]
        badges = [t for t in table.texts if t.get_bbox_patch() is not None]
        assert [t.get_text() for t in badges] == [r["badge"] for r in rows]
        for t in badges:
            assert to_hex(t.get_bbox_patch().get_facecolor()) == sb.badge_color(t.get_text())
        assert "rule gives: partly" in texts and "rule gives: not replicated" in texts
        # the claims with a headline get bars on their own axis: the paper's hollow, ours in the badge's colour
        bars = {ax.get_label(): ax for ax in fig.axes[1:]}
        assert list(bars) == ["claim A1", "claim X1"]
        a1 = bars["claim A1"]
        assert _facecolours(a1) == ["#ffffff", sb.badge_color(sb.INDICATIVE)]
        assert [p.get_width() for p in a1.patches] == [pytest.approx(13.26), pytest.approx(-20.0)]
        assert sorted(t.get_text() for t in a1.texts) == ["ours -20.0", "paper 13.3"]
        assert any(list(line.get_xdata()) == [2.0, 2.0] and line.get_linestyle() != "-" for line in a1.lines)  # rule
        assert any(list(line.get_xdata()) == [0, 0] for line in a1.lines)  # zero
        x1 = bars["claim X1"]  # the paper gives no number: one bar, ours, and a sentence for the paper's
        assert _facecolours(x1) == [sb.VERDICT_COLORS["partly"]] and [p.get_width() for p in x1.patches] == [-0.4]
        assert "paper: no number" in [t.get_text() for t in x1.texts]
        assert x1.get_xlim()[0] < -0.4 < 0 < x1.get_xlim()[1]
        # the rest keep their rows, with what stands in for the bars
        assert any(t.startswith("not run: no chapter has tested") for t in texts)
        assert any(t.startswith("no headline number recorded") for t in texts)  # B1: a chapter that records none
        assert any(t.startswith("not testable here") for t in texts)  # Q1
        assert f"{A1_HEADLINE['metric']} (MRR points)" in [t.replace("\n", " ") for t in texts]  # the metric, wrapped
        assert not [t for t in texts if re.search(r"\b(nan|None)\b", t)]
        path = scoreboard.save_figure(fig, tmp_path / "out")
        assert path.name == scoreboard.FIGURE_NAME and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert [p.name for p in path.parent.iterdir()] == [scoreboard.FIGURE_NAME]  # no temporary file left
        assert fig.get_size_inches()[0] * fig.dpi <= 800  # the book's content column, about 700 px
    finally:
        plt.close(fig)


@pytest.mark.parametrize("row, text", [
    ({"verdict": sb.NOT_RUN}, "not run: no chapter has tested this claim in this build"),
    ({"verdict": "not testable", "ours": "MRR 0.8; not testable here: the world failed its guard", "headline": {}},
     "not testable here: the world failed its guard"),
    ({"verdict": "not testable", "ours": "x"}, "not testable here"),
    ({"verdict": "partly", "ours": "x"}, "no headline number recorded (see the table)"),
    ({"verdict": "partly", "headline": A1_HEADLINE}, None),
])
def test_row_text_stands_in_for_the_bars(row, text):
    assert scoreboard.row_text(row) == text
