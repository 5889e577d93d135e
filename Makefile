# The two commands of the README: `make book` and `make test`. Everything else is optional.
#   make book PROFILE=quick     the classroom profile (minutes); PROFILE=default is the book's own run
#   make test                   pytest (unit tests, a quick notebook run, the book build)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= default
EXECUTED := book/executed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
EXECUTED_NBS := $(patsubst notebooks/%.ipynb,$(EXECUTED)/%.ipynb,$(NOTEBOOKS))
TDA_SOURCES := $(shell find tda -name '*.py' 2>/dev/null)

.PHONY: book test install lock notebooks html bench lab zip clean-executed clean

# The venv is (re)installed when pyproject.toml or the lock changes; pip takes the local CPU wheel of
# torch. requirements.lock holds the exact versions (a constraints file: it pins every package the
# install needs, and installs nothing the project does not ask for, e.g. no CUDA packages beside a
# CPU build of torch). pyproject.toml keeps the compatible ranges for `pip install` elsewhere.
$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c requirements.lock -e '.[book,test]'
	@touch $@

install: $(VENV)/.installed

# Refresh the lock: the newest versions pyproject.toml allows, resolved by uv for Python 3.11 on every
# platform. Commit the result after `make test` passes with it. `make lock LOCK_FLAGS=` keeps the
# current pins and only adds or drops what pyproject.toml's dependencies changed.
LOCK_FLAGS ?= --upgrade
lock:
	@command -v uv >/dev/null || $(PYTHON) -m pip install --quiet uv
	uv pip compile pyproject.toml --extra book --extra test --python-version 3.11 --universal \
		$(LOCK_FLAGS) --custom-compile-command "make lock" -o requirements.lock

# A stamp that changes only when PROFILE changes, so switching profile re-executes every notebook.
$(EXECUTED)/.profile: FORCE
	@mkdir -p $(EXECUTED)
	@echo $(PROFILE) | cmp -s - $@ || echo $(PROFILE) > $@

$(EXECUTED)/%.ipynb: notebooks/%.ipynb notebooks/params.yml $(EXECUTED)/.profile $(TDA_SOURCES) | $(VENV)/.installed
	$(PY) -m tda.notebooks run $* --profile $(PROFILE) --out-dir $(EXECUTED)

# The claims chapter gathers every other notebook's results, so it runs after all of them.
$(EXECUTED)/claims.ipynb: $(filter-out $(EXECUTED)/claims.ipynb,$(EXECUTED_NBS))

# In the book's order (tda.notebooks order: _toc.yml's, claims last), so that each part builds its own
# runs and its printed stage timings are its own; pages already up to date are skipped.
notebooks: $(VENV)/.installed
	@for nb in $$($(PY) -m tda.notebooks order); do $(MAKE) --no-print-directory $(EXECUTED)/$$nb.ipynb || exit 1; done

html: notebooks
	$(PY) -m tda.notebooks build-book

book: html
	@echo "The book is in _build/html/index.html"

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m tda.bench

# A real user's first command on a CUDA machine (runs on the CPU too): install (with a CUDA torch where
# a GPU is present), then the smallest real case of both papers (python -m tda.smoke). No network
# needed: sample files and a tiny model are written under .smoke/. SMOKE_ARGS="--model gpt2" etc.
.PHONY: gpu-smoke
gpu-smoke:
	bash scripts/gpu_smoke.sh $(SMOKE_ARGS)

# JupyterLab with the project's environment as kernel: the venv's own Python is registered as the
# `python3` kernel inside .venv (the name the notebooks' metadata and papermill ask for).
lab: $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tda)"
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

zip: html
	$(PY) -c "import shutil; print(shutil.make_archive('_build/book-html', 'zip', '_build', 'html'))"

clean-executed:
	rm -rf $(EXECUTED) _build

clean: clean-executed
	rm -rf $(VENV)

FORCE:
