"""The runner's checks on params.yml and notebook parameters, and real runs of the quick profile."""

import json
import re
from pathlib import Path

import pytest
import yaml

from tda import notebooks as nbrun
from tda.params import ParamsError, load_params


def test_every_notebook_has_a_parameters_cell_and_no_outputs():
    import nbformat

    paths = sorted(nbrun.NOTEBOOK_DIR.glob("*.ipynb"))
    assert paths
    for path in paths:
        assert nbrun.notebook_parameters(path), path
        nb = nbformat.read(str(path), as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path} has outputs"


def test_every_profile_resolves_for_every_notebook():
    profiles = load_params()["profiles"]
    assert {"quick", "default"} <= set(profiles)
    for profile in profiles:
        for path in nbrun.NOTEBOOK_DIR.glob("*.ipynb"):
            nbrun.resolve_parameters(path.stem, profile)


PREAMBLE = "pretrain: {tiny: {epochs: 1}}\nworlds: {quick: {world: {}}}\n"


@pytest.mark.parametrize("text, message", [
    ("profiles:\n  quick: 3", "profile 'quick' must be a mapping"),
    ("profiles:\n  quick:\n    small_world: 5", "section 'small_world' must be a mapping"),
    ("profiles:\n  quick:\n    no_such_notebook: {a: 1}", "names notebook 'no_such_notebook', which does not exist"),
    ("profiles:\n  quick:\n    small_world: {sizez: [tiny]}", "unknown parameter\\(s\\) \\['sizez'\\]"),
])
def test_malformed_profiles(tmp_path, text, message):
    path = tmp_path / "params.yml"
    path.write_text(PREAMBLE + text)
    with pytest.raises(ParamsError, match=message):
        nbrun.resolve_parameters("small_world", "quick", params_file=path)


def test_unknown_profile_and_command_line_parameter():
    with pytest.raises(ParamsError, match="no profile 'fast'"):
        nbrun.resolve_parameters("small_world", "fast")
    with pytest.raises(ParamsError, match="command line.*'colour'"):
        nbrun.resolve_parameters("small_world", "quick", {"colour": "red"})
    with pytest.raises(ParamsError, match="no notebook named 'nope'"):
        nbrun.resolve_parameters("nope", "quick")


def test_cli_reports_bad_parameter_without_running(capsys):
    assert nbrun.main(["run", "small_world", "--profile", "quick", "-p", "colour", "red"]) == 2
    assert "unknown parameter" in capsys.readouterr().err


def test_unknown_world_stops_before_running_and_names_the_known_worlds(capsys, tmp_path):
    """``python -m tda.notebooks run small_world --profile quick -p world nosuch``: no silent fallback."""
    assert nbrun.main(["run", "small_world", "--profile", "quick", "-p", "world", "nosuch",
                       "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown world 'nosuch'; known worlds: quick, default" in err
    assert not list(tmp_path.iterdir())  # nothing was executed
    with pytest.raises(ParamsError, match="known worlds: quick, default"):
        nbrun.resolve_parameters("dda_main", "default", {"world": "nosuch"})


def test_unknown_model_size_stops_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("TDA_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("TDA_RESULTS_DIR", str(tmp_path / "results"))
    with pytest.raises(nbrun.NotebookFailed, match="unknown model size 'huge'.*partly executed notebook"):
        nbrun.run_notebook("small_world", "quick", tmp_path / "out", {"sizes": ["huge"]})
    assert not (tmp_path / "out" / "small_world.ipynb").exists()  # no half-executed page
    assert (tmp_path / "out" / ".small_world.partial.ipynb").is_file()  # the one the message names


@pytest.mark.slow
def test_quick_book_executes_and_builds(quick_book):
    """Every notebook runs with the quick profile through papermill, then the book builds."""
    out, results = quick_book["executed"], quick_book["results"]
    for path in nbrun.NOTEBOOK_DIR.glob("*.ipynb"):
        assert (out / path.name).is_file(), path.name
    small = json.loads((results / "small_world.json").read_text())
    assert small["n_facts"] > 0 and set(small["final_pretrain_loss"]) == {"tiny", "small"}
    known = {(r["size"], r["facts"]): r["mean query loss"] for r in small["knowledge"]}
    assert known[("small", "known")] < known[("small", "unknown")]
    html = quick_book["html"]
    assert (html / "index.html").is_file()
    assert (html / "book" / "executed" / "small_world.html").is_file()


@pytest.mark.slow
def test_quick_book_tests_every_claim(quick_book):
    """Parts I, II and III between them test all thirteen claims, each with a verdict computed by its notebook."""
    from tda.claims import EXPECTED_CLAIMS
    from tda.results import VERDICTS

    rows = json.loads((quick_book["results"] / "claims.json").read_text())
    assert [r["id"] for r in rows] == list(EXPECTED_CLAIMS)
    for r in rows:
        assert r["verdict"] in VERDICTS, (r["id"], r["verdict"])  # "not tested" would mean no notebook ran it
        assert r["ours"].strip() and r["rule"].strip() and r["source"].startswith(("ftrace_", "dda_", "counterfactual_")), r
    # every experiment notebook wrote its stage timings
    for name in ("ftrace_methods", "ftrace_layers", "ftrace_checkpoints", "ftrace_saturation",
                 "dda_main", "dda_ablation", "dda_beta", "dda_sizes", "counterfactual_ftrace", "counterfactual_dda"):
        seconds = json.loads((quick_book["results"] / f"{name}.json").read_text())["seconds"]
        leaves = [x for v in seconds.values() for x in (v.values() if isinstance(v, dict) else [v])]
        assert leaves and all(x >= 0 for x in leaves), name


@pytest.mark.slow
def test_quick_book_pages_show_no_warnings_or_errors(quick_book):
    """A rendered page carries results: no traceback, and no warning text on stderr."""
    import nbformat

    for path in sorted(quick_book["executed"].glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                assert out.get("output_type") != "error", f"{path.name} cell {i}: {out.get('ename')}"
                if out.get("name") == "stderr":
                    assert "Warning" not in out["text"], f"{path.name} cell {i}: {out['text'][:300]}"


# ---- issue 15: inputs that used to slip through --------------------------------------------------------
def test_a_typo_in_common_is_an_error_naming_file_profile_key_and_the_close_match(tmp_path):
    """``common: {wrold: quick}`` used to vanish (common is filtered to each notebook's names), so
    every notebook silently ran the default world."""
    path = tmp_path / "params.yml"
    path.write_text(PREAMBLE + "profiles:\n  quick:\n    common: {wrold: quick}\n")
    with pytest.raises(ParamsError, match=r"params.yml.*profile 'quick'.*'wrold'.*did you mean 'world'"):
        nbrun.resolve_parameters("small_world", "quick", params_file=path)
    # a name some other notebook declares is fine in common (results_dir: only claims has it)
    path.write_text(PREAMBLE + "profiles:\n  quick:\n    common: {world: quick, results_dir: r}\n")
    assert nbrun.resolve_parameters("small_world", "quick", params_file=path) == {"world": "quick"}
    assert nbrun.resolve_parameters("claims", "quick", params_file=path) == {"results_dir": "r"}


def test_a_string_for_a_list_parameter_is_an_error_suggesting_the_list(capsys, tmp_path):
    """``-p sizes tiny`` used to end, inside the notebook, in ``unknown model size 't'``."""
    with pytest.raises(ParamsError, match=r"command line.*'sizes'.*list.*str 'tiny'.*-p sizes '\[tiny\]'"):
        nbrun.resolve_parameters("small_world", "quick", {"sizes": "tiny"})
    assert nbrun.main(["run", "small_world", "--profile", "quick", "-p", "sizes", "tiny",
                       "--out-dir", str(tmp_path)]) == 2
    assert "-p sizes '[tiny]'" in capsys.readouterr().err and not list(tmp_path.iterdir())
    # the same check on params.yml's values, and on the other kinds of default
    path = tmp_path / "params.yml"
    path.write_text(PREAMBLE + "profiles:\n  quick:\n    small_world: {sizes: tiny}\n")
    with pytest.raises(ParamsError, match=r"params.yml \(profile 'quick', notebook 'small_world'\).*'sizes'"):
        nbrun.resolve_parameters("small_world", "quick", params_file=path)
    for name, value in [("seeds", 3), ("world", 3), ("seed", "0"), ("seed", True), ("trex_overrides", [1]),
                        ("margin", "0.1")]:
        notebook = "ftrace_build" if name in ("seed", "trex_overrides") else "ftrace_methods"
        with pytest.raises(ParamsError, match=repr(name)):
            nbrun.resolve_parameters(notebook, "quick", {name: value})
    # a list's items must be of the kind of the default's items (betas: numbers, seeds: integers)
    with pytest.raises(ParamsError, match=r"'betas' of notebook 'dda_beta' item 1 takes a number, got str 'a'"):
        nbrun.resolve_parameters("dda_beta", "quick", {"betas": [0, "a"]})
    with pytest.raises(ParamsError, match=r"'seeds' .* item 0 takes an integer, got float 0.5"):
        nbrun.resolve_parameters("dda_main", "quick", {"seeds": [0.5]})
    assert nbrun.resolve_parameters("dda_beta", "quick", {"betas": [0, 0.5, 2]})["betas"] == [0, 0.5, 2]
    # what fits the default's kind passes: an int for a float, anything for a None default
    assert nbrun.resolve_parameters("ftrace_methods", "quick", {"margin": 0})["margin"] == 0
    assert nbrun.resolve_parameters("claims", "quick", {"results_dir": "x"}) == {"results_dir": "x"}


def test_a_failed_run_names_the_partial_notebook_and_the_cli_returns_1(tmp_path, monkeypatch, capsys):
    """After a failure the runner used to say nothing of where the partly executed notebook is."""
    import papermill

    def fail(source, output, **kwargs):
        Path(output).write_text("{}")  # papermill writes the notebook as it executes
        raise papermill.PapermillExecutionError(3, 1, "ValueError: bad", "ValueError", "bad", [])

    monkeypatch.setattr(papermill, "execute_notebook", fail)
    partial = tmp_path / ".small_world.partial.ipynb"
    with pytest.raises(nbrun.NotebookFailed, match=rf"small_world.*cell 3.*ValueError: bad.*{re.escape(str(partial))}"):
        nbrun.run_notebook("small_world", "quick", tmp_path)
    assert partial.is_file() and not (tmp_path / "small_world.ipynb").exists()
    assert nbrun.main(["run", "small_world", "--profile", "quick", "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "ValueError: bad" in err and str(partial) in err


def test_run_listed_runs_the_chapters_a_profile_names_in_book_order(tmp_path, monkeypatch):
    assert nbrun.listed_notebooks("real") == ["ftrace_methods", "ftrace_layers", "dda_main", "dda_ablation",
                                              "dda_beta", "dda_sizes"]
    assert nbrun.listed_notebooks("quick")[0] == "small_world" and "claims" not in nbrun.listed_notebooks("quick")
    with pytest.raises(ParamsError, match="unknown profile 'nope'.*known profiles: quick, default, real"):
        nbrun.listed_notebooks("nope")
    params = tmp_path / "params.yml"
    data = load_params()
    data["profiles"]["bare"] = {"common": {"world": "quick"}}
    params.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match="profile 'bare' .* names no notebook of its own; run 'all' instead"):
        nbrun.listed_notebooks("bare", params)
    ran = []
    monkeypatch.setattr(nbrun, "run_notebook", lambda name, *a, **k: ran.append(name) or tmp_path / f"{name}.ipynb")
    assert nbrun.main(["run", "listed", "--profile", "real", "--out-dir", str(tmp_path)]) == 0
    assert ran == nbrun.listed_notebooks("real")


def test_order_prints_the_execution_order(capsys):
    assert nbrun.main(["order"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == nbrun.notebook_order()
    assert printed[-1] == "claims" and printed.index("ftrace_methods") < printed.index("counterfactual_ftrace")
