"""The "What replicated" scoreboard: every notebook's claims gathered into one table.

Each chapter notebook records the paper's claims it tests with :func:`tda.results.claim` and writes
them with :func:`tda.results.write_results` as a list ``claims`` in
``<results_dir>/<notebook>.json``. :func:`gather_claims` reads every such file and returns one row
per claim of the two papers (A1–A5 for FTRACE, B1–B4 for DDA) and of Part III's own (C1–C4), in that
order; a claim that no
notebook has produced yet is a ``"not run"`` row. Nothing in the table is typed by hand: the
statement, the paper's figure, ours and the verdict all come from the notebook that tested it. Only
the list of claim ids and their one-line statements (for the rows not yet run) live here.

A malformed result file stops the gathering with a :class:`ClaimsError` that names the file and the
field, e.g. ``ftrace_methods.json: claims[1].verdict: 'yes' is not one of ...``. A claim id this module
does not list is not an error: it is shown after the listed ones, so a new chapter's claims reach the
scoreboard before anyone edits this file.

Each row also carries the evidence its verdict rests on (:func:`claim_evidence`: the world the
chapter ran in, its seeds and queries) and the verdict as the scoreboard shows it (:func:`badge`):
a verdict computed in the quick profile reads ``"indicative (quick)"``. The scoreboard's HTML and
figure are drawn by :mod:`tda.scoreboard`.

The second half of the module is a small Sphinx extension (``extra_extensions: [tda.claims]`` in
``_config.yml``) for the pages that are generated when the book is built rather than typed: the
table of every notebook's parameters (``tda-notebook-parameters``), the list of the package's
modules for the API page (``tda-api``), and the launch buttons (Binder, Colab), which must open the
parameterised notebook in ``notebooks/`` rather than its executed copy in ``book/executed/``.
"""

from __future__ import annotations

import ast
import importlib
import io
import json
import math
import numbers
import pkgutil
import re
import tokenize
from pathlib import Path
from typing import Mapping, Sequence

import tda

from . import notebooks as nbrun
from .params import PARAMS_FILE, profile_names
from .results import HEADLINE_FIELDS, HEADLINE_OPTIONAL, NOT_TESTABLE, VERDICTS, results_dir as default_results_dir

# The claims of REFERENCES.md, in the order of the table: id -> (paper, one-line statement).
EXPECTED_CLAIMS: dict[str, tuple[str, str]] = {
    "A1": ("FTRACE", "On TREx, BM25 beats both TracIn and EMBED."),
    "A2": ("FTRACE", "For both TracIn and EMBED the best signal comes from the embedding layer."),
    "A3": ("FTRACE", "A single good checkpoint can match or beat averaging several."),
    "A4": ("FTRACE", "Gradient saturation: TracIn over checkpoints where a fact is already learned has "
                     "little signal; checkpoints from before it was learned do better."),
    "A5": ("FTRACE", "On novel synthetic facts TracIn beats BM25 and EMBED."),
    "B1": ("DDA", "DDA beats TracIn, TRAK and BM25 by a wide margin on hallucination tracing (AUC)."),
    "B2": ("DDA", "Removing debias hurts far more than removing denoise; both help."),
    "B3": ("DDA", "AUC rises with beta up to about 0.4 and then stays flat."),
    "B4": ("DDA", "DDA's accuracy holds across model sizes."),
    # Part III's own claims (tda.experiments.counterfactual.claims): counterfactual tests of Parts I and II.
    "C1": ("Part III (ours)", "The method that ranks proponents best (MRR) also has the best tail-patch score."),
    "C2": ("Part III (ours)", "Removing DDA's top-k training documents removes more hallucinations than removing "
                              "TracIn's, TRAK's or BM25's top-k."),
    "C3": ("Part III (ours)", "LDS orders Part I's methods as MRR does."),
    "C4": ("Part III (ours)", "LDS orders Part II's methods as AUC does."),
}
NOT_RUN = "not run"
# Colour-blind-safe verdict colours (the seaborn "colorblind" palette's green, orange, red, pink; grey).
VERDICT_COLORS = {"replicated": "#029e73", "partly": "#de8f05", "not replicated": "#d55e00",
                  NOT_TESTABLE: "#cc78bc", NOT_RUN: "#949494"}
REQUIRED_FIELDS = ("id", "claim", "paper", "ours", "verdict", "rule")
OUTPUT_NAME = "claims"  # this module's own output, <results_dir>/claims.json, is never read as input


class ClaimsError(ValueError):
    """A result file is not valid JSON, or its ``claims`` list is malformed."""


def _require_fields(where: str, item, fields: Sequence[str], noun: str, builder: str, each: bool = False) -> None:
    """``item`` must be an object holding every name in ``fields``: else an error naming ``where``,
    the field, and the function that builds a valid one (``each``: "each claim must be ...", for
    the items of a list)."""
    if not isinstance(item, dict):
        lead = f"each {noun} must" if each else "must"
        raise ClaimsError(f"{where}: {lead} be an object with fields {', '.join(fields)} (build it with {builder}), "
                          f"got {type(item).__name__}")
    for field in fields:
        if field not in item:
            raise ClaimsError(f"{where}.{field}: missing (a {noun} needs {', '.join(fields)}; build it with {builder})")


def _check_claim(path: Path, index: int, item) -> dict:
    where = f"{path}: claims[{index}]"
    _require_fields(where, item, REQUIRED_FIELDS, "claim", "tda.results.claim", each=True)
    for field in REQUIRED_FIELDS:
        value = item[field]
        if field in ("paper", "ours") and isinstance(value, numbers.Real) and not isinstance(value, bool):
            continue  # a bare number is fine for the paper's figure and ours
        if not isinstance(value, str) or (field in ("id", "claim", "verdict", "rule") and not value.strip()):
            raise ClaimsError(f"{where}.{field}: must be a non-empty string, got {value!r}")
    if item["verdict"] not in recordable_verdicts():
        raise ClaimsError(f"{where}.verdict: {item['verdict']!r} is not one of {', '.join(recordable_verdicts())}")
    if item.get("headline") is not None:
        _check_headline(f"{where} (claim {item['id']}).headline", item["headline"])
    return item


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_headline(where: str, headline) -> None:
    """A claim's optional ``headline`` (``tda.results.headline``): ``metric`` and ``unit`` non-empty
    strings, ``ours`` a finite number, ``paper`` and ``threshold`` a finite number or null, ``note`` a
    string; no other field (a typo would otherwise go unseen)."""
    _require_fields(where, headline, HEADLINE_FIELDS, "headline", "tda.results.headline")
    unknown = sorted(set(headline) - set(HEADLINE_FIELDS) - set(HEADLINE_OPTIONAL))
    if unknown:
        raise ClaimsError(f"{where}.{unknown[0]}: not a headline field (known: "
                          f"{', '.join(HEADLINE_FIELDS + HEADLINE_OPTIONAL)})")
    for field in ("metric", "unit"):
        if not isinstance(headline[field], str) or not headline[field].strip():
            raise ClaimsError(f"{where}.{field}: must be a non-empty string, got {headline[field]!r}")
    if not _is_number(headline["ours"]):
        raise ClaimsError(f"{where}.ours: must be a finite number, got {headline['ours']!r}")
    for field in ("paper", "threshold"):
        value = headline.get(field)
        if value is not None and not _is_number(value):
            raise ClaimsError(f"{where}.{field}: must be a finite number or null, got {value!r}")
    if not isinstance(headline.get("note", ""), str):
        raise ClaimsError(f"{where}.note: must be a string, got {headline['note']!r}")


def recordable_verdicts() -> tuple[str, ...]:
    """The verdicts a result file may record: ``tda.results.VERDICTS``, and any other verdict the
    scoreboard has a colour for in :data:`VERDICT_COLORS` (e.g. a later part's), except ``not run``."""
    return tuple(dict.fromkeys([*VERDICTS, *(v for v in VERDICT_COLORS if v != NOT_RUN)]))


def read_claims(path: str | Path) -> list[dict]:
    """The checked ``claims`` of one result file (``[]`` if it records none)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ClaimsError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ClaimsError(f"{path}: a result file must hold a JSON object, got {type(data).__name__}")
    claims = data.get("claims", [])
    if not isinstance(claims, list):
        raise ClaimsError(f"{path}: claims: must be a list of claim objects, got {type(claims).__name__}")
    rows = []
    for i, item in enumerate(claims):
        row = {k: (str(v) if k in ("paper", "ours") else v) for k, v in _check_claim(path, i, item).items()}
        row["evidence"] = claim_evidence(data, row)
        row["badge"] = badge(row["verdict"], row["evidence"])
        rows.append({**row, "source": path.stem})
    return rows


def gather_claims(results_dir: str | Path | None = None) -> list[dict]:
    """One row per claim A1–A5, B1–B4, C1–C4: the notebooks' own rows, and ``"not run"`` for the rest.

    Every row has ``id, study, claim, paper, ours, verdict, rule, source, evidence, badge``
    (``source`` is the notebook that tested the claim, empty if none did) plus any extra fields the
    notebook recorded, e.g. ``headline`` (``tda.results.headline``: the one number the claim turns on,
    the paper's and ours, which the scoreboard's figure draws; checked when present). Claims whose id
    is not in :data:`EXPECTED_CLAIMS` follow the listed ones in order of id, with the ``study`` the notebook recorded (else ``"other"``). Two notebooks recording
    the same claim is an error: the scoreboard has one verdict per claim.
    """
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    found: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.stem == OUTPUT_NAME or path.name.startswith("."):
            continue
        for row in read_claims(path):
            if row["id"] in found:
                raise ClaimsError(f"{path}: claims: claim {row['id']} is also recorded by "
                                  f"{found[row['id']]['source']}.json; each claim has one verdict, from one notebook")
            found[row["id"]] = row
    rows = []
    for cid, (study, statement) in EXPECTED_CLAIMS.items():
        if cid in found:
            rows.append({"study": study, **found[cid]})
        else:
            rows.append({"id": cid, "study": study, "claim": statement, "paper": "", "ours": "",
                         "verdict": NOT_RUN, "rule": "", "source": "", "evidence": {}, "badge": NOT_RUN})
    for cid in sorted(set(found) - set(EXPECTED_CLAIMS)):
        rows.append({**found[cid], "study": found[cid].get("study") or OTHER_STUDY})
    return rows


def write_claims(rows: list[dict], results_dir: str | Path | None = None) -> Path:
    """Write the table to ``<results_dir>/claims.json`` (a list of row objects), atomically."""
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{OUTPUT_NAME}.json"
    tmp = folder / f".{OUTPUT_NAME}.json.tmp"
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.rename(path)
    return path


# --------------------------------------------------------------------------------------------------
# The evidence behind a verdict, and the verdict as the scoreboard shows it.
# --------------------------------------------------------------------------------------------------

OTHER_STUDY = "other"  # the study of a claim id not in EXPECTED_CLAIMS that records none
INDICATIVE = "indicative (quick)"
# Worlds of notebooks/params.yml whose runs show the method, not the replication (params.yml says of
# the quick world: "Its numbers show the method, not the replication").
QUICK_WORLDS = frozenset({"quick"})
# The outcomes of a chapter's rule ("not run" and "not testable" are not: nothing was weighed).
COMPUTED_VERDICTS = frozenset({"replicated", "partly", "not replicated"})
# The badge that is not a computed verdict gets its own colour (purple: apart from the verdicts' green,
# orange, red, grey and light blue for colour-blind readers); VERDICT_COLORS holds the verdicts'.
BADGE_COLORS = {INDICATIVE: "#8c6bb1"}
UNKNOWN_COLOR = "#5f5f5f"  # a verdict no table here lists still gets a badge, in dark grey
# "3 seeds", "18 queries", "18 hallucinated queries" in a claim's *ours* text (not "0.590 on known queries")
_SEEDS_TEXT = re.compile(r"(?<![\d.])(\d+) seeds?\b")
_QUERIES_TEXT = re.compile(r"(?<![\d.])(\d+) (?:\w+ )?quer(?:y|ies)\b")


def _paired_counts(value, depth: int = 0):
    """The ``n`` of every comparison record (a dict with ``n`` and ``diff``) inside a claim's fields."""
    if depth > 3:
        return
    if isinstance(value, Mapping):
        if isinstance(value.get("n"), int) and "diff" in value:
            yield value["n"]
        for v in value.values():
            yield from _paired_counts(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _paired_counts(v, depth + 1)


def claim_evidence(data: Mapping, row: Mapping) -> dict:
    """What a claim's verdict rests on: ``{"world", "seeds", "queries"}`` (``None`` where not recorded).

    ``data`` is the chapter's whole result file, ``row`` the claim. ``world`` is the file's ``world``
    (the profile's scale: ``quick`` or ``default``). ``seeds``: the number of the file's ``seeds`` (or 1
    for a single ``seed``), else the "N seeds" the claim's *ours* text states. ``queries``: the claim's own
    ``queries``/``n_queries`` field, else the largest paired count ``n`` among its comparison records
    (Part I's rules compare methods on the same queries), else the "N queries" its *ours* text states.
    """
    world = data.get("world") if isinstance(data.get("world"), str) else None
    seeds = data.get("seeds")
    if isinstance(seeds, list):
        n_seeds = len(seeds)
    elif isinstance(data.get("seed"), int):
        n_seeds = 1
    else:
        found = _SEEDS_TEXT.search(str(row.get("ours", "")))
        n_seeds = int(found.group(1)) if found else None
    queries = next((row[k] for k in ("queries", "n_queries") if isinstance(row.get(k), int)), None)
    if queries is None:
        queries = max(_paired_counts({k: v for k, v in row.items() if k not in REQUIRED_FIELDS}), default=None)
    if queries is None:
        found = _QUERIES_TEXT.search(str(row.get("ours", "")))
        queries = int(found.group(1)) if found else None
    return {"world": world, "seeds": n_seeds, "queries": queries}


def badge(verdict: str, evidence: Mapping) -> str:
    """The verdict as the scoreboard shows it: ``"indicative (quick)"`` for a quick-profile verdict.

    The rule: a verdict a chapter's rule computed (one of :data:`COMPUTED_VERDICTS`) whose evidence
    comes from a world in :data:`QUICK_WORLDS` is shown as :data:`INDICATIVE`; every other verdict
    (the default world's, ``not run``, a verdict this module does not list, a run whose world was not
    recorded) is shown as it is. The quick world is the classroom scale: Part I runs one seed on a few
    dozen queries, where methods sit at the MRR ceiling (BM25 and EMBED at 1.000), and Part II trains on
    150 documents. Its "replicated" is not evidence for a claim, and its "not replicated" is not evidence
    against, so neither is shown as a verdict. The computed verdict stays in the row (``verdict``) and
    is shown beside the badge.
    """
    if verdict in COMPUTED_VERDICTS and evidence.get("world") in QUICK_WORLDS:
        return INDICATIVE
    return verdict


def badge_color(label: str) -> str:
    """The colour of a badge: the verdict's, the indicative badge's, else dark grey (never an error)."""
    return VERDICT_COLORS.get(label) or BADGE_COLORS.get(label) or UNKNOWN_COLOR


# --------------------------------------------------------------------------------------------------
# Sphinx extension: the book's generated pages (loaded through `extra_extensions` in _config.yml).
# --------------------------------------------------------------------------------------------------

def _parameter_cell(path: Path) -> list[tuple[str, str, str]]:
    """(name, default as written, trailing comment) for each assignment of a notebook's parameters cell."""
    import nbformat  # with jupyter-book and sphinx below: the book's optional dependencies

    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    source = cell.source
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    out.append((t.id, ast.get_source_segment(source, node.value) or "",
                                comments.get(node.end_lineno, "")))
    return out


def _table(header: list[str], rows: list[list], widths: list[int]):
    """A docutils table; a cell is a str (plain text) or a node."""
    from docutils import nodes

    table = nodes.table(classes=["tda-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths:
        group += nodes.colspec(colwidth=w)

    def row_of(cells):
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += cell if isinstance(cell, nodes.Node) else nodes.paragraph(text=str(cell))
            row += entry
        return row

    head = nodes.thead()
    head += row_of(header)
    body = nodes.tbody()
    for cells in rows:
        body += row_of(cells)
    group += head
    group += body
    return table


def _literal(text: str):
    from docutils import nodes

    para = nodes.paragraph()
    if text:
        para += nodes.literal(text=text)
    return para


def _make_directives():
    from docutils import nodes
    from sphinx import addnodes
    from sphinx.util.docutils import SphinxDirective

    class NotebookParameters(SphinxDirective):
        """Table of every notebook's parameters: default, each profile's value, the cell's comment."""

        has_content = False

        def run(self):
            self.env.note_dependency(str(PARAMS_FILE))
            profiles = profile_names()
            header = ["notebook", "parameter", "default (in the notebook)",
                      *[f"profile {p}" for p in profiles], "meaning"]
            rows = []
            for name in nbrun.notebook_order():
                path = nbrun.notebook_path(name)
                self.env.note_dependency(str(path))
                resolved = {p: nbrun.resolve_parameters(name, p) for p in profiles}
                docname = f"book/executed/{name}"
                for i, (param, default, comment) in enumerate(_parameter_cell(path)):
                    if i == 0 and docname in self.env.found_docs:
                        link = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget="/" + docname,
                                                     refexplicit=True, refdoc=self.env.docname)
                        link += nodes.literal(text=name)
                        first = nodes.paragraph()
                        first += link
                    else:
                        first = _literal(name) if i == 0 else ""
                    values = [_literal(repr(resolved[p][param])) if param in resolved[p] else "—" for p in profiles]
                    rows.append([first, _literal(param), _literal(default), *values, comment])
            return [_table(header, rows, [12, 12, 16, *[12] * len(profiles), 30])]

    class ApiModules(SphinxDirective):
        """``automodule`` for every module of the package, one section each, found by walking it."""

        has_content = False

        def run(self):
            from docutils.statemachine import StringList
            from sphinx.util.nodes import nested_parse_with_titles

            names = ["tda"] + sorted(m.name for m in pkgutil.walk_packages(tda.__path__, "tda.")
                                     if not m.name.rsplit(".", 1)[-1].startswith("_"))
            out = []
            for name in names:
                module = importlib.import_module(name)
                if getattr(module, "__file__", None):
                    self.env.note_dependency(module.__file__)
                section = nodes.section(ids=[nodes.make_id(f"module-section-{name}")], names=[name])
                section += nodes.title(text=name)
                # :ignore-module-all: documents what a module defines, not what it re-exports (a
                # package's __all__), so every object is described once, in its own module.
                content = StringList([f".. automodule:: {name}", "   :members:", "   :ignore-module-all:", ""],
                                     source="tda-api")
                nested_parse_with_titles(self.state, content, section)
                out.append(section)
            return out

    return NotebookParameters, ApiModules


def _launch_from_sources(app, pagename, templatename, context, doctree) -> None:
    """Point Binder/Colab buttons of ``book/executed/NAME`` at ``notebooks/NAME.ipynb`` in the repository.

    Only links that leave the site are changed; the download button keeps the executed notebook.
    """
    def fix(item):
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "url" and isinstance(value, str) and value.startswith(("http://", "https://")):
                    item[key] = value.replace("book/executed/", "notebooks/")
                else:
                    fix(value)
        elif isinstance(item, list):
            for value in item:
                fix(value)

    if pagename.startswith("book/executed/"):
        fix(context.get("header_buttons", []))


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated inline scripts from a page's head.

    With Jupyter Book 1.0.4 / Sphinx 7.4 the inline configuration scripts of sphinx-thebe and
    sphinx-togglebutton are emitted twice (once with filename None, once with "", so Sphinx does
    not merge them), and the second ``const THEBE_JS_URL`` is a JavaScript SyntaxError on every page.
    """
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", str(script)) or "",  # None and "" both mean "inline"
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    if "script_files" in context:
        context["script_files"] = kept


def setup(app):
    """Sphinx entry point: the directives, the launch-button paths, one copy of each script."""
    parameters, api = _make_directives()
    app.add_directive("tda-notebook-parameters", parameters)
    app.add_directive("tda-api", api)
    app.connect("html-page-context", _launch_from_sources, priority=900)  # after the theme adds them
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
