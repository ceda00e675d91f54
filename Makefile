# fundus_nb: every target creates the virtual environment and installs what it needs when missing.
# Python 3.11 to 3.13 (the first found); PYTHON=/path/to/python overrides.
# (A pyenv shim for a version that is not active exits 127: only a candidate that runs is taken.)
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do $$p -c '' 2>/dev/null && command -v $$p && break; done)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
ARGS   ?=

.PHONY: run test test-fast lint test-browser lab bench clean-runs help

help:
	@echo "make run    - execute the notebook series (default preset) into runs/<run-id>/ (ARGS='--preset quick ...')"
	@echo "make test   - lint, unit tests, every notebook in the quick preset, nbval reproducibility checks"
	@echo "make test-fast - lint and everything but the notebook series (a few minutes)"
	@echo "make lint   - ruff and a spell check (codespell) over the package, the tests, the notebooks and the docs"
	@echo "make lab    - open the notebooks in JupyterLab (LAB_ARGS='--no-browser --port 8899')"
	@echo "make test-browser - the JupyterLab + headless Chromium test of the labelling widget"
	@echo "make bench  - speed benchmarks (tests/benchmarks)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; assert (3, 11) <= v <= (3, 13), "fundus_nb needs Python 3.11 to 3.13, found " + sys.version.split()[0] + "; run make with PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)

# pip picks the torch file (where a CPU build lies on this disk it takes that one, which uv would not
# look for) and uv installs it with everything else: the same versions pip resolves, in half the
# time (uv unpacks and byte-compiles on every core). Where uv fails, pip installs everything.
TORCH := $(shell sed -n 's/^ *"\(torch==[^"]*\)".*/\1/p' pyproject.toml)
UV_INSTALL := $(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode
# JupyterLab (the lab extra; the dev extra has it too): installed only when missing, so that `make lab`
# never reinstalls the package under a notebook that is importing it.
LAB_INSTALL := $(BIN)/python -c 'import jupyterlab' 2>/dev/null \
	|| $(UV_INSTALL) -e '.[lab]' || $(BIN)/python -m pip install --quiet -e '.[lab]'

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv
	($(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/wheels "$(TORCH)" \
	  && $(UV_INSTALL) --find-links $(VENV)/wheels -e '.[dev]') || $(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -rf $(VENV)/wheels
	@touch $@

run: $(STAMP)
	$(BIN)/python -m fundus_nb run $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check fundus_nb tests notebooks
	$(BIN)/codespell fundus_nb notebooks tests docs README.md

# TEST_JOBS pytest-xdist workers, each given whole test files, longest first (tests/conftest.py), one
# thread per process; 0: one process. Three workers on two cores: the browser test alone left about
# a third of the CPU idle (it waits for pages and kernels); a third worker fills that time.
TEST_JOBS ?= 3
XDIST := $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder)
THREADS := $(if $(filter 0,$(TEST_JOBS)),,OMP_NUM_THREADS=1)

test: lint
	TQDM_DISABLE=1 $(THREADS) FUNDUS_NB_CELL_TIMEOUT=900 $(BIN)/python -m pytest $(XDIST) --durations=15 $(ARGS)

# Everything but the tests that execute the notebook series (marked "notebooks").
test-fast: lint
	TQDM_DISABLE=1 $(THREADS) $(BIN)/python -m pytest $(XDIST) -m "not notebooks" $(ARGS)

# JupyterLab in headless Chromium (Debian: apt-get install chromium chromium-driver): clicks notebook
# 07's labelling widget and saves screenshots under runs/browser-test/. Skips when no browser is found.
test-browser: $(STAMP)
	$(LAB_INSTALL)
	TQDM_DISABLE=1 $(BIN)/python -m pytest -v tests/test_browser.py $(ARGS)

# Root (a container, CI) must pass --allow-root or Jupyter refuses to start; JupyterLab prints the
# URL (with its token) to open. LAB_ARGS adds options, e.g. LAB_ARGS='--no-browser --port 8899'.
LAB_ARGS ?=
LAB_DIR  ?= notebooks
LAB_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

lab: $(STAMP)
	$(LAB_INSTALL)
	@echo "Starting JupyterLab on notebooks/: open the http://127.0.0.1:... URL it prints below."
	$(BIN)/python -m jupyter lab $(LAB_DIR) $(LAB_ROOT) $(LAB_ARGS)

bench: $(STAMP)
	@for f in tests/benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-runs:
	rm -rf runs/
