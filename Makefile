# fundus_nb: every target creates the virtual environment and installs what it needs when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
ARGS   ?=

.PHONY: run test lab bench clean-runs help

help:
	@echo "make run    - execute the notebook series (default preset) into runs/<run-id>/ (ARGS='--preset quick ...')"
	@echo "make test   - unit tests, every notebook in the quick preset, nbval reproducibility checks"
	@echo "make lab    - open the notebooks in JupyterLab"
	@echo "make bench  - speed benchmarks (tests/benchmarks)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "fundus_nb needs Python 3.11, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(STAMP)
	$(BIN)/python -m fundus_nb run $(ARGS)

test: $(STAMP)
	TQDM_DISABLE=1 $(BIN)/python -m pytest $(ARGS)

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[lab]'
	$(BIN)/python -m jupyter lab notebooks/

bench: $(STAMP)
	@for f in tests/benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-runs:
	rm -rf runs/
