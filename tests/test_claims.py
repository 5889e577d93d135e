"""The claims scoreboard (tda.claims) on hand-made result files, and the notebook order."""

import json

import pytest

from tda import claims as sb
from tda import notebooks as nbrun
from tda.results import claim


def _write(folder, name, data):
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _claim(cid, verdict="replicated", **kw):
    return claim(cid, kw.pop("text", f"statement of {cid}"), kw.pop("paper", "77.6"), kw.pop("ours", "0.81"),
                 verdict, kw.pop("rule", "ours orders the methods as the paper does"), **kw)


def test_gather_one_row_per_claim_in_order_with_not_run_rows(tmp_path):
    _write(tmp_path, "ftrace_methods", {"claims": [_claim("A5", "partly"), _claim("A1")], "mrr": 0.5})
    _write(tmp_path, "dda_beta", {"claims": [_claim("B3", "not replicated", ours=0.61)]})
    _write(tmp_path, "ftrace_saturation", {"claims": [_claim("A4", "not testable")]})  # a guard failed
    _write(tmp_path, "small_world", {"n_facts": 10})  # a result file without claims is fine
    rows = sb.gather_claims(tmp_path)
    assert [r["id"] for r in rows] == list(sb.EXPECTED_CLAIMS) == ["A1", "A2", "A3", "A4", "A5", "B1", "B2", "B3", "B4",
                                                                    "C1", "C2", "C3", "C4"]
    by_id = {r["id"]: r for r in rows}
    assert by_id["A1"]["verdict"] == "replicated" and by_id["A1"]["source"] == "ftrace_methods"
    assert by_id["A5"]["verdict"] == "partly" and by_id["A5"]["claim"] == "statement of A5"
    assert by_id["B3"]["ours"] == "0.61"  # a bare number is kept, as text
    assert by_id["B3"]["study"] == "DDA" and by_id["A1"]["study"] == "FTRACE"
    assert by_id["A4"]["verdict"] == "not testable" and by_id["A4"]["source"] == "ftrace_saturation"
    for cid in ("A2", "A3", "B1", "B2", "B4"):
        assert by_id[cid]["verdict"] == sb.NOT_RUN and by_id[cid]["source"] == ""
        assert by_id[cid]["claim"] == sb.EXPECTED_CLAIMS[cid][1]
    assert [r["verdict"] for r in rows].count(sb.NOT_RUN) == 9


def test_write_claims_is_a_list_and_is_not_read_back_as_input(tmp_path):
    _write(tmp_path, "ftrace_layers", {"claims": [_claim("A2")]})
    rows = sb.gather_claims(tmp_path)
    path = sb.write_claims(rows, tmp_path)
    assert path == tmp_path / "claims.json"
    data = json.loads(path.read_text())
    assert isinstance(data, list) and len(data) == len(sb.EXPECTED_CLAIMS)
    for row in data:
        assert {"id", "claim", "paper", "ours", "verdict"} <= set(row)
    assert sb.gather_claims(tmp_path) == rows  # claims.json itself is skipped
    assert not list(tmp_path.glob(".*.tmp"))


def test_empty_or_missing_folder_gives_all_not_run(tmp_path):
    assert {r["verdict"] for r in sb.gather_claims(tmp_path / "nowhere")} == {sb.NOT_RUN}
    assert {r["verdict"] for r in sb.gather_claims(tmp_path)} == {sb.NOT_RUN}


def test_default_folder_follows_tda_results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TDA_RESULTS_DIR", str(tmp_path))
    _write(tmp_path, "dda_main", {"claims": [_claim("B1")]})
    assert {r["id"]: r["verdict"] for r in sb.gather_claims()}["B1"] == "replicated"


@pytest.mark.parametrize("name, data, message", [
    ("broken", "{not json", r"broken\.json: not valid JSON"),
    ("alist", "[1, 2]", r"alist\.json: a result file must hold a JSON object"),
    ("notlist", {"claims": {"A1": "x"}}, r"notlist\.json: claims: must be a list"),
    ("notobj", {"claims": ["A1"]}, r"notobj\.json: claims\[0\]: each claim must be an object"),
    ("noverdict", {"claims": [{"id": "A1", "claim": "c", "paper": "p", "ours": "o", "rule": "r"}]},
     r"noverdict\.json: claims\[0\]\.verdict: missing"),
    ("norule", {"claims": [{"id": "A1", "claim": "c", "paper": "p", "ours": "o", "verdict": "partly"}]},
     r"norule\.json: claims\[0\]\.rule: missing"),
    ("badverdict", {"claims": [_claim("A1"), {**_claim("A2"), "verdict": "yes"}]},
     r"badverdict\.json: claims\[1\]\.verdict: 'yes' is not one of replicated, partly, not replicated"),
    ("emptyclaim", {"claims": [{**_claim("A1"), "claim": " "}]}, r"emptyclaim\.json: claims\[0\]\.claim: must be a non-empty string"),
    ("listours", {"claims": [{**_claim("A1"), "ours": [1, 2]}]}, r"listours\.json: claims\[0\]\.ours: must be"),
    ("emptyrule", {"claims": [{**_claim("A1"), "rule": ""}]}, r"emptyrule\.json: claims\[0\]\.rule: must be a non-empty"),
])
def test_malformed_result_files_name_the_file_and_the_field(tmp_path, name, data, message):
    _write(tmp_path, name, data)
    with pytest.raises(sb.ClaimsError, match=message):
        sb.gather_claims(tmp_path)


def test_a_claim_recorded_twice_is_an_error_naming_both_files(tmp_path):
    _write(tmp_path, "ftrace_checkpoints", {"claims": [_claim("A3")]})
    _write(tmp_path, "ftrace_saturation", {"claims": [_claim("A3", "partly")]})
    with pytest.raises(sb.ClaimsError, match=r"ftrace_saturation\.json: claims: claim A3 is also recorded by "
                                             r"ftrace_checkpoints\.json"):
        sb.gather_claims(tmp_path)


def test_notebook_order_follows_the_toc_with_claims_last(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in ("claims", "dda_main", "ftrace_methods", "ftrace_build", "small_world", "zz_extra"):
        (nbdir / f"{name}.ipynb").write_text("{}")
    toc = tmp_path / "_toc.yml"
    toc.write_text("""format: jb-book
root: book/intro
parts:
  - caption: A
    chapters:
      - file: book/executed/small_world
      - file: book/executed/claims
      - glob: book/executed/ftrace_build
      - glob: book/executed/ftrace_layers
      - glob: book/executed/ftrace_methods
  - caption: B
    chapters:
      - file: book/dda
      - file: book/executed/dda_main.ipynb
""")
    assert nbrun.notebook_order(toc, nbdir) == ["small_world", "ftrace_build", "ftrace_methods", "dda_main",
                                                "zz_extra", "claims"]


def _toc_entries(node):
    if isinstance(node, dict):
        yield from (node[k] for k in ("file", "glob") if isinstance(node.get(k), str))
        for value in node.values():
            yield from _toc_entries(value) if isinstance(value, (dict, list)) else ()
    elif isinstance(node, list):
        for value in node:
            yield from _toc_entries(value)


def test_the_real_toc_has_a_page_for_every_notebook_and_runs_claims_last():
    import fnmatch

    import yaml

    from tda.store import REPO_ROOT

    order = nbrun.notebook_order()
    assert order[-1] == "claims"
    assert sorted(order) == sorted(p.stem for p in nbrun.NOTEBOOK_DIR.glob("*.ipynb"))
    entries = [e.removesuffix(".ipynb") for e in _toc_entries(yaml.safe_load((REPO_ROOT / "_toc.yml").read_text()))]
    for name in order:
        assert any(fnmatch.fnmatch(f"book/executed/{name}", e) for e in entries), (
            f"notebooks/{name}.ipynb has no entry book/executed/{name} in _toc.yml, so it would not appear in the book")


def test_parameters_table_reads_every_notebooks_parameters_cell():
    """The table in "Running it yourself" (tda.claims' Sphinx directive) lists what the runner sees."""
    for name in nbrun.notebook_order():
        path = nbrun.notebook_path(name)
        rows = sb._parameter_cell(path)
        assert [r[0] for r in rows] == list(nbrun.notebook_parameters(path)), name
        assert all(default for _, default, _ in rows), name  # every default as written in the cell
    world = {r[0]: r for r in sb._parameter_cell(nbrun.notebook_path("small_world"))}
    assert world["world"][1] == '"default"' and world["world"][2].startswith("a world of notebooks/params.yml")


# ---- issue 16: the evidence behind a verdict, the quick profile's badge, claims not listed here ------------
@pytest.mark.parametrize("verdict, world, shown", [
    ("replicated", "quick", sb.INDICATIVE), ("partly", "quick", sb.INDICATIVE),
    ("not replicated", "quick", sb.INDICATIVE),  # not evidence against either
    ("replicated", "default", "replicated"), ("not replicated", "default", "not replicated"),
    ("replicated", None, "replicated"),  # a run that did not record its world is shown as computed
    (sb.NOT_RUN, "quick", sb.NOT_RUN), ("not testable", "quick", "not testable"),  # nothing was weighed
    ("a future verdict", "quick", "a future verdict"),
])
def test_badge_reads_indicative_for_every_computed_verdict_of_the_quick_world(verdict, world, shown):
    assert sb.badge(verdict, {"world": world, "seeds": 1, "queries": 15}) == shown


def test_badge_colours_cover_any_label():
    assert sb.badge_color("replicated") == sb.VERDICT_COLORS["replicated"]
    assert sb.badge_color(sb.INDICATIVE) == sb.BADGE_COLORS[sb.INDICATIVE]
    assert sb.badge_color("not testable") in (sb.VERDICT_COLORS.get("not testable"), sb.UNKNOWN_COLOR)
    assert sb.badge_color("never heard of") == sb.UNKNOWN_COLOR
    assert len({sb.BADGE_COLORS[sb.INDICATIVE], sb.UNKNOWN_COLOR, *sb.VERDICT_COLORS.values()}) == \
        len(sb.VERDICT_COLORS) + 2  # each badge tells itself apart by colour


def test_claim_evidence_reads_world_seeds_and_queries():
    comparisons = [{"a": "BM25", "b": "TracIn", "n": 15, "diff": 0.2},
                   {"a": "BM25", "b": "EMBED", "n": 16, "diff": 0.0}]
    part1 = {"world": "quick", "seeds": [0], "claims": []}
    assert sb.claim_evidence(part1, {**_claim("A1"), "comparisons": comparisons}) == \
        {"world": "quick", "seeds": 1, "queries": 16}
    nested = {**_claim("A4"), "part_a": {"n": 12, "diff": 0.1}, "part_b": {"n_x": 15, "n_y": 8, "diff": 0.2}}
    assert sb.claim_evidence({"world": "default", "seeds": [0, 1, 2]}, nested)["queries"] == 12
    assert sb.claim_evidence({"world": "default", "seed": 0}, _claim("A3"))["seeds"] == 1
    # nothing structured: the counts the chapter states in its "ours" text
    b1 = _claim("B1", ours="AUC %: DDA 32.4 ± 7.5, TracIn 76.0 ± 4.1 (3 seeds, 18 queries)")
    assert sb.claim_evidence({}, b1) == {"world": None, "seeds": 3, "queries": 18}
    a4 = _claim("A4", ours="MRR 0.800 on learned vs 0.590 on known queries")  # not "590 queries"
    assert sb.claim_evidence({"world": "quick"}, a4) == {"world": "quick", "seeds": None, "queries": None}
    own = {**_claim("C1"), "queries": 7, "comparisons": comparisons}  # the claim's own count wins
    assert sb.claim_evidence({"seeds": [0, 1]}, own) == {"world": None, "seeds": 2, "queries": 7}


def test_gather_marks_quick_verdicts_indicative_and_keeps_the_computed_verdict(tmp_path):
    comparisons = [{"a": "BM25", "b": "TracIn", "n": 15, "diff": 0.2}]
    _write(tmp_path, "ftrace_methods", {"world": "quick", "seeds": [0],
                                        "claims": [{**_claim("A1"), "comparisons": comparisons}]})
    _write(tmp_path, "dda_main", {"world": "default", "seeds": [0, 1, 2], "claims": [_claim("B1", "partly")]})
    by_id = {r["id"]: r for r in sb.gather_claims(tmp_path)}
    assert by_id["A1"]["verdict"] == "replicated" and by_id["A1"]["badge"] == sb.INDICATIVE
    assert by_id["A1"]["evidence"] == {"world": "quick", "seeds": 1, "queries": 15}
    assert by_id["B1"]["badge"] == "partly" and by_id["B1"]["evidence"]["seeds"] == 3
    assert by_id["A2"]["badge"] == sb.NOT_RUN and by_id["A2"]["evidence"] == {}
    written = json.loads(sb.write_claims(list(by_id.values()), tmp_path).read_text())
    assert {r["id"]: r["badge"] for r in written}["A1"] == sb.INDICATIVE


def test_claims_not_listed_here_follow_the_listed_ones(tmp_path):
    """A new chapter's claim (C1…) reaches the scoreboard before anyone edits EXPECTED_CLAIMS."""
    _write(tmp_path, "later", {"world": "default", "claims": [
        {**_claim("Z9", "not replicated")}, {**_claim("C7", "partly"), "study": "Part III (ours)"}]})
    rows = sb.gather_claims(tmp_path)
    assert [r["id"] for r in rows] == [*sb.EXPECTED_CLAIMS, "C7", "Z9"]  # in order of id, after the listed
    by_id = {r["id"]: r for r in rows}
    assert by_id["C7"]["study"] == "Part III (ours)" and by_id["Z9"]["study"] == sb.OTHER_STUDY
    assert by_id["Z9"]["verdict"] == "not replicated" and by_id["Z9"]["source"] == "later"


def test_a_verdict_with_a_colour_may_be_recorded_a_typo_may_not(tmp_path, monkeypatch):
    """A later part's verdict (Part III's "not testable", say) is accepted once the scoreboard has a colour for it."""
    _write(tmp_path, "later", {"claims": [{**_claim("A1"), "verdict": "inconclusive"}]})
    with pytest.raises(sb.ClaimsError, match=r"later\.json: claims\[0\]\.verdict: 'inconclusive' is not one of"):
        sb.gather_claims(tmp_path)
    monkeypatch.setitem(sb.VERDICT_COLORS, "inconclusive", "#56b4e9")
    row = sb.gather_claims(tmp_path)[0]
    assert row["verdict"] == row["badge"] == "inconclusive"  # not a rule's outcome: never "indicative"
    assert sb.NOT_RUN not in sb.recordable_verdicts()


# ---- issue 16: a claim's headline number (the scoreboard figure's bars) -----------------------------------------
HEAD = {"metric": "BM25's MRR minus the better of TracIn's and EMBED's", "unit": "MRR points", "paper": 13.26,
        "ours": -9.6}


def test_a_headline_is_kept_in_the_row_and_the_papers_side_may_be_null(tmp_path):
    _write(tmp_path, "ftrace_methods", {"claims": [{**_claim("A1"), "headline": {**HEAD, "threshold": 2.0}},
                                                   {**_claim("A5"), "headline": {**HEAD, "paper": None}},
                                                   {**_claim("A2"), "headline": None}]})  # none: no bars
    by_id = {r["id"]: r for r in sb.gather_claims(tmp_path)}
    assert by_id["A1"]["headline"] == {**HEAD, "threshold": 2.0}
    assert by_id["A5"]["headline"]["paper"] is None and by_id["A2"]["headline"] is None
    assert "headline" not in by_id["A3"]  # not run


@pytest.mark.parametrize("value, message", [
    ("9.6", r"\(claim A5\)\.headline: must be an object with fields metric, unit, paper, ours"),
    ({k: v for k, v in HEAD.items() if k != "ours"}, r"\(claim A5\)\.headline\.ours: missing"),
    ({k: v for k, v in HEAD.items() if k != "paper"}, r"\(claim A5\)\.headline\.paper: missing"),
    ({**HEAD, "metric": " "}, r"\(claim A5\)\.headline\.metric: must be a non-empty string"),
    ({**HEAD, "unit": 3}, r"\(claim A5\)\.headline\.unit: must be a non-empty string"),
    ({**HEAD, "ours": "9.6"}, r"\(claim A5\)\.headline\.ours: must be a finite number, got '9.6'"),
    ({**HEAD, "ours": None}, r"\(claim A5\)\.headline\.ours: must be a finite number, got None"),
    ({**HEAD, "ours": True}, r"\(claim A5\)\.headline\.ours: must be a finite number"),
    ({**HEAD, "paper": "77.6"}, r"\(claim A5\)\.headline\.paper: must be a finite number or null"),
    ({**HEAD, "threshold": [2]}, r"\(claim A5\)\.headline\.threshold: must be a finite number or null"),
    ({**HEAD, "note": 1}, r"\(claim A5\)\.headline\.note: must be a string"),
    ({**HEAD, "papr": 1.0}, r"\(claim A5\)\.headline\.papr: not a headline field"),
])
def test_malformed_headlines_name_the_file_the_claim_and_the_field(tmp_path, value, message):
    _write(tmp_path, "ftrace_methods", {"claims": [{**_claim("A1"), "headline": HEAD},
                                                   {**_claim("A5"), "headline": value}]})
    with pytest.raises(sb.ClaimsError, match=r"ftrace_methods\.json: claims\[1\] " + message):
        sb.gather_claims(tmp_path)


def test_json_infinity_is_not_a_headline_number(tmp_path):
    """Python's json writes NaN/Infinity unless told not to; a headline must not carry them."""
    bad = {**_claim("B1"), "headline": {**HEAD, "ours": 1.0, "paper": float("inf")}}
    (tmp_path / "dda_main.json").write_text(json.dumps({"claims": [bad]}))
    with pytest.raises(sb.ClaimsError, match=r"dda_main\.json: claims\[0\] \(claim B1\)\.headline\.paper"):
        sb.gather_claims(tmp_path)
