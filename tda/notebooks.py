"""Execute the book's notebooks with a profile from ``notebooks/params.yml``, and build the book.

    python -m tda.notebooks run small_world --profile quick --out-dir book/executed
    python -m tda.notebooks run small_world --profile quick -p seed 3
    python -m tda.notebooks build-book

``params.yml``'s ``profiles`` (``tda.params``) map a profile name to ``common`` (settings handed
to every notebook that declares them, such as the world) and to per-notebook settings. Every name
is checked against the notebook's ``parameters`` cell before anything runs, and a ``world`` against
the worlds params.yml defines, so a typo stops with a message instead of silently running with the
default. Every name in ``common`` must be a parameter of some notebook (a typo there is an error,
not a setting no notebook reads), and each value must be of the kind of the notebook's default (a
list where the default is a list: ``-p sizes '[tiny]'``, not ``-p sizes tiny``). A notebook is
executed into a temporary file and renamed, so an interrupted run never leaves a half-executed
page; when a cell fails, the error names that file, which holds the traceback.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import yaml

from .params import PARAMS_FILE, ParamsError, check_world, load_params
from .store import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
EXECUTED_DIR = REPO_ROOT / "book" / "executed"


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; the message names the cell, the error and the partly
    executed notebook (which shows the traceback)."""


def notebook_path(name: str) -> Path:
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
        raise ParamsError(f"no notebook named {name!r} in {NOTEBOOK_DIR}; known: {known}")
    return path


def notebook_parameters(path: str | Path) -> dict:
    """Names and default values of a notebook's cell tagged ``parameters``."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ParamsError(f"{path} has no cell tagged 'parameters'")
    params = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    try:
                        params[t.id] = ast.literal_eval(node.value)
                    except ValueError:
                        params[t.id] = None
    return params


def _item_default(default: list | tuple):
    """A stand-in for the items of a default list: its items' common kind (ints and floats mixed:
    a float, so any number), or None (no check) when they differ or the list is empty."""
    kinds = {type(x) for x in default}
    if kinds and kinds <= {int, float}:
        return 0.0 if float in kinds else 0
    return default[0] if len(kinds) == 1 else None


def _kind_problem(value, default) -> str | None:
    """Why ``value`` cannot stand where a notebook's parameter defaults to ``default``, or None.

    The kinds: bool, int, number (int or float), str, list, mapping; the items of a list must be
    of the kind of the default's items. A default of None (or of any other type) takes any value."""
    if default is None:
        return None
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, kind = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, dict):
        ok, kind = isinstance(value, dict), "a mapping"
    else:
        return None
    if ok and isinstance(default, (list, tuple)):
        item = _item_default(default)
        for i, x in enumerate(value):
            problem = _kind_problem(x, item)
            if problem:
                return f"item {i} {problem.split(' (its default is')[0]}, got {type(x).__name__} {x!r}"
    if ok:
        return None
    problem = f"takes {kind} (its default is {default!r}), got {type(value).__name__} {value!r}"
    if isinstance(default, (list, tuple)) and not isinstance(value, dict):
        listed = yaml.safe_dump([value], default_flow_style=True).strip()
        problem += f"; for a list of one write `-p NAME '{listed}'` on the command line, `NAME: {listed}` in params.yml"
    return problem


def _check_values(values: dict, declared: dict, notebook: str, source: str) -> None:
    """Every name in ``values`` a parameter of the notebook, every value of its default's kind."""
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ParamsError(f"{source}: unknown parameter(s) {unknown} for notebook {notebook!r}; "
                          f"its parameters are: {', '.join(declared)}")
    for key, value in values.items():
        problem = _kind_problem(value, declared[key])
        if problem:
            raise ParamsError(f"{source}: parameter {key!r} of notebook {notebook!r} "
                              + problem.replace("NAME", key))


def _check_common(common: dict, profile: str, params_file) -> None:
    """Every name in a profile's ``common`` must be a parameter of at least one notebook."""
    known = {n for path in NOTEBOOK_DIR.glob("*.ipynb") for n in notebook_parameters(path)}
    for key in common:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ParamsError(f"{params_file}: profile {profile!r}, section 'common': {key!r} is not a parameter of "
                              f"any notebook{hint} (parameters: {', '.join(sorted(known))})")


def resolve_parameters(name: str, profile: str, overrides: dict | None = None,
                       params_file: str | Path = PARAMS_FILE) -> dict:
    """The parameters a notebook runs with: profile's common ∪ profile's notebook section ∪ overrides.

    A name in ``common`` must be a parameter of some notebook; a name in the notebook's section or
    the overrides, one of this notebook's; each value of the kind of the notebook's default. A
    ``world`` among them must be one that params.yml defines.
    """
    data = load_params(params_file)["profiles"]
    if profile not in data:
        raise ParamsError(f"{params_file}: no profile {profile!r}; profiles: {', '.join(data)}")
    declared = notebook_parameters(notebook_path(name))
    sections = data[profile]
    for section in sections:
        if section != "common" and not (NOTEBOOK_DIR / f"{section}.ipynb").is_file():
            raise ParamsError(f"{params_file}: profile {profile!r} names notebook {section!r}, "
                              "which does not exist")
    _check_common(sections.get("common") or {}, profile, params_file)
    common = {k: v for k, v in (sections.get("common") or {}).items() if k in declared}
    own = dict(sections.get(name) or {})
    for source, values in ((f"{params_file} (profile {profile!r}, common)", common),
                           (f"{params_file} (profile {profile!r}, notebook {name!r})", own),
                           ("the command line", overrides or {})):
        _check_values(values, declared, name, source)
    resolved = {**common, **own, **(overrides or {})}
    if "world" in resolved:
        check_world(resolved["world"], params_file)
    return resolved


def notebook_order(toc_file: str | Path = REPO_ROOT / "_toc.yml", notebook_dir: str | Path = NOTEBOOK_DIR) -> list[str]:
    """Names of the notebooks in the order to execute them.

    First the notebooks whose executed pages ``book/executed/NAME`` _toc.yml lists (as ``file`` or
    ``glob`` entries), in the toc's order; then any notebook the toc does not list, alphabetically;
    ``claims`` always last, because it gathers the results every other notebook writes.
    """
    names = sorted(p.stem for p in Path(notebook_dir).glob("*.ipynb"))

    def entries(node):
        if isinstance(node, dict):
            for key in ("root", "file", "glob"):
                if isinstance(node.get(key), str):
                    yield key, node[key]
            for value in node.values():
                if isinstance(value, (list, dict)):
                    yield from entries(value)
        elif isinstance(node, list):
            for value in node:
                yield from entries(value)

    order: list[str] = []
    toc = yaml.safe_load(Path(toc_file).read_text()) if Path(toc_file).is_file() else {}
    for kind, entry in entries(toc):
        entry = entry.removesuffix(".ipynb")
        if not entry.startswith("book/executed/"):
            continue
        pattern = entry.removeprefix("book/executed/")
        matches = fnmatch.filter(names, pattern) if kind == "glob" else [pattern] if pattern in names else []
        order += [m for m in matches if m not in order]
    order += [n for n in names if n not in order]
    return [n for n in order if n != "claims"] + (["claims"] if "claims" in names else [])


def listed_notebooks(profile: str, params_file: str | Path = PARAMS_FILE) -> list[str]:
    """The notebooks a profile has a section of its own for, in the book's order: what
    ``run listed --profile P`` executes (the ``real`` profile names only the chapters that can read
    a real source, so one command runs them all)."""
    profiles = load_params(params_file)["profiles"]
    if profile not in profiles:
        raise ParamsError(f"unknown profile {profile!r} in {params_file}; known profiles: {', '.join(profiles)}")
    named = [k for k in profiles[profile] if k != "common"]
    if not named:
        raise ParamsError(f"profile {profile!r} in {params_file} names no notebook of its own; run 'all' instead")
    return [n for n in notebook_order() if n in named]


def run_notebook(name: str, profile: str = "default", out_dir: str | Path = EXECUTED_DIR,
                 overrides: dict | None = None, params_file: str | Path = PARAMS_FILE) -> Path:
    """Execute one notebook with papermill into ``out_dir/<name>.ipynb`` (atomically).

    A failing cell raises :class:`NotebookFailed`, naming the cell, the error and
    ``out_dir/.<name>.partial.ipynb``, the partly executed notebook with the traceback."""
    import papermill

    parameters = resolve_parameters(name, profile, overrides, params_file)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{name}.ipynb"
    tmp = out_dir / f".{name}.partial.ipynb"
    env_before = {k: os.environ.get(k) for k in ("TDA_RESULTS_DIR", "TDA_PROGRESS")}
    os.environ.setdefault("TDA_RESULTS_DIR", str(out_dir / "results"))
    os.environ.setdefault("TDA_PROGRESS", "0")  # rendered pages carry results, not bar redraws
    try:
        papermill.execute_notebook(str(notebook_path(name)), str(tmp), parameters=parameters,
                                   cwd=str(REPO_ROOT), kernel_name="python3", progress_bar=False,
                                   log_output=False)
    except papermill.PapermillExecutionError as err:
        raise NotebookFailed(f"notebook {name!r} failed in cell {err.cell_index} (In [{err.exec_count}]): "
                             f"{err.ename}: {err.evalue}. The partly executed notebook, with the traceback, "
                             f"is {tmp}") from err
    except Exception as err:  # the kernel died, say: the partial notebook shows how far it got
        where = f"; the partly executed notebook is {tmp}" if tmp.is_file() else ""
        raise NotebookFailed(f"notebook {name!r} failed: {type(err).__name__}: {err}{where}") from err
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    tmp.rename(final)
    return final


def build_book(root: str | Path = REPO_ROOT) -> None:
    """Render the executed notebooks and chapters to ``_build/html``: full build, warnings as errors."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(root), "--all", "-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True)


def _parse_value(text: str):
    """Command-line values as YAML scalars (3 -> int, 0.5 -> float, [a, b] -> list, quick -> str)."""
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tda.notebooks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute one notebook, 'all', or 'listed' (those the profile names) with a profile")
    run.add_argument("name")
    run.add_argument("--profile", default="default")
    run.add_argument("--out-dir", default=str(EXECUTED_DIR))
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    sub.add_parser("build-book", help="render the book to _build/html")
    sub.add_parser("list", help="list notebooks and their parameters")
    sub.add_parser("order", help="print the notebooks' names in the order to execute them (make notebooks uses it)")
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            overrides = {k: _parse_value(v) for k, v in args.parameter}
            names = (notebook_order() if args.name == "all" else listed_notebooks(args.profile)
                     if args.name == "listed" else [args.name])
            for name in names:
                print(f"executing {name} (profile {args.profile})", flush=True)
                print(f"  -> {run_notebook(name, args.profile, args.out_dir, overrides)}", flush=True)
        elif args.command == "order":
            print("\n".join(notebook_order()))
        elif args.command == "build-book":
            build_book()
        else:
            for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
                print(path.stem, notebook_parameters(path))
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
